import Synchronization

/// The transport-independent balancing and health policy of one group of backends.
///
/// Thread-safe: all state, the retry budget included, sits behind one `Mutex`; every call holds
/// it for a few hundred nanoseconds, allocates nothing on the common path and calls the log
/// closure only after releasing it.
///
/// Per client request the proxy calls ``requestStarted()`` once, then for each attempt
/// ``choose(excluding:)``, ``attemptStarted(_:)`` and ``attemptFinished(_:outcome:latency:)``;
/// before a retry (at most 3 attempts, each on a different backend) it asks ``tryRetry(reason:)``.
/// ``startAttempt(excluding:firstOfRequest:withHangThreshold:trial:hangThresholdNanoseconds:)``
/// does the first three (and reads the hang threshold) in one lock round trip, for an attempt
/// that is sent as soon as it is chosen.
/// A health-check task calls ``probeFinished(_:success:latency:)`` after every probe, using
/// ``probeTimeout(for:)``.
///
/// When every backend is ineligible, ``choose(excluding:)`` returns
/// ``ChooseResult/noneEligible(retryAfter:)`` rather than falling back to an unhealthy backend
/// ("panic routing"): the proxy answers 503 with `Retry-After` right away instead of making the
/// client wait for a connection that is known to fail. The max-ejected cap keeps passive
/// exclusions from ever emptying the pool, so this only happens when health checks mark
/// backends down or every backend was already tried for this request.
///
/// ```swift
/// let cluster = BackendCluster(
///     backends: [BackendDescriptor(url: "http://127.0.0.1:5001"), BackendDescriptor(url: "http://127.0.0.1:5002")],
///     configuration: ClusterConfiguration(),
///     log: { print($0.line) })
/// cluster.requestStarted()
/// var tried = BackendIndexSet()
/// while case .backend(let index) = cluster.choose(excluding: tried) {
///     cluster.attemptStarted(index)
///     let ok = true  // ... forward the request to cluster.backends[index].url ...
///     cluster.attemptFinished(index, outcome: ok ? .success : .failure(.connect), latency: .milliseconds(12))
///     if ok || tried.count == 2 || !cluster.tryRetry(reason: .connect) { break }
///     tried.insert(index)
/// }
/// ```
public final class BackendCluster: Sendable {
    /// The backends, in index order.
    public let backends: [BackendDescriptor]
    /// The configuration the cluster was created with.
    public let configuration: ClusterConfiguration

    let clock: any MonotonicClock
    let log: LogSink
    private let maxPassivelyExcluded: Int
    private let hangConfiguration: HangDetection
    /// `hangConfiguration.floor` in nanoseconds, for the check ``choose(excluding:trial:)``
    /// makes on every backend with requests in flight (Duration arithmetic is a library call).
    private let hangFloorNanoseconds: UInt64
    let state: Mutex<ClusterState>

