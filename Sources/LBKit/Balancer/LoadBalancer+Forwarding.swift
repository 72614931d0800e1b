/// The forwarding loop: choose, send, judge, maybe move on. Every decision reads time from the
/// balancer's injected clock; the upstream client is given durations, never instants.
extension LoadBalancer {
    /// Tries up to `maxAttempts` distinct backends within the request deadline.
    /// Returns the response, the backend that produced it (if any) and the attempts made.
    /// `loopIndex`: the index of the balancer's loop the caller runs on (`group.currentLoopIndex`).
    @inline(__always)  // one caller (handleInline): one async frame less per request
    nonisolated(nonsending) func forward(_ request: LBRequest, context: LBRequestContext, loopIndex: Int?) async -> (LBResponse, String?, Int) {
        // One snapshot of the backends for the whole request: a reload mid-request does not mix sets.
        let up = upstreamSet.read(onLoop: loopIndex)
        let cluster = up.cluster
        // The caller's own loop when it runs on one of ours (a server running its handlers on
        // `eventLoopGroup`): the upstream exchange then stays on the caller's thread.
        let loop: LBEventLoop
        if let own = context.eventLoop {
            loop = own
        } else if let loopIndex {
            loop = group.loops[loopIndex]
        } else {
            loop = group.next()
        }
        let trustedPeer = context.clientAddress.map { identity.isTrusted($0) } ?? false
        let uncancellable = context.runsInUncancellableTask
        var asksUpgrade = false
        let head = ForwardingHeaders.upstreamHead(for: request.head, client: context.clientAddress, peerIsTrustedProxy: trustedPeer,
                                                  asksUpgrade: &asksUpgrade)
        // An upgrade (WebSocket) opens a session: never started twice, never hedged.
        let replayable = request.bodyStream == nil && !asksUpgrade
            && replayPolicy.mayReplay(method: request.method, hasIdempotencyKey: request.headers.contains(name: "Idempotency-Key"))
        // A `let`, built whole: a `var` passed to the exchange was copied first.
        let upstream: UpstreamRequest
        if let stream = request.bodyStream {
            // Beyond the buffering limit: the body is read as it is sent, so it can be sent once.
            upstream = UpstreamRequest(head: consume head, bodyStream: stream)
        } else {
            upstream = UpstreamRequest(head: consume head, body: request.body, mayReplay: replayable)
        }
        var plan = AttemptPlan(maxAttempts: configuration.maxAttempts, replayable: replayable,
                               requestDeadline: clock.now() + requestTimeout,
                               attemptTimeout: configuration.attemptTimeout)
        var lastFailure: (status: Int, message: String)? = nil
        var lastResponse: (LBResponse, String)? = nil

        // The hedge point of a replayable request is the chosen backend's hang threshold unless
        // configured otherwise; the cluster then reads it with the choice.
        let thresholdIsHedgePoint = plan.mayHedge && hedgesAtHangThreshold
        while plan.mayStartAttempt {
            let index: Int
            var trial = false
            let now: MonotonicInstant
            let attemptDeadline: MonotonicInstant
            var hangThresholdNs: UInt64? = nil
            if plan.attempts == 0 {
                // The first attempt draws on no retry budget, so only the request deadline can
                // refuse it: admitted before the choice, it is chosen and started (with the
                // request's budget deposit and its hang threshold) in one lock round trip.
                now = clock.now()
                guard case .admitted(let deadline) = plan.admit(now: now, budget: { _ in true }) else {
                    cluster.requestStarted()
                    return finish(nil, (504, "request deadline exceeded"), 0)
                }
                attemptDeadline = deadline
                switch cluster.startAttempt(firstOfRequest: true, withHangThreshold: thresholdIsHedgePoint, trial: &trial,
                                            hangThresholdNanoseconds: &hangThresholdNs) {
                case .backend(let i):
                    index = i
                case .noneEligible(let retryAfter):
                    counters.noBackend.add(1, ordering: .relaxed)
                    let seconds = max(1, Int((retryAfter.milliseconds / 1000).rounded(.up)))
                    return (.jsonError(status: 503, message: "no healthy backend available",
                                       headers: ["Retry-After": String(seconds)]), nil, 0)
                }
            } else {
                switch cluster.choose(excluding: plan.tried, trial: &trial) {
                case .backend(let i):
                    index = i
                case .noneEligible:
                    return finish(lastResponse, lastFailure, plan.attempts)
                }
                now = clock.now()
                switch plan.admit(now: now, budget: { reason in
                    reason == .connect ? { cluster.recordUnbudgetedRetry(reason: reason); return true }() : cluster.tryRetry(reason: reason)
                }) {
                case .refusedByBudget:
                    cluster.choiceAbandoned(index)
                    counters.budgetExhausted.add(1, ordering: .relaxed)
                    return finish(lastResponse, lastFailure, plan.attempts)
                case .refusedByDeadline:
                    cluster.choiceAbandoned(index)
                    return finish(lastResponse, lastFailure ?? (504, "request deadline exceeded"), plan.attempts)
                case .admitted(let deadline):
                    attemptDeadline = deadline
                }
                cluster.attemptStarted(index)
                if thresholdIsHedgePoint { hangThresholdNs = cluster.hangThresholdNanoseconds(index) }
            }
            plan.started(index)
            attemptActivityStarted(index, in: up)
            var hedgeDelayNs = !plan.mayHedge ? nil : thresholdIsHedgePoint ? hangThresholdNs : hedgeDelayNanoseconds(for: index, in: cluster)
            if trial, let delay = hedgeDelayNs {
                // A replayable trial of a half-open backend (ejected, slow or hung before) is
                // raced against another backend almost at once: it costs the client nothing,
                // and its own outcome still decides whether the backend comes back.
                hedgeDelayNs = min(delay, Self.trialRaceDelayNanoseconds)
            }
            // The attempt's backend, start and result as three locals, not an AttemptRecord:
            // taking the result back out of a record copied the whole response (and
            // destroyed the record's), about 16 reference-count operations per request.
            var used = index
            var attemptStart = now
            let result: Result<UpstreamResponse, UpstreamError>
            do {
                let deadlineNs = UpstreamClient.deadline(after: attemptDeadline - now)
                let answerByNs = hedgeDelayNs.map { UpstreamClient.deadline(afterNanoseconds: $0) } ?? .max
                // A task nothing can cancel skips send's cancellation wrapper (one async call less).
                let progress = uncancellable
                    ? try await client.sendUncancellable(upstream, to: up.endpoints[index], on: loop, deadline: deadlineNs, answerBy: answerByNs)
                    : try await client.send(upstream, to: up.endpoints[index], on: loop, deadline: deadlineNs, answerBy: answerByNs)
                switch consume progress {
                case .complete(let response):
                    result = .success(response)
                case .pending(let pending):
                    let raced = await hedge(upstream, in: up, pending: pending, firstIndex: index, firstStart: now,
                                            firstDeadline: attemptDeadline, plan: &plan, loop: loop)
                    used = raced.index
                    attemptStart = raced.start
                    result = raced.result
                }
            } catch {
                result = .failure(error)
            }
            record(index: used, start: attemptStart, result: result, in: up)
            let name = up.names[used]
            switch consume result {
            case .success(let response):
                let status = response.head.status
                var proxied = clientResponse(consume response, backend: name, request: request.head)
                observeLastByte(&proxied, index: used, start: attemptStart, in: cluster)
                if plan.retryAfterResponse(status: status) {
                    lastResponse?.0.bodyStream?.abandon()
                    lastResponse = (proxied, name)
                    continue
                }
                lastResponse?.0.bodyStream?.abandon()
                return (proxied, name, plan.attempts)
            case .failure(let error):
                lastFailure = failureDescription(error, backend: name)
                lastResponse?.0.bodyStream?.abandon()
                lastResponse = nil
                // A streamed request body that started flowing cannot be sent again.
                let sent = error.requestSent || (request.bodyStream?.source.hasStarted ?? false)
                if plan.retryAfterFailure(sent: sent, timedOut: error.kind == .timedOut) { continue }
                return finish(nil, lastFailure, plan.attempts)
            }
        }
        return finish(lastResponse, lastFailure, plan.attempts)
    }

