import Dispatch
import Synchronization

/// The balancer: forwards each request to a backend chosen by a ``BackendCluster``, fails over
/// where that is safe (``ReplayPolicy``), hedges slow replayable requests, and keeps per-backend
/// health and latency.
///
/// It is the terminal responder of a middleware chain: ``responder(admin:middlewares:)`` puts
/// the per-client throttle (when `rateLimit` is set), the `/_lb/*` admin endpoints (optional)
/// and your own middleware in front of it. Call it from any executor (a NIO event loop, the
/// global pool, a custom `TaskExecutor`); it owns its event loops and stops them when ``run()``
/// returns.
///
/// ```swift
/// func serve() async throws {
///     var config = LoadBalancerConfiguration()
///     config.backends = [try BackendURL(parsing: "http://127.0.0.1:5001"),
///                        try BackendURL(parsing: "http://127.0.0.1:5002")]
///     config.rateLimit = 100
///     let balancer = try LoadBalancer(configuration: config)
///     let handler = balancer.responder()
///     async let background: Void = balancer.run()           // health checks until shutdown
///     let response = await handler.handle(
///         LBRequest(head: RequestHead(method: "GET", target: "/api/items")),
///         context: LBRequestContext(client: ClientAddress("203.0.113.9")))
///     print(response.status)
///     balancer.shutdown()
///     try await background
/// }
/// ```
public final class LoadBalancer: HTTPHandler, InlineHTTPHandler, Sendable {
    /// The configuration in effect.
    public let configuration: LoadBalancerConfiguration
    /// The per-client throttle, when `rateLimit` is set (also usable on its own).
    public let throttleMiddleware: ThrottleMiddleware?
    /// Per-client throttling state, when `rateLimit` is set.
    public var throttle: ThrottleTable? { throttleMiddleware?.table }

    let clock: any MonotonicClock
    let group: LBEventLoopGroup
    /// `configuration.effectiveRequestTimeout`, computed once: its capped 128-bit `Duration`
    /// product costs about 500 instructions, on every request otherwise.
    let requestTimeout: Duration

    /// The event loops that carry this balancer's upstream connections (its own, or the group
    /// it was given). Also a `TaskExecutor`: a server embedding the balancer can run its request
    /// handling there, so that each request and its upstream exchange share a thread (see
    /// ``LBEventLoopGroup/enqueue(_:)``).
    ///
    /// ```swift
    /// try await withTaskExecutorPreference(balancer.eventLoopGroup) {
    ///     try await app.runService()
    /// }
    /// ```
    public var eventLoopGroup: LBEventLoopGroup { group }
    private let ownsGroup: Bool
    let log: LogSink
    /// The embedder's sink, boxed (see ``MetricsSinkBox``).
    let metrics: MetricsSinkBox?
    let accessLog: (@Sendable (AccessLogRecord) -> Void)?
    let client: UpstreamClient
    let identity: ClientIdentityResolver
    let replayPolicy: ReplayPolicy
    let counters: ProxyCounters
    let startedAt: MonotonicInstant
    let clusterConfiguration: ClusterConfiguration
    let upstreamSet: PublishedUpstreamSet
    /// The declared backends and what their names resolve to. Its lock also serialises every
    /// change of the backend set (reload, resolution, admin API): each builds on the set the
    /// previous one installed.
    let membership: Mutex<BackendMembership>
    /// Turns backend host names into addresses (called off the event loops).
    let resolver: any BackendResolver
    /// Backends retiring in the current set (read on the request path without a lock).
    let retiringCount = Atomic<Int>(0)
    let probeCursor = Atomic<Int>(0)
    private let lifecycle = Mutex(LifecycleState())
    /// Set once shutdown was requested or ``run()`` returned (the lifecycle state says the same):
    /// read on every request of a balancer that owns its loops, where taking the lifecycle lock
    /// would make every request thread write the lock's cache line.
    private let refusesWork = Atomic<Bool>(false)