    /// Creates a cluster with every backend healthy.
    /// - Parameters:
    ///   - backends: the backends (indices into this array identify them everywhere).
    ///   - configuration: thresholds and strategy.
    ///   - clock: time source (inject a ``ManualClock`` in tests).
    ///   - random: randomness for power-of-two choices and slow start (inject ``SplitMix64`` in tests).
    ///   - selector: a custom strategy overriding `configuration.strategy`.
    ///   - log: receives one `[HEALTH] ...` line per state transition.
    public init(
        backends: [BackendDescriptor],
        configuration: ClusterConfiguration = ClusterConfiguration(),
        clock: any MonotonicClock,
        random: some RandomNumberGenerator & Sendable = SystemRandomNumberGenerator(),
        selector: (any BackendSelector)? = nil,
        log: @escaping LogSink = { _ in }
    ) {
        self.backends = backends
        self.configuration = configuration
        self.clock = clock
        self.log = log
        let count = backends.count
        let percent = min(max(configuration.maxEjectedPercent, 0), 100)
        maxPassivelyExcluded = max(1, count * percent / 100)
        hangConfiguration = configuration.hangDetection
        hangFloorNanoseconds = UInt64(max(0, configuration.hangDetection.floor.nanosecondsClamped))
        let now = clock.now()
        let policy = configuration.healthPolicy
        let tracker = LatencyTracker(decay: configuration.latencyDecay, window: configuration.latencyWindow, now: now)
        var scratch: [BackendContext] = []
        scratch.reserveCapacity(count)
        state = Mutex(ClusterState(
            health: Array(repeating: HealthStateMachine(policy: policy, now: now), count: count),
            latency: Array(repeating: tracker, count: count),
            stats: Array(repeating: BackendStats(), count: count),
            weights: backends.map { max($0.weight, 1) },
            draining: Array(repeating: false, count: count),
            load: Array(repeating: BackendLoadGate(policy: configuration.backendLoad, now: now), count: count),
            selector: selector ?? configuration.strategy.makeSelector(backendCount: count),
            random: random,
            scratch: scratch,
            retry: RetryState(budget: RetryBudget(
                percent: configuration.retryBudgetPercent, minRetriesPerSecond: configuration.minRetriesPerSecond,
                ttl: configuration.retryBudgetTTL, clock: clock))))
    }

    // MARK: Request path

    /// Picks the backend for the next attempt of a request.
    ///
    /// - Parameter excluding: backends this request already tried (skipped, so a retry lands
    ///   elsewhere).
    /// - Returns: the backend, or ``ChooseResult/noneEligible(retryAfter:)`` when every backend is
    ///   excluded, ejected, down, slow or has its half-open trial outstanding.
    public func choose(excluding: BackendIndexSet = BackendIndexSet()) -> ChooseResult {
        var trial = false
        return choose(excluding: excluding, trial: &trial)
    }

    /// Like ``choose(excluding:)``, and sets `trial` when the chosen backend is half-open: this
    /// attempt is its trial request, the evidence that decides whether it comes back. The
    /// balancer races a replayable trial against another backend almost at once (a hedge 2 ms
    /// after it was sent), so a trial of a still-slow backend costs the client nothing.
    public func choose(excluding: BackendIndexSet = BackendIndexSet(), trial: inout Bool) -> ChooseResult {
        let now = clock.now()
        var transitions: [(Int, HealthTransition)] = []
        let result = state.withLock { s in choose(&s, excluding: excluding, at: now, trial: &trial, transitions: &transitions) }
        emit(transitions)
        return result
    }

    /// The start of an attempt that is sent as soon as its backend is chosen, in one lock round
    /// trip: ``requestStarted()`` when `firstOfRequest`, ``choose(excluding:trial:)``, then for
    /// the backend chosen ``attemptStarted(_:)`` and, with `withHangThreshold`,
    /// ``hangThresholdNanoseconds(_:)`` into `hangThresholdNanoseconds`. The separate calls take
    /// the lock four times, and with two event loops each take moves the lock's cache line
    /// between the cores (`Docs/Performance.md` step 50).
    ///
    /// ```swift
    /// var trial = false
    /// var hedgeAfterNs: UInt64? = nil
    /// if case .backend(let index) = cluster.startAttempt(firstOfRequest: true, withHangThreshold: true,
    ///                                                      trial: &trial, hangThresholdNanoseconds: &hedgeAfterNs) {
    ///     cluster.attemptFinished(index, outcome: .success, latency: .milliseconds(3))
    /// }
    /// ```
    public func startAttempt(excluding: BackendIndexSet = BackendIndexSet(), firstOfRequest: Bool, withHangThreshold: Bool,
                             trial: inout Bool, hangThresholdNanoseconds: inout UInt64?) -> ChooseResult {
        let now = clock.now()
        var transitions: [(Int, HealthTransition)] = []
        let wantsThreshold = withHangThreshold && hangConfiguration.factor > 0
        var threshold: UInt64? = nil
        let result = state.withLock { s in
            if firstOfRequest { s.retry.budget.deposit() }
            let result = choose(&s, excluding: excluding, at: now, trial: &trial, transitions: &transitions)
            if case .backend(let index) = result {
                Self.start(&s, index, at: now)
                if wantsThreshold { threshold = hangThreshold(ewma: s.latency[index].ewma(at: now)) }
            }
            return result
        }
        hangThresholdNanoseconds = threshold
        emit(transitions)
        return result
    }

