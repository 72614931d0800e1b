import CLBKitShim
import Synchronization

/// The balancer: an ``HTTPHandler`` that forwards each request to a backend chosen by a
/// ``BackendCluster``, fails over where that is safe (``RetryPolicy``), throttles clients
/// (``ThrottleTable``) and answers the reserved `/_lb/*` endpoints.
///
/// ```swift
/// var config = LoadBalancerConfiguration()
/// config.backends = [try BackendURL(parsing: "http://127.0.0.1:5001")]
/// let group = try EventLoopGroup()
/// let balancer = try LoadBalancer(configuration: config, group: group)
/// let server = HTTPServer(configuration: .init(host: "127.0.0.1", port: 8000), group: group, handler: balancer)
/// try server.start()
/// let checks = Task { await balancer.runHealthChecks() }   // active checks until cancelled
/// ```
public final class LoadBalancer: HTTPHandler {
    /// The configuration in effect.
    public let configuration: LoadBalancerConfiguration
    /// Per-client throttling, when `rateLimit` is set.
    public let throttle: ThrottleTable?
    private let upstreamSet: Mutex<UpstreamSet>
    private let clock: any MonotonicClock
    private let clusterConfiguration: ClusterConfiguration
    let client: HTTPClient
    let identity: ClientIdentityResolver
    let retryPolicy: RetryPolicy
    let log: @Sendable (String) -> Void
    let accessLogSink: @Sendable (String) -> Void
    let counters = ProxyCounters()
    let startedAt = lbk_monotonic_ns()
    private let probeCursor = Atomic<Int>(0)
    private let group: EventLoopGroup

    /// Resolves the backends and builds the policy objects. `healthPaths` optionally overrides the
    /// health-check path per backend (parallel to `configuration.backends`; nil = the default).
    /// `log` receives `[HEALTH]`/`[CONFIG]` lines; `accessLog` receives one line per request when
    /// `configuration.accessLog` is on (default: a buffered stdout writer off the hot path).
    public init(configuration: LoadBalancerConfiguration, group: EventLoopGroup,
                healthPaths: [String?] = [],
                clock: any MonotonicClock = SystemClock(),
                log: @escaping @Sendable (String) -> Void = { StandardOutput.line($0) },
                accessLog: @escaping @Sendable (String) -> Void = { AccessLogWriter.shared.write($0) }) throws(LoadBalancerError) {
        guard !configuration.backends.isEmpty else { throw LoadBalancerError("no backends configured") }
        self.configuration = configuration
        self.group = group
        self.log = log
        self.accessLogSink = accessLog
        self.clock = clock
        var clientConfig = HTTPClientConfiguration()
        clientConfig.connectTimeout = configuration.connectTimeout
        client = HTTPClient(configuration: clientConfig)

        var clusterConfig = ClusterConfiguration()
        clusterConfig.strategy = configuration.strategy
        clusterConfig.maxFails = configuration.maxFails
        clusterConfig.activeChecks = configuration.healthInterval > .zero
        clusterConfig.maxDelay = configuration.maxDelay
        if configuration.healthInterval > .zero { clusterConfig.activeCheckInterval = configuration.healthInterval }
        clusterConfig.probeTimeout = configuration.effectiveHealthTimeout
        clusterConfiguration = clusterConfig
        upstreamSet = Mutex(try UpstreamSet.make(
            backends: configuration.backends, weights: configuration.weights, healthPaths: healthPaths,
            defaultHealthPath: configuration.healthPath, previous: nil, group: group,
            clusterConfiguration: clusterConfig, clock: clock, log: log))

        if let rate = configuration.rateLimit {
            let burst = configuration.burst ?? max(1, Int(rate.rounded(.up)))
            let penaltyOn = configuration.penaltyThreshold > 0
            let throttleConfig = ThrottleConfiguration(
                rate: rate, burst: burst, maxKeys: configuration.throttleMaxKeys,
                penaltyThreshold: max(1, configuration.penaltyThreshold), penaltyWindow: configuration.penaltyWindow,
                penaltyDuration: penaltyOn ? configuration.penaltyDuration : .zero, penaltyFactor: configuration.penaltyFactor)
            throttle = ThrottleTable(configuration: throttleConfig, clock: clock, log: log)
        } else {
            throttle = nil
        }
        identity = ClientIdentityResolver(trustedProxies: configuration.trustedProxies)
        retryPolicy = RetryPolicy(retryNonIdempotent: configuration.retryNonIdempotent)
    }

    /// The backends in effect (replaced as a whole by ``reload(backends:weights:healthPaths:)``).
    var upstreams: UpstreamSet { upstreamSet.withLock { $0 } }