    struct LifecycleState {
        var shutdownRequested = false
        /// ``run()`` has returned: the loops the balancer owned are gone.
        var stopped = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    /// Builds the policy objects and connection pools for `configuration.backends`.
    ///
    /// - Parameters:
    ///   - group: event loops for upstream connections; nil = the balancer creates
    ///     `configuration.loopCount` loops of its own and stops them when ``run()`` returns.
    ///   - healthPaths: per-backend health-check paths (parallel to `configuration.backends`;
    ///     nil entries use `configuration.healthPath`).
    ///   - clock: the only time source of the balancer's decisions (inject ``ManualClock`` in tests).
    ///   - log: receives health transitions, configuration and throttle events (default: none).
    ///   - metrics: receives counters, gauges and histograms (default: none).
    ///   - accessLog: receives one record per request when `configuration.accessLog` is on.
    ///   - resolver: turns backend host names into addresses (a name becomes one backend per
    ///     address; see ``LoadBalancerConfiguration/resolveInterval``). The first resolution
    ///     happens here, blocking; later ones run on a Dispatch thread.
    public init(configuration: LoadBalancerConfiguration, group: LBEventLoopGroup? = nil,
                healthPaths: [String?] = [],
                clock: any MonotonicClock = SystemClock(),
                log: @escaping LogSink = { _ in },
                metrics: (any MetricsSink)? = nil,
                accessLog: (@Sendable (AccessLogRecord) -> Void)? = nil,
                resolver: any BackendResolver = SystemBackendResolver()) throws(LoadBalancerError) {
        guard !configuration.backends.isEmpty else { throw LoadBalancerError("no backends configured") }
        guard configuration.backends.count <= BackendIndexSet.capacity else {
            throw LoadBalancerError("at most \(BackendIndexSet.capacity) backends are supported, got \(configuration.backends.count)")
        }
        self.configuration = configuration
        requestTimeout = configuration.effectiveRequestTimeout
        if configuration.keepsResumedTasksOnLoops {
            LBEventLoopGroup.keepGlobalJobsOnLoopThreads()
        }
        if let group {
            self.group = group
            ownsGroup = false
        } else {
            do {
                self.group = try LBEventLoopGroup(loopCount: max(1, configuration.loopCount), namePrefix: "lb-balancer")
            } catch {
                throw LoadBalancerError("cannot start event loops: \(error)")
            }
            ownsGroup = true
        }
        counters = ProxyCounters(loopCount: self.group.loops.count)
        // Exclusions are counted for the metrics sink as they are logged (the cluster reports
        // every transition exactly once, through this closure).
        self.log = Self.countingExclusions(log, metrics: metrics)
        self.metrics = MetricsSinkBox(metrics)
        self.accessLog = configuration.accessLog ? accessLog : nil
        self.clock = clock
        startedAt = clock.now()
        var clientConfig = UpstreamClientConfiguration()
        clientConfig.connectTimeout = configuration.connectTimeout
        client = UpstreamClient(configuration: clientConfig)

        var clusterConfig = ClusterConfiguration()
        clusterConfig.strategy = configuration.strategy
        clusterConfig.maxFails = configuration.maxFails
        clusterConfig.fall = configuration.healthFall
        clusterConfig.rise = configuration.healthRise
        clusterConfig.slowStart = configuration.slowStart
        clusterConfig.baseEjection = configuration.ejectionBase
        clusterConfig.maxEjection = configuration.ejectionMax
        clusterConfig.maxEjectedPercent = configuration.maxEjectedPercent
        clusterConfig.activeChecks = configuration.healthInterval > .zero
        clusterConfig.maxDelay = configuration.maxDelay
        clusterConfig.hangDetection = configuration.hangDetection
        if let maxDelay = configuration.maxDelay {
            // With a latency bound the operator said what "slow" is: latency ejection judges
            // slowness, and a stall only counts as a hang well past that bound.
            clusterConfig.hangDetection.floor = max(clusterConfig.hangDetection.floor, maxDelay * 2)
        }
        if configuration.healthInterval > .zero { clusterConfig.activeCheckInterval = configuration.healthInterval }
        clusterConfig.probeTimeout = configuration.effectiveHealthTimeout
        clusterConfig.backendLoad = BackendLoadPolicy(maxCPU: configuration.maxBackendCPU, maxMemory: configuration.maxBackendMemory,
                                                      recoveryReports: configuration.healthRise)
        clusterConfiguration = clusterConfig
        self.resolver = resolver
        let initial: UpstreamSet
        let declared = Self.declarations(configuration.backends, weights: configuration.weights, healthPaths: healthPaths)
        var members = BackendMembership(declared: declared)
        do throws(LoadBalancerError) {
            let outcomes = try Self.resolveNow(configuration.backends, resolver: resolver,
                                               resolveOnce: configuration.resolveInterval <= .zero)
            for event in members.replaceDeclared(declared, resolutions: outcomes, at: clock.now(), inFlight: { _ in 0 }) { log(event) }
            initial = try UpstreamSet.make(
                members: members.members,
                defaultHealthPath: configuration.healthPath, defaultPathIsExplicit: configuration.healthPathIsExplicit,
                expectedStatuses: configuration.healthExpectStatus, previous: nil, group: self.group,
                clusterConfiguration: clusterConfig, clock: clock, log: self.log)
        } catch {
            if ownsGroup { self.group.shutdown() }
            throw error
        }
        upstreamSet = PublishedUpstreamSet(initial, loopCount: self.group.loops.count)
        membership = Mutex(members)

        identity = ClientIdentityResolver(trustedProxies: configuration.trustedProxies)
        if let rate = configuration.rateLimit {
            let burst = configuration.burst ?? LoadBalancerConfiguration.defaultBurst(forRate: rate)
            let penaltyOn = configuration.penaltyThreshold > 0
            let throttleConfig = ThrottleConfiguration(
                rate: rate, burst: burst, maxKeys: configuration.throttleMaxKeys,
                penaltyThreshold: max(1, configuration.penaltyThreshold), penaltyWindow: configuration.penaltyWindow,
                penaltyDuration: penaltyOn ? configuration.penaltyDuration : .zero, penaltyFactor: configuration.penaltyFactor)
            let table = ThrottleTable(configuration: throttleConfig, clock: clock, log: log)
            throttleMiddleware = ThrottleMiddleware(table: table, identity: identity,
                                                    sharedStore: Self.throttleStore(configuration, table: table, group: self.group, log: log, metrics: metrics),
                                                    log: log)
        } else {
            throttleMiddleware = nil
        }
        replayPolicy = ReplayPolicy(retryNonIdempotent: configuration.retryNonIdempotent)
    }