    /// ``choose(excluding:trial:)`` under the lock.
    @inline(__always)
    private func choose(_ s: inout ClusterState, excluding: BackendIndexSet, at now: MonotonicInstant, trial: inout Bool,
                        transitions: inout [(Int, HealthTransition)]) -> ChooseResult {
        trial = false
        if now >= s.nextDeadline { s.refresh(at: now, into: &transitions) }
        s.scratch.removeAll(keepingCapacity: true)
        let usesLatency = s.selector.usesLatency
        for i in 0..<s.health.count where !excluding.contains(i) && !s.draining[i] && s.load[i].admits && s.health[i].isEligible(at: now) {
            if s.stats[i].inFlight > 0,
               s.stalledNanoseconds(i, at: now) > hangFloorNanoseconds,
               let hung = s.hungTransition(i, at: now, configuration: hangConfiguration,
                                                                     allowExclusion: s.passivelyExcluded < maxPassivelyExcluded) {
                s.apply(hung, to: i)
                transitions.append((i, hung))
                continue
            }
            // Field by field: a method called on the array element made the compiler copy
            // the whole machine out of the array on every choice.
            let slowStart = HealthStateMachine.slowStartFactor(
                state: s.health[i].state, recoveredAt: s.health[i].recoveredAt, slowStart: s.health[i].policy.slowStart, at: now)
            let factor = slowStart * s.load[i].shareFactor
            let latencyEWMA = usesLatency ? s.latency[i].ewma(at: now) / 1_000_000 : 0
            let context = BackendContext(index: i, inFlight: s.stats[i].inFlight, latencyEWMA: latencyEWMA,
                                         weight: s.weights[i], slowStartFactor: factor)
            s.scratch.append(context)
        }
        guard let first = s.scratch.first?.index else {
            return .noneEligible(retryAfter: s.retryAfter(at: now, excluding: excluding))
        }
        var chosen = s.selector.choose(from: s.scratch, using: &s.random) ?? first
        if chosen < 0 || chosen >= s.health.count || excluding.contains(chosen) || !s.health[chosen].isEligible(at: now) {
            chosen = first  // a custom selector returned something it was not offered
        }
        if s.health[chosen].state == .probing {
            trial = true
            s.health[chosen].trialStarted(at: now)
            if let deadline = s.health[chosen].nextDeadline, deadline < s.nextDeadline { s.nextDeadline = deadline }
        }
        if !excluding.isEmpty { s.stats[chosen].retries += 1 }
        return .backend(chosen)
    }

    /// How long backend `index` may hold attempts without answering before it counts as hung
    /// (see ``HangDetection``); nil when hang detection is off. The balancer hedges replayable
    /// requests at this point by default.
    public func hangThreshold(_ index: Int) -> Duration? {
        hangThresholdNanoseconds(index).map { .nanoseconds(Int64(clamping: $0)) }
    }

    /// ``hangThreshold(_:)`` in nanoseconds, the rule itself (no `Duration` arithmetic: a 128-bit
    /// multiplication and conversions): the balancer asks for it on every replayable request, as
    /// its default hedge point.
    ///
    /// ```swift
    /// let hedgeAfterNs = cluster.hangThresholdNanoseconds(0)   // nil: hang detection is off
    /// ```
    public func hangThresholdNanoseconds(_ index: Int) -> UInt64? {
        let factor = hangConfiguration.factor
        guard factor > 0 else { return nil }
        let now = clock.now()
        let ewma = state.withLock { s -> Double in s.latency.indices.contains(index) ? s.latency[index].ewma(at: now) : 0 }
        return hangThreshold(ewma: ewma)
    }