    /// Health, latency and selection state of the backends currently in effect.
    public var cluster: BackendCluster { upstreams.cluster }

    /// The upstream endpoints currently in effect (parallel to the cluster's backends).
    var endpoints: [HTTPEndpoint] { upstreams.endpoints }

    // MARK: Handling

    /// Answers `/_lb/*` itself; throttles; forwards everything else.
    public func handle(_ request: HTTPRequest, context: RequestContext) async -> HTTPResponse {
        let start = lbk_monotonic_ns()
        if request.head.target.hasPrefix("/_lb/") {
            return reservedEndpoint(request, context: context)
        }
        if let throttle {
            let key = clientKey(request, context: context)
            let decision = throttle.check(key)
            if !decision.isAllowed {
                counters.throttled.add(1, ordering: .relaxed)
                var headers = HTTPHeaders()
                for (name, value) in decision.responseHeaders() { headers.add(name: name, value: value) }
                let response = HTTPResponse.jsonError(status: 429, message: "too many requests from \(key)", headers: headers)
                record(response, request: request, context: context, backend: nil, attempts: 0, start: start)
                return response
            }
        }
        let (response, backend, attempts) = await forward(request, context: context)
        record(response, request: request, context: context, backend: backend, attempts: attempts, start: start)
        return response
    }

    private func clientKey(_ request: HTTPRequest, context: RequestContext) -> ClientAddress {
        let peer = context.peer?.clientAddress ?? ClientAddress(ipv4: 0)
        if identity.trustedProxies.isEmpty { return peer }
        return identity.resolve(peer: peer, forwardedFor: request.headers["X-Forwarded-For"])
    }

    /// Tries up to `maxAttempts` distinct backends within the request deadline.
    func forward(_ request: HTTPRequest, context: RequestContext) async -> (HTTPResponse, String?, Int) {
        // One snapshot of the backends for the whole request: a reload mid-request does not mix sets.
        let up = upstreams
        let cluster = up.cluster
        let endpoints = up.endpoints
        cluster.requestStarted()
        let upstream = HTTPClientRequest(head: ForwardingHeaders.upstreamHead(for: request.head, peer: context.peer),
                                         body: request.body)
        let requestDeadline = lbk_monotonic_ns() &+ UInt64(max(0, configuration.effectiveRequestTimeout.nanosecondsClamped))
        let attemptNanos = UInt64(max(0, configuration.attemptTimeout.nanosecondsClamped))
        let replayable = retryPolicy.mayRetryAfterSending(method: request.method, headers: request.headers)
        var tried = BackendIndexSet()
        var attempts = 0
        var lastFailure: (status: Int, message: String)? = nil
        var lastResponse: (HTTPResponse, String)? = nil
        var pendingRetry: RetryReason? = nil

        while attempts < configuration.maxAttempts {
            let index: Int
            switch cluster.choose(excluding: tried) {
            case .backend(let i):
                index = i
            case .noneEligible(let retryAfter):
                if attempts == 0 {
                    counters.noBackend.add(1, ordering: .relaxed)
                    let seconds = max(1, Int((retryAfter.milliseconds / 1000).rounded(.up)))
                    return (.jsonError(status: 503, message: "no healthy backend available",
                                       headers: ["Retry-After": String(seconds)]), nil, 0)
                }
                return finish(lastResponse, lastFailure, attempts)
            }
            if let reason = pendingRetry {
                if reason == .connect {
                    cluster.recordUnbudgetedRetry(reason: reason)  // never sent: always moves on
                } else if !cluster.tryRetry(reason: reason) {
                    counters.budgetExhausted.add(1, ordering: .relaxed)
                    return finish(lastResponse, lastFailure, attempts)
                }
            }
            let now = lbk_monotonic_ns()
            if now >= requestDeadline {
                return finish(lastResponse, lastFailure ?? (504, "request deadline exceeded"), attempts)
            }
            tried.insert(index)
            attempts += 1
            cluster.attemptStarted(index)
            let deadline = min(requestDeadline, now &+ attemptNanos)
            let hedgeAt = replayable && attempts < configuration.maxAttempts ? hedgePoint(for: index, from: now) : .max
            let attempt: AttemptRecord
            do {
                switch try await client.send(upstream, to: endpoints[index], on: context.eventLoop, deadline: deadline, answerBy: hedgeAt) {
                case .complete(let response):
                    attempt = AttemptRecord(index: index, start: now, result: .success(response))
                case .pending(let pending):
                    attempt = await hedge(upstream, in: up, pending: pending, firstIndex: index, firstStart: now, firstDeadline: deadline,
                                          requestDeadline: requestDeadline, tried: &tried, attempts: &attempts, loop: context.eventLoop)
                }
            } catch {
                attempt = AttemptRecord(index: index, start: now, result: .failure(error))
            }
            record(attempt, in: cluster)
            let used = attempt.index
            switch attempt.result {
            case .success(var response):
                let proxied = clientResponse(&response, backend: up.names[used])
                if response.head.status >= 500 && replayable && attempts < configuration.maxAttempts {
                    lastResponse = (proxied, up.names[used])
                    pendingRetry = .status5xx
                    continue
                }
                return (proxied, up.names[used], attempts)
            case .failure(let error):
                lastFailure = failureDescription(error, backend: up.names[used])
                lastResponse = nil
                if !error.requestSent {
                    pendingRetry = .connect
                    continue
                }
                if replayable {
                    pendingRetry = error.kind == .timedOut ? .timeout : .reset
                    continue
                }
                return finish(nil, lastFailure, attempts)
            }
        }
        return finish(lastResponse, lastFailure, attempts)
    }