    /// How long a replayable trial request runs alone before a second attempt races it. Short
    /// enough to cost the client nothing it would notice; long enough that a backend that
    /// recovered usually answers first (no duplicate), and that a pooled connection the backend
    /// had closed shows its EOF and is replaced by a fresh one (RFC 9112 9.3.1) before the
    /// race, instead of failing the trial.
    static let trialRaceDelay = Duration.milliseconds(2)
    static let trialRaceDelayNanoseconds: UInt64 = 2_000_000

    /// Time to last byte: when the body is whole it is already here; a streamed body is
    /// observed until its end (or until it breaks off or is abandoned).
    func observeLastByte(_ response: inout LBResponse, index: Int, start: MonotonicInstant, in cluster: BackendCluster) {
        // A whole body's last byte came with the head: recorded with the attempt (record(_:in:)).
        guard let stream = response.bodyStream else { return }
        let clock = self.clock
        let observed = ObservedBodySource(stream.source) { cluster.bodyFinished(index, latency: clock.now() - start) }
        response.bodyStream = LBBodyStream(source: observed, length: stream.length)
    }

    /// One attempt: the backend, when it started and how it ended.
    struct AttemptRecord: Sendable {
        var index: Int
        var start: MonotonicInstant
        var result: Result<UpstreamResponse, UpstreamError>