    /// The hang threshold of a backend whose latency EWMA (in nanoseconds) is `ewma`.
    @inline(__always)
    private func hangThreshold(ewma: Double) -> UInt64 {
        let scaled = ewma * Double(hangConfiguration.factor)
        let typical: UInt64 = scaled >= 9e18 ? 9_000_000_000_000_000_000 : (scaled > 0 ? UInt64(scaled) : 0)
        return max(hangFloorNanoseconds, typical)
    }

    /// Reports that a proxied response body reached its end (or broke off) `latency` after the
    /// attempt started: recorded for time-to-last-byte statistics only (health and slowness are
    /// judged on time to the response head).
    public func bodyFinished(_ index: Int, latency: Duration) {
        state.withLock { s in
            guard s.stats.indices.contains(index) else { return }
            s.stats[index].lastByteHistogram.record(latency)
        }
    }

    /// Undoes a ``choose(excluding:)`` whose attempt was never sent (refused by the retry budget
    /// or the request deadline): a half-open trial it started is released.
    public func choiceAbandoned(_ index: Int) {
        state.withLock { s in
            guard s.health.indices.contains(index) else { return }
            s.health[index].trialAbandoned()
        }
    }

    /// Notes that an attempt was sent to backend `index` (counts it as in flight).
    public func attemptStarted(_ index: Int) {
        let now = clock.now()
        state.withLock { s in
            guard s.stats.indices.contains(index) else { return }
            Self.start(&s, index, at: now)
        }
    }

    /// ``attemptStarted(_:)`` under the lock.
    @inline(__always)
    private static func start(_ s: inout ClusterState, _ index: Int, at now: MonotonicInstant) {
        if s.stats[index].inFlight == 0 { s.stats[index].busySince = now }
        s.stats[index].inFlight += 1
        s.stats[index].requests += 1
    }

    /// Reports how an attempt on backend `index` ended and how long it took (time to response
    /// head; for a timeout, the timeout). Updates latency statistics and health.
    ///
    /// Latency samples: successes, 5xx answers and timeouts always; connection failures and
    /// resets only when slower than `maxDelay` (a fast refusal says nothing about speed).
    /// `bodyComplete`: the response body arrived whole with its head, so this latency is also
    /// its time to last byte (saves a second report through ``bodyFinished(_:latency:)``).
    ///
    /// `status`: the response status when the backend answered (counted per status class in
    /// ``BackendSnapshot/responses``); nil when it did not.
    public func attemptFinished(_ index: Int, outcome: AttemptOutcome, latency: Duration, bodyComplete: Bool = false,
                                status: Int? = nil) {
        let now = clock.now()
        let maxDelay = configuration.maxDelay
        let transition = state.withLock { s -> HealthTransition? in
            guard s.stats.indices.contains(index) else { return nil }
            if s.stats[index].inFlight > 0 { s.stats[index].inFlight -= 1 }
            s.stats[index].lastAnswer = now
            if now > s.lastAnswerAny { s.lastAnswerAny = now }
            var failure: FailureKind?
            var sample: Duration?
            switch outcome {
            case .success:
                s.stats[index].successes += 1
                sample = latency
            case .failure(let kind):
                failure = kind
                s.stats[index].failures.add(kind)
                switch kind {
                case .timeout, .status5xx: sample = latency
                case .connect, .reset:
                    if let maxDelay, latency > maxDelay { sample = latency }
                }
            }
            if let status { s.stats[index].responses.count(status: status) }
            if let sample { s.latency[index].record(sample, at: now) }
            s.stats[index].histogram.record(latency)
            if bodyComplete { s.stats[index].lastByteHistogram.record(latency) }
            let transition = s.health[index].attemptFinished(
                failure: failure, sample: sample, recentLatency: s.latency[index].recentLatency,
                at: now, allowExclusion: s.passivelyExcluded < maxPassivelyExcluded)
            if let transition { s.apply(transition, to: index) }
            return transition
        }
        if let transition { log(transition.logEvent(url: backends[index].url)) }
    }