    /// One attempt: the backend, when it started (monotonic ns) and how it ended.
    struct AttemptRecord: Sendable {
        var index: Int
        var start: UInt64
        var result: Result<HTTPClientResponse, HTTPClientError>

        /// Runs `exchange` and records how it ended.
        static func run(index: Int, start: UInt64,
                        _ exchange: () async throws(HTTPClientError) -> HTTPClientResponse) async -> AttemptRecord {
            do throws(HTTPClientError) {
                return AttemptRecord(index: index, start: start, result: .success(try await exchange()))
            } catch {
                return AttemptRecord(index: index, start: start, result: .failure(error))
            }
        }

        /// A final answer worth returning: a response below 500.
        var isGood: Bool {
            if case .success(let r) = result { return r.head.status < 500 }
            return false
        }
    }

    /// Reports an attempt's outcome and latency to the cluster.
    func record(_ attempt: AttemptRecord, in cluster: BackendCluster) {
        let elapsed = Duration.nanoseconds(Int64(clamping: lbk_monotonic_ns() &- attempt.start))
        let outcome: AttemptOutcome
        switch attempt.result {
        case .success(let response):
            outcome = response.head.status >= 500 ? .failure(.status5xx) : .success
        case .failure(let error):
            switch error.kind {
            case .connectRefused, .connectTimeout, .connectFailed: outcome = .failure(.connect)
            case .timedOut: outcome = .failure(.timeout)
            // The balancer never aborts its own attempts; an aborted exchange lost its connection like a reset.
            case .connectionReset, .malformedResponse, .responseTooLarge, .aborted: outcome = .failure(.reset)
            }
        }
        cluster.attemptFinished(attempt.index, outcome: outcome, latency: elapsed)
    }

    private func failureDescription(_ error: HTTPClientError, backend name: String) -> (status: Int, message: String) {
        if error.kind == .timedOut {
            return (504, "backend \(name): no response within \(Int(configuration.attemptTimeout.milliseconds)) ms")
        }
        return (502, "backend \(name): \(error)")
    }

    private func finish(_ response: (HTTPResponse, String)?, _ failure: (status: Int, message: String)?, _ attempts: Int) -> (HTTPResponse, String?, Int) {
        if let (r, i) = response { return (r, i, attempts) }
        let f = failure ?? (502, "no backend could be reached")
        return (.jsonError(status: f.status, message: f.message + (attempts > 1 ? " (after \(attempts) attempts)" : "")), nil, attempts)
    }

    private func clientResponse(_ response: inout HTTPClientResponse, backend name: String) -> HTTPResponse {
        var head = response.head
        ForwardingHeaders.stripHopByHop(&head.headers)
        head.headers.add(name: "X-Backend", value: name)
        return HTTPResponse(head: head, body: response.body)
    }

    private func record(_ response: HTTPResponse, request: HTTPRequest, context: RequestContext, backend: String?, attempts: Int, start: UInt64) {
        counters.count(status: response.status)
        guard configuration.accessLog else { return }
        let ms = Double(lbk_monotonic_ns() &- start) / 1_000_000
        let client = context.peer?.ipAddress ?? "-"
        let upstream = backend ?? "-"
        let line = "\(AccessLogClock.timestamp()) \(client) \"\(request.method) \(request.target)\" \(response.status) backend=\(upstream) attempts=\(attempts) duration_ms=\(String(format3: ms))"
        accessLogSink(line)
    }

    // MARK: Reload