    /// The backends in effect (replaced as a whole by ``reload(backends:weights:healthPaths:)``).
    var upstreams: UpstreamSet { upstreamSet.value }

    /// Health, latency and selection state of the backends currently in effect.
    public var cluster: BackendCluster { upstreams.cluster }

    /// The upstream endpoints currently in effect (parallel to the cluster's backends).
    var endpoints: [UpstreamEndpoint] { upstreams.endpoints }

    // MARK: Handling

    /// The standard chain in front of the balancer: the router health path (when
    /// `routerHealthPath` is set, answered to everyone, never throttled), the per-client throttle
    /// (when `rateLimit` is set), then the `/_lb/*` admin endpoints for admin clients when `admin`
    /// is true, then `middlewares`, then the balancer. The admin endpoints come after the
    /// throttle, so they are rate limited like any other path; other clients' `/_lb/*` requests
    /// are proxied.
    ///
    /// ```swift
    /// func handler(for balancer: LoadBalancer) -> any HTTPHandler {
    ///     balancer.responder(admin: true)
    /// }
    /// ```
    public func responder(admin: Bool = false, middlewares: [any LBMiddleware] = []) -> any HTTPHandler {
        var chain: [any LBMiddleware] = []
        if let path = configuration.routerHealthPath { chain.append(RouterHealthMiddleware(balancer: self, path: path)) }
        chain.append(RequestAccounting(balancer: self, adminInChain: admin))
        if let throttleMiddleware { chain.append(throttleMiddleware) }
        if admin { chain.append(adminEndpoints) }
        chain.append(contentsOf: middlewares)
        return LBMiddlewareChain(chain, responder: self)
    }

    /// Forwards `request` to a backend and returns its response (or a 502/503/504 JSON error).
    /// This is the terminal responder: no throttling, no admin endpoints (see
    /// ``responder(admin:middlewares:)``). Cancelling the calling task aborts the upstream attempt.
    public func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await handleInline(request, context: context)
    }

    /// Forwarding calls only `nonisolated(nonsending)` functions; the tasks it starts (hedged
    /// attempts, tunnel relays) name their loop themselves.
    package var staysOnCallerExecutor: Bool { true }