        /// Runs `exchange` and records how it ended.
        nonisolated(nonsending) static func run(index: Int, start: MonotonicInstant,
                        _ exchange: () async throws(UpstreamError) -> UpstreamResponse) async -> AttemptRecord {
            do throws(UpstreamError) {
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

    /// Reports an attempt's outcome and latency to the cluster (and its end, for retiring backends).
    func record(_ attempt: AttemptRecord, in up: UpstreamSet) {
        record(index: attempt.index, start: attempt.start, result: attempt.result, in: up)
    }

    /// Reports the attempt on backend `index` that started at `start` and ended with `result`.
    func record(index: Int, start: MonotonicInstant, result: borrowing Result<UpstreamResponse, UpstreamError>, in up: UpstreamSet) {
        let cluster = up.cluster
        defer { attemptEnded(index, in: up) }
        let elapsed = clock.now() - start
        let outcome: AttemptOutcome
        var wholeBody = false
        var status: Int?
        switch result {
        case .success(let response):
            outcome = response.head.status >= 500 ? .failure(.status5xx) : .success
            wholeBody = response.bodyStream == nil
            status = response.head.status
        case .failure(let error):
            switch error.kind {
            case .connectRefused, .connectTimeout, .connectFailed: outcome = .failure(.connect)
            case .timedOut: outcome = .failure(.timeout)
            // An aborted exchange (hedge loser, cancelled request) lost its connection like a reset.
            case .connectionReset, .malformedResponse, .aborted: outcome = .failure(.reset)
            // The client's own body failed: says nothing about the backend.
            case .requestBodyFailed: outcome = .success
            }
        }
        cluster.attemptFinished(index, outcome: outcome, latency: elapsed, bodyComplete: wholeBody, status: status)
        if let metrics, let status, cluster.backends.indices.contains(index) {
            metrics.increment(counter: "lb_backend_responses_total", by: 1,
                              dimensions: [("backend", cluster.backends[index].url), ("status_class", ProxyCounters.statusClass(status))])
        }
    }

    private func failureDescription(_ error: UpstreamError, backend name: String) -> (status: Int, message: String) {
        if case .requestBodyFailed(let why) = error.kind { return (400, "request body: \(why)") }
        // Backends are named only where the response header names them too (--backend-header).
        let who = configuration.backendHeader == nil ? "backend" : "backend \(name)"
        if error.kind == .timedOut {
            return (504, "\(who): no response within \(Int(configuration.attemptTimeout.milliseconds)) ms")
        }
        return (502, "\(who): \(error)")
    }

    private func finish(_ response: (LBResponse, String)?, _ failure: (status: Int, message: String)?, _ attempts: Int) -> (LBResponse, String?, Int) {
        if let (r, i) = response { return (r, i, attempts) }
        let f = failure ?? (502, "no backend could be reached")
        let prefix = f.status == 502 || f.status == 504 ? "All backends failed: " : ""
        return (.jsonError(status: f.status, message: prefix + f.message + (attempts > 1 ? " (after \(attempts) attempts)" : "")), nil, attempts)
    }

    /// The response to send the client: hop-by-hop fields removed (RFC 9110 7.6.1), the body
    /// whole or streamed as it came, its transfer codings kept, a HEAD's `Content-Length` kept
    /// (RFC 9110 8.6), an upgrade's `Connection`/`Upgrade` restored around the tunnel.
    ///
    /// The backend's parsed field list is moved out of `response` and edited in place (no copy:
    /// the parser left room for the backend header), since nothing else holds it.
    private func clientResponse(_ response: consuming UpstreamResponse, backend name: String, request: RequestHead) -> LBResponse {
        var head = response.head
        response.head.headers = HeaderFields()
        let upgradeOffer = response.tunnel == nil ? nil : head.headers.first(name: "Upgrade")
        ForwardingHeaders.removeHopByHop(&head.headers, keepingFirstContentLength: head.status == 304 || request.method.isMethod("HEAD"))
        if let header = configuration.backendHeader { head.headers.add(name: header, value: name) }
        var out: LBResponse
        if let stream = response.bodyStream {
            out = LBResponse(head: head, bodyStream: stream)
        } else {
            out = LBResponse(head: head, body: response.body)
        }
        out.transferCodings = response.transferCodings
        if let tunnel = response.tunnel {
            if let protocols = upgradeOffer {
                out.head.headers.add(name: "Connection", value: "Upgrade")
                out.head.headers.add(name: "Upgrade", value: protocols)
            }
            out.tunnel = CountedTunnel(tunnel, counters: counters)
        }
        return out
    }
}

/// The retry and deadline rules of one client request, as a value: which attempt may start,
/// with what deadline, and whether a result moves the request on. Pure (no I/O, no clock of its
/// own), so the rules are tested with plain instants.
///
/// The rules (RFC 9110 9.2.2, RFC 9112 9.3.1):
/// - at most `maxAttempts` distinct backends, all within one request deadline;
/// - an attempt that provably never reached a backend (connect failed) always moves on, outside
///   the retry budget;
/// - after a request was sent, a 5xx answer, a timeout or a broken connection moves on only for a
///   replayable request (idempotent method, `Idempotency-Key`, or operator opt-in), within the
///   retry budget; a non-replayable one is answered with what happened;
/// - a replayable attempt may be hedged (raced against a second backend) while attempts remain.
struct AttemptPlan {
    let maxAttempts: Int
    let replayable: Bool
    let requestDeadline: MonotonicInstant
    let attemptTimeout: Duration
    private(set) var attempts = 0
    private(set) var tried = BackendIndexSet()
    /// Why the next attempt is a retry (nil for the first attempt).
    private(set) var pendingRetry: RetryReason?

    init(maxAttempts: Int, replayable: Bool, requestDeadline: MonotonicInstant, attemptTimeout: Duration) {
        self.maxAttempts = max(1, maxAttempts)
        self.replayable = replayable
        self.requestDeadline = requestDeadline
        self.attemptTimeout = attemptTimeout
    }

    enum Admission: Equatable {
        /// Send, with this attempt deadline.
        case admitted(deadline: MonotonicInstant)
        /// The retry budget said no.
        case refusedByBudget
        /// The request deadline has passed.
        case refusedByDeadline
    }

    /// Whether another attempt may be made at all.
    var mayStartAttempt: Bool { attempts < maxAttempts }

    /// Whether the attempt about to start may be hedged.
    var mayHedge: Bool { replayable && attempts < maxAttempts }

    /// Decides whether an attempt may start at `now`; `budget` is asked for retries (it records
    /// unbudgeted never-sent retries itself and returns true for them).
    func admit(now: MonotonicInstant, budget: (RetryReason) -> Bool) -> Admission {
        if let reason = pendingRetry, !budget(reason) { return .refusedByBudget }
        if now >= requestDeadline { return .refusedByDeadline }
        return .admitted(deadline: min(requestDeadline, now + attemptTimeout))
    }

    /// Notes that an attempt on `index` started.
    mutating func started(_ index: Int) {
        tried.insert(index)
        attempts += 1
    }

    /// After a response with `status`: true when the request should move on (5xx, replayable,
    /// attempts left).
    mutating func retryAfterResponse(status: Int) -> Bool {
        guard status >= 500, replayable, attempts < maxAttempts else { return false }
        pendingRetry = .status5xx
        return true
    }

    /// After a failed exchange: true when the request should move on.
    mutating func retryAfterFailure(sent: Bool, timedOut: Bool) -> Bool {
        if !sent {
            pendingRetry = .connect
            return true
        }
        guard replayable else { return false }
        pendingRetry = timedOut ? .timeout : .reset
        return true
    }
}

/// A body source that reports once when its body ends, breaks off or is abandoned.
final class ObservedBodySource: BodySource, @unchecked Sendable {
    // @unchecked: single consumer (BodySource); `reported` is touched only by that consumer
    // (and by abandon(), which the same consumer calls).
    private let inner: any BodySource
    private let onEnd: @Sendable () -> Void
    private var reported = false

    init(_ inner: any BodySource, onEnd: @escaping @Sendable () -> Void) {
        self.inner = inner
        self.onEnd = onEnd
    }

    var hasStarted: Bool { inner.hasStarted }

    nonisolated(nonsending) func nextChunk() async throws(BodyStreamError) -> [UInt8]? {
        do {
            let chunk = try await inner.nextChunk()
            if chunk == nil { report() }
            return chunk
        } catch {
            report()
            throw error
        }
    }

    func abandon() {
        inner.abandon()
        report()
    }

    private func report() {
        if reported { return }
        reported = true
        onEnd()
    }
}