    /// Reports an active health check (`GET /health`) of backend `index`.
    ///
    /// Latency samples: passing checks always; failing ones only when they took at least
    /// ``probeTimeout(for:)`` or more than `maxDelay` (a timeout is evidence of slowness).
    public func probeFinished(_ index: Int, success: Bool, latency: Duration) {
        probeFinished(index, success: success, result: nil, latency: latency, path: nil)
    }

    /// Reports an active health check of backend `index` with its result: recorded as the
    /// backend's ``BackendSnapshot/lastCheck``, counted in ``BackendSnapshot/healthChecks``, and
    /// a failure's cause is named when the backend is marked down
    /// (`[HEALTH] Marking ... as UNHEALTHY (3 failed checks: status 500)`). The first
    /// ``HealthCheckResult/noHealthEndpoint(status:)`` of a backend is logged once, with the advice
    /// to configure a health path; `path` (the probed path) is named in that line.
    public func probeFinished(_ index: Int, result: HealthCheckResult, latency: Duration, path: String? = nil) {
        probeFinished(index, success: result.passed, result: result, latency: latency, path: path)
    }

    private func probeFinished(_ index: Int, success: Bool, result: HealthCheckResult?, latency: Duration, path: String?) {
        let now = clock.now()
        let maxDelay = configuration.maxDelay
        let timeout = probeTimeout(for: index)
        let (transition, firstNoEndpoint) = state.withLock { s -> (HealthTransition?, Bool) in
            guard s.health.indices.contains(index) else { return (nil, false) }
            var firstNoEndpoint = false
            if let result {
                s.stats[index].lastCheck = HealthCheckRecord(result: result, at: now, latency: latency)
                s.stats[index].healthChecks.add(result)
                if case .noHealthEndpoint = result, !s.stats[index].noHealthEndpointNoticed {
                    s.stats[index].noHealthEndpointNoticed = true
                    firstNoEndpoint = true
                }
            }
            var sample: Duration?
            if success || latency >= timeout || (maxDelay.map { latency > $0 } ?? false) { sample = latency }
            if let sample { s.latency[index].record(sample, at: now) }
            let transition = s.health[index].probeFinished(
                success: success, sample: sample, recentLatency: s.latency[index].recentLatency,
                at: now, allowExclusion: s.passivelyExcluded < maxPassivelyExcluded,
                failureCause: success ? nil : result?.description)
            if let transition { s.apply(transition, to: index) }
            return (transition, firstNoEndpoint)
        }
        if firstNoEndpoint, let result, let status = result.status {
            let url = backends[index].url
            let probed = path.map { "GET \($0)" } ?? "the health check"
            log(LBLogEvent(
                level: .notice, category: .health,
                message: "\(url) answers \(probed) with \(status): no health endpoint, so the check only shows it is reachable "
                    + "(counted as passing); set --health-path (config health_path) to a path that checks the application",
                metadata: ["backend": url, "status": String(status), "reason": "no health endpoint"]))
        }
        if let transition { log(transition.logEvent(url: backends[index].url)) }
    }

    /// The timeout the health checker should use for a probe of backend `index`:
    /// `configuration.probeTimeout`, raised to `2 x maxDelay` when that is longer so that a slow
    /// backend's answer is measured rather than cut off below the threshold.
    public func probeTimeout(for index: Int) -> Duration {
        guard let maxDelay = configuration.maxDelay, maxDelay > .zero else { return configuration.probeTimeout }
        return max(configuration.probeTimeout, maxDelay * 2)
    }

    func emit(_ transitions: [(Int, HealthTransition)]) {
        for (index, transition) in transitions { log(transition.logEvent(url: backends[index].url)) }
    }
}