    /// ``handle(_:context:)`` on the caller's executor (the server and the chain call this).
    @inline(__always)  // into its protocol witness: one async frame less per request
    nonisolated(nonsending) package func handleInline(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        // Once shutdown began, a balancer that owns its loops takes no new work: those loops
        // are about to stop (requests in flight still finish).
        if ownsGroup && refusesWork.load(ordering: .acquiring) {
            return .jsonError(status: 503, message: "the load balancer has shut down", headers: ["Retry-After": "1"])
        }
        // Counted on the shard of the loop the request starts on, wherever the task resumes.
        let loopIndex = group.currentLoopIndex
        counters.requestEntered(loopIndex: loopIndex)
        var (response, backend, attempts) = await forward(request, context: context, loopIndex: loopIndex)
        counters.requestLeft(loopIndex: loopIndex)
        response.upstream = (backend, attempts)
        return response
    }

    /// Wraps `log` so that every exclusion a health transition reports (its `cause` metadata)
    /// also increments `lb_backend_ejections_total{backend,reason}` in `metrics`.
    private static func countingExclusions(_ log: @escaping LogSink, metrics: (any MetricsSink)?) -> LogSink {
        guard let metrics else { return log }
        return { event in
            log(event)
            if event.category == .health, let cause = event.metadata["cause"], let backend = event.metadata["backend"] {
                metrics.increment(counter: "lb_backend_ejections_total", by: 1, dimensions: [("backend", backend), ("reason", cause)])
            }
        }
    }

    // MARK: Reload

    /// Replaces the declared backends without dropping in-flight requests. Backends that stay keep
    /// their health, latency, counters, drain flag and pooled connections (and a name its known
    /// addresses); new ones start healthy in slow start (a new name is resolved now, blocking);
    /// removed ones drain (no new requests; they stay, `draining`, until their requests in flight
    /// finish). Backends added, removed or re-weighted at run time (``addBackend(_:weight:healthPath:)``...)
    /// are replaced too. Returns the summary it also logs. Reloads, resolutions and run-time
    /// changes are applied one after the other.
    ///
    /// ```swift
    /// func addFourth(to balancer: LoadBalancer) throws {
    ///     try balancer.reload(backends: [try BackendURL(parsing: "http://127.0.0.1:5004")])
    /// }
    /// ```
    @discardableResult
    public func reload(backends: [BackendURL], weights: [Int] = [], healthPaths: [String?] = []) throws(LoadBalancerError) -> String {
        guard backends.count <= BackendIndexSet.capacity else {
            noteReloadFailure()
            throw LoadBalancerError("at most \(BackendIndexSet.capacity) backends are supported, got \(backends.count)")
        }
        guard !backends.isEmpty else {
            noteReloadFailure()
            throw LoadBalancerError("no backends configured")
        }
        let declared = Self.declarations(backends, weights: weights, healthPaths: healthPaths)
        let change: (old: UpstreamSet, new: UpstreamSet, events: [LBLogEvent])
        do throws(LoadBalancerError) {
            // Names whose addresses are known keep them (the resolve interval refreshes them); the
            // others are resolved now, blocking and outside the lock, as at start.
            let known = membership.withLock { m in Set(m.declared.filter { m.resolution(of: $0.url)?.addresses != nil }.map(\.url)) }
            let outcomes = try Self.resolveNow(backends.filter { !known.contains($0.description) }, resolver: resolver,
                                               resolveOnce: configuration.resolveInterval <= .zero)
            let now = clock.now()
            change = try changeMembership { m, inFlight in
                m.replaceDeclared(declared, resolutions: outcomes, at: now, inFlight: inFlight)
            }
        } catch {
            noteReloadFailure()
            throw error
        }
        let (old, new, events) = change
        counters.reloadsSucceeded.add(1, ordering: .relaxed)
        metrics?.increment(counter: "lb_reloads_total", by: 1, dimensions: [("outcome", "success")])
        for event in events { log(event) }
        let message = "reloaded: " + Self.changeSummary(old: old, new: new, declaredCount: declared.count)
        log(LBLogEvent(level: .notice, category: .config, message: message))
        return "[CONFIG] " + message
    }

    /// Counts a reload that was refused (`lb_reloads_total{outcome="failure"}`): an invalid
    /// configuration file, or a backend set ``reload(backends:weights:healthPaths:)`` rejected
    /// (counted there already). Call it when your own reload fails before reaching the balancer,
    /// as lbserve does when the file does not parse.
    public func noteReloadFailure() {
        counters.reloadsFailed.add(1, ordering: .relaxed)
        metrics?.increment(counter: "lb_reloads_total", by: 1, dimensions: [("outcome", "failure")])
    }