    /// Replaces the backend set without dropping in-flight requests. Backends that stay keep their
    /// health, latency, counters, drain flag and pooled connections; new ones start healthy;
    /// removed ones drain (requests already using them finish; their idle connections are closed).
    /// Returns the `[CONFIG]` summary line it also logs.
    ///
    /// ```swift
    /// try balancer.reload(backends: [try BackendURL(parsing: "http://127.0.0.1:5004")])
    /// ```
    @discardableResult
    public func reload(backends: [BackendURL], weights: [Int] = [], healthPaths: [String?] = []) throws(LoadBalancerError) -> String {
        let old = upstreams
        let new = try UpstreamSet.make(
            backends: backends, weights: weights, healthPaths: healthPaths, defaultHealthPath: configuration.healthPath,
            previous: old, group: group, clusterConfiguration: clusterConfiguration, clock: clock, log: log)
        upstreamSet.withLock { $0 = new }
        let added = new.urls.filter { !old.urls.contains($0) }
        let removedEndpoints = old.urls.enumerated().filter { !new.urls.contains($0.element) }.map { old.endpoints[$0.offset] }
        for endpoint in removedEndpoints { endpoint.closeIdleConnections() }
        if !removedEndpoints.isEmpty {
            // Requests that were in flight return their connections to the removed pools later.
            let grace = configuration.effectiveRequestTimeout + .seconds(1)
            Task {
                try? await Task.sleep(for: grace)
                for endpoint in removedEndpoints { endpoint.closeIdleConnections() }
            }
        }
        let removed = old.urls.filter { !new.urls.contains($0) }
        var parts = ["\(new.urls.count) backends"]
        if !added.isEmpty { parts.append("added " + added.map(\.description).joined(separator: ", ")) }
        if !removed.isEmpty { parts.append("removed (draining) " + removed.map(\.description).joined(separator: ", ")) }
        let line = "[CONFIG] reloaded: " + parts.joined(separator: "; ")
        log(line)
        return line
    }

    // MARK: Active health checks

    /// Runs the balancer's background work (active health checks) until the task is cancelled:
    /// the structured entry point for embedders, e.g. in a task group or a service lifecycle.
    ///
    /// ```swift
    /// let background = Task { await balancer.run() }
    /// // ... at shutdown:
    /// background.cancel()
    /// ```
    public func run() async {
        await runHealthChecks()
    }

    /// Probes every backend with `GET healthPath` every `healthInterval` until the task is cancelled.
    /// Probes of one round run concurrently (one per backend); a round waits for the previous one,
    /// so a slow backend never accumulates probes.
    public func runHealthChecks() async {
        let interval = configuration.healthInterval
        guard interval > .zero else { return }
        while !Task.isCancelled {
            let roundStart = lbk_monotonic_ns()
            let up = upstreams
            await withTaskGroup(of: Void.self) { tasks in
                for index in up.endpoints.indices {
                    let loop = group.loops[probeCursor.add(1, ordering: .relaxed).oldValue % group.loops.count]
                    let timeout = up.cluster.probeTimeout(for: index)
                    tasks.addTask(executorPreference: loop) {
                        await self.probe(index, in: up, loop: loop, timeout: timeout)
                    }
                }
            }
            let spent = Duration.nanoseconds(Int64(clamping: lbk_monotonic_ns() &- roundStart))
            let wait = interval - spent
            if wait > .zero {
                do { try await Task.sleep(for: wait) } catch { return }
            }
        }
    }

    /// One active check of backend `index`.
    func probe(_ index: Int, in up: UpstreamSet, loop: EventLoop, timeout: Duration) async {
        var head = HTTPRequestHead(method: "GET", target: up.healthPaths[index])
        head.headers.add(name: "Host", value: up.endpoints[index].authority)
        head.headers.add(name: "User-Agent", value: "lbserve-health-check")
        let start = lbk_monotonic_ns()
        var ok = false
        do {
            let response = try await client.execute(HTTPClientRequest(head: head), to: up.endpoints[index], on: loop, timeout: timeout)
            ok = (200..<300).contains(response.head.status)
        } catch {
            ok = false
        }
        let latency = Duration.nanoseconds(Int64(clamping: lbk_monotonic_ns() &- start))
        up.cluster.probeFinished(index, success: ok, latency: latency)
    }
}

/// A balancer that could not be built.
public struct LoadBalancerError: Error, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension SocketAddress {
    /// The address as a throttling key.
    public var clientAddress: ClientAddress? {
        switch storage {
        case .v4(let a): return ClientAddress(ipv4: UInt32(bigEndian: a.sin_addr.s_addr))
        case .v6(var a): return withUnsafeBytes(of: &a.sin6_addr) { ClientAddress(bytes: $0) }
        }
    }
}