    // MARK: Lifecycle

    /// Runs the balancer's background work (active health checks) until its task is cancelled or
    /// ``shutdown()`` is called; then waits (up to the request timeout) for requests in flight,
    /// closes idle upstream connections and stops the event loops it created. Made to be owned by
    /// a service lifecycle (swift-service-lifecycle's `ServiceGroup`, Vapor's lifecycle).
    ///
    /// ```swift
    /// func runUntilStopped(_ balancer: LoadBalancer) async throws {
    ///     try await withThrowingTaskGroup(of: Void.self) { group in
    ///         group.addTask { try await balancer.run() }
    ///         // ... later, from anywhere:
    ///         balancer.shutdown()
    ///         try await group.waitForAll()
    ///     }
    /// }
    /// ```
    nonisolated(nonsending) public func run() async throws {
        log(LBLogEvent(level: .info, category: .lifecycle, message: "balancer started with \(upstreams.urls.count) backends"))
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await self.waitForShutdownRequest() }
            if configuration.healthInterval > .zero {
                tasks.addTask { await self.runHealthChecks() }
            }
            tasks.addTask { await self.trimIdleConnections() }
            if let store = throttleMiddleware?.sharedStore {
                tasks.addTask(executorPreference: group.loops[0]) { await store.run() }
            }
            if configuration.resolveInterval > .zero {
                tasks.addTask { await self.runResolution() }
            }
            _ = await tasks.next()   // the shutdown waiter ends first, unless cancelled
            tasks.cancelAll()
        }
        await drain()
        lifecycle.withLock { $0.stopped = true }
        refusesWork.store(true, ordering: .releasing)
        log(LBLogEvent(level: .info, category: .lifecycle, message: "balancer stopped"))
    }

    /// Whether ``run()`` has returned (requests are then answered 503 when the balancer owned
    /// its event loops).
    public var isStopped: Bool { lifecycle.withLock { $0.stopped } }

    /// Asks ``run()`` to return gracefully (idempotent; callable from any thread).
    public func shutdown() {
        let waiter = lifecycle.withLock { s -> CheckedContinuation<Void, Never>? in
            s.shutdownRequested = true
            let w = s.waiter
            s.waiter = nil
            return w
        }
        refusesWork.store(true, ordering: .releasing)
        waiter?.resume()
    }

    nonisolated(nonsending) private func waitForShutdownRequest() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let done = lifecycle.withLock { s -> Bool in
                    if s.shutdownRequested || Task.isCancelled { return true }
                    s.waiter = c
                    return false
                }
                if done { c.resume() }
            }
        } onCancel: {
            self.shutdown()
        }
    }

    /// Waits for requests in flight (bounded by the request timeout), then releases resources.
    nonisolated(nonsending) private func drain() async {
        // Polls in 5 ms sleeps for at most the request timeout (counted in sleeps, so no clock
        // is read here: the balancer's only time source stays its injected clock).
        let step = Duration.milliseconds(5)
        var budget = Int(min(configuration.effectiveRequestTimeout / step, 1_000_000))
        while counters.inFlight > 0 && budget > 0 {
            try? await Task.sleep(for: step)
            budget -= 1
        }
        for endpoint in upstreams.endpoints { endpoint.closeIdleConnections() }
        if ownsGroup {
            let group = self.group
            // LBEventLoopGroup.shutdown joins the loop threads: do it off the cooperative pool.
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                DispatchQueue.global().async {
                    group.shutdown()
                    c.resume()
                }
            }
        }
    }

    /// Every second, closes the pooled upstream connections nobody used for two seconds beyond
    /// four per backend and loop: the connections a burst opened do not stay, with their memory,
    /// once it is over (issue 14: memory returned after a burst).
    nonisolated(nonsending) private func trimIdleConnections() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(1), clock: .continuous) } catch { return }
            for endpoint in upstreams.endpoints { endpoint.closeSurplusIdleConnections(unusedFor: .seconds(2), keep: 4) }
        }
    }
}

/// A balancer that could not be built or reconfigured.
public struct LoadBalancerError: Error, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}
