import Synchronization

/// The transport-independent balancing and health policy of one group of backends.
///
/// Thread-safe: all per-backend state sits behind one `Mutex` (the retry budget behind a second
/// one); every call holds it for a few hundred nanoseconds, allocates nothing on the common path
/// and calls the log closure only after releasing it.
///
/// Per client request the proxy calls ``requestStarted()`` once, then for each attempt
/// ``choose(excluding:)``, ``attemptStarted(_:)`` and ``attemptFinished(_:outcome:latency:)``;
/// before a retry (at most 3 attempts, each on a different backend) it asks ``tryRetry(reason:)``.
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

    private let clock: any MonotonicClock
    private let log: LogSink
    private let maxPassivelyExcluded: Int
    private let hangConfiguration: HangDetection
    private let state: Mutex<ClusterState>
    private let retries: Mutex<RetryState>

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
            scratch: scratch))
        retries = Mutex(RetryState(budget: RetryBudget(
            percent: configuration.retryBudgetPercent, minRetriesPerSecond: configuration.minRetriesPerSecond,
            ttl: configuration.retryBudgetTTL, clock: clock)))
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
        var isTrial = false
        defer { trial = isTrial }
        var transitions: [(Int, HealthTransition)] = []
        let result = state.withLock { s -> ChooseResult in
            if now >= s.nextDeadline { s.refresh(at: now, into: &transitions) }
            s.scratch.removeAll(keepingCapacity: true)
            let usesLatency = s.selector.usesLatency
            for i in 0..<s.health.count where !excluding.contains(i) && !s.draining[i] && s.load[i].admits && s.health[i].isEligible(at: now) {
                if s.stats[i].inFlight > 0, let hung = s.hungTransition(i, at: now, configuration: hangConfiguration,
                                                                         allowExclusion: s.passivelyExcluded < maxPassivelyExcluded) {
                    s.apply(hung, to: i)
                    transitions.append((i, hung))
                    continue
                }
                s.scratch.append(BackendContext(
                    index: i, inFlight: s.stats[i].inFlight,
                    latencyEWMA: usesLatency ? s.latency[i].ewma(at: now) / 1_000_000 : 0,
                    weight: s.weights[i], slowStartFactor: s.health[i].slowStartFactor(at: now) * s.load[i].shareFactor))
            }
            guard let first = s.scratch.first?.index else {
                return .noneEligible(retryAfter: s.retryAfter(at: now, excluding: excluding))
            }
            var chosen = s.selector.choose(from: s.scratch, using: &s.random) ?? first
            if chosen < 0 || chosen >= s.health.count || excluding.contains(chosen) || !s.health[chosen].isEligible(at: now) {
                chosen = first  // a custom selector returned something it was not offered
            }
            if s.health[chosen].state == .probing {
                isTrial = true
                s.health[chosen].trialStarted(at: now)
                if let deadline = s.health[chosen].nextDeadline, deadline < s.nextDeadline { s.nextDeadline = deadline }
            }
            if !excluding.isEmpty { s.stats[chosen].retries += 1 }
            return .backend(chosen)
        }
        emit(transitions)
        return result
    }

    /// How long backend `index` may hold attempts without answering before it counts as hung
    /// (see ``HangDetection``); nil when hang detection is off. The balancer hedges replayable
    /// requests at this point by default.
    public func hangThreshold(_ index: Int) -> Duration? {
        let rule = hangConfiguration
        guard rule.factor > 0 else { return nil }
        let now = clock.now()
        let ewma = state.withLock { s -> Double in s.latency.indices.contains(index) ? s.latency[index].ewma(at: now) : 0 }
        return max(rule.floor, Duration.nanoseconds(Int64(min(ewma, 9e18))) * rule.factor)
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
        state.withLock { s in
            guard s.stats.indices.contains(index) else { return }
            if s.stats[index].inFlight == 0 { s.stats[index].busySince = clock.now() }
            s.stats[index].inFlight += 1
            s.stats[index].requests += 1
        }
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

    // MARK: Retries

    /// Records a new client request: deposits `retryBudgetPercent`% of a token into the budget.
    public func requestStarted() {
        retries.withLock { $0.budget.deposit() }
    }

    /// Asks whether a failed attempt may be retried: withdraws one token from the retry budget
    /// if available. Counts granted and denied retries per reason.
    public func tryRetry(reason: RetryReason) -> Bool {
        retries.withLock { r in
            let granted = r.budget.tryWithdraw()
            if granted { r.granted[reason.slot] += 1 } else { r.denied[reason.slot] += 1 }
            return granted
        }
    }

    /// The backend's recent p99 latency (from requests and probes), or nil without samples.
    public func recentP99(_ index: Int) -> Duration? {
        let now = clock.now()
        return state.withLock { s in
            s.latency.indices.contains(index) ? s.latency[index].quantile(0.99, at: now) : nil
        }
    }

    /// Counts a retry that does not draw on the budget: a request that provably never reached a
    /// backend (connect refused / timed out) always moves on, since it adds no load to any backend.
    public func recordUnbudgetedRetry(reason: RetryReason) {
        retries.withLock { $0.granted[reason.slot] += 1 }
    }

    /// Retry counters since the cluster was created.
    public func retryStatistics() -> RetryStatistics {
        retries.withLock { r in
            var stats = RetryStatistics()
            for reason in RetryReason.allCases {
                stats.granted[reason] = r.granted[reason.slot]
                stats.denied[reason] = r.denied[reason.slot]
            }
            return stats
        }
    }

    // MARK: Introspection

    /// The state and statistics of every backend (applying due time-based transitions first).
    public func snapshot() -> [BackendSnapshot] {
        let now = clock.now()
        var transitions: [(Int, HealthTransition)] = []
        let result = state.withLock { s -> [BackendSnapshot] in
            if now >= s.nextDeadline { s.refresh(at: now, into: &transitions) }
            var result: [BackendSnapshot] = []
            result.reserveCapacity(s.health.count)
            for i in 0..<s.health.count {
                let health = s.health[i]
                let stats = s.stats[i]
                let latency = s.latency[i]
                result.append(BackendSnapshot(
                    index: i, url: backends[i].url, weight: backends[i].weight,
                    state: health.state, reason: health.reason, since: health.since,
                    requests: stats.requests, successes: stats.successes, failures: stats.failures,
                    retries: stats.retries, inFlight: stats.inFlight,
                    latencyEWMA: latency.peakEWMA?.milliseconds ?? 0,
                    latencyP50: latency.quantile(0.5, at: now)?.milliseconds ?? 0,
                    latencyP99: latency.quantile(0.99, at: now)?.milliseconds ?? 0,
                    ejectionCount: health.ejectionCount,
                    slowStartFactor: health.slowStartFactor(at: now),
                    draining: s.draining[i],
                    histogram: stats.histogram,
                    lastByteHistogram: stats.lastByteHistogram,
                    lastCheck: stats.lastCheck,
                    healthChecks: stats.healthChecks,
                    exclusions: stats.exclusions,
                    responses: stats.responses,
                    readmission: health.state == .healthy ? nil : health.readmission,
                    reportedLoad: s.load[i]))
            }
            return result
        }
        emit(transitions)
        return result
    }

    // MARK: Operations

    /// Takes backend `index` out of rotation (`true`) or puts it back (`false`) without touching
    /// its health state: in-flight requests finish, probes continue. Returns false for a bad index.
    @discardableResult
    public func setDraining(_ index: Int, _ draining: Bool) -> Bool {
        let health = state.withLock { s -> BackendHealthState? in
            guard s.draining.indices.contains(index) else { return nil }
            s.draining[index] = draining
            return s.health[index].state
        }
        guard let health else { return false }
        // The state names of /_lb/stats: DRAINING, and on undrain the state it returns to.
        let url = backends[index].url
        let word = draining ? BackendStateName.draining.rawValue.uppercased() : health.rawValue.uppercased()
        let reason = draining ? "drained by an operator" : "undrained by an operator"
        log(LBLogEvent(level: .notice, category: .admin, message: "Marking \(url) as \(word) (\(reason))",
                       metadata: ["backend": url, "state": draining ? BackendStateName.draining.rawValue : health.rawValue, "reason": reason]))
        return true
    }

    /// Feeds what backend `index` reported about its own load in a health answer (see
    /// ``BackendLoadReport``): over `configuration.backendLoad`'s thresholds, or asking for
    /// `drain`/`down`, it leaves the rotation (logged `OVERLOADED`, `DRAINING`, `DOWN`); it comes
    /// back when its reports recover (logged with the state it returns to). These exclusions
    /// are the backend's own word, so the max-ejected cap does not apply: when every backend
    /// reports overload, requests get 503 with `Retry-After`, as with every backend down.
    public func loadReported(_ index: Int, _ report: BackendLoadReport) {
        let now = clock.now()
        let outcome = state.withLock { s -> (BackendLoadTransition, BackendHealthState)? in
            guard s.load.indices.contains(index), let t = s.load[index].record(report, at: now) else { return nil }
            return (t, s.health[index].state)
        }
        guard let (transition, health) = outcome else { return }
        let url = backends[index].url
        let entered = transition.to?.stateName.rawValue ?? health.rawValue
        log(LBLogEvent(level: transition.to == nil ? .info : .warning, category: .health,
                       message: "Marking \(url) as \(entered.uppercased()) (\(transition.reason))",
                       metadata: ["backend": url, "state": entered, "reason": transition.reason,
                                  "from": transition.from?.stateName.rawValue ?? health.rawValue]))
    }

    /// The index of the backend whose URL is `url`, if any.
    public func index(of url: String) -> Int? { backends.firstIndex { $0.url == url } }

    /// Copies the health, latency, counters and drain flag of every backend whose URL also exists
    /// in `old` (a configuration reload keeps what the balancer learned about unchanged backends).
    /// In-flight counts are not copied: those requests finish against `old`. A backend that is
    /// not in `old` joined a running balancer: it starts in slow start (`warming`), so a new
    /// address or a backend added at run time is not flooded while its caches are cold.
    public func inheritState(from old: BackendCluster) {
        let now = clock.now()
        let oldURLs = Set(old.backends.map(\.url))
        state.withLock { s in
            for (i, b) in backends.enumerated() where !oldURLs.contains(b.url) { s.health[i].beginSlowStart(at: now) }
        }
        copyState(from: old)
    }

    /// Sets the drain flag of backend `index` without logging (the caller says why, e.g. a
    /// backend whose address no longer resolves drains until its requests finish).
    public func setDrainFlag(_ index: Int, _ draining: Bool) {
        state.withLock { s in
            guard s.draining.indices.contains(index) else { return }
            s.draining[index] = draining
        }
    }

    private func copyState(from old: BackendCluster) {
        var oldIndex: [String: Int] = [:]
        for (i, b) in old.backends.enumerated() { oldIndex[b.url] = i }
        let copied = old.state.withLock { o in (o.health, o.latency, o.stats, o.draining, o.load) }
        state.withLock { s in
            for (i, b) in backends.enumerated() {
                guard let j = oldIndex[b.url] else { continue }
                s.health[i] = copied.0[j]
                s.latency[i] = copied.1[j]
                s.stats[i] = copied.2[j]
                s.stats[i].inFlight = 0
                s.draining[i] = copied.3[j]
                s.load[i] = copied.4[j]
            }
            s.passivelyExcluded = s.health.filter { $0.state.isPassiveExclusion }.count
            s.nextDeadline = MonotonicInstant(nanoseconds: 0)  // re-evaluate timers on the next call
        }
    }

    private func emit(_ transitions: [(Int, HealthTransition)]) {
        for (index, transition) in transitions { log(transition.logEvent(url: backends[index].url)) }
    }
}

struct BackendStats: Sendable {
    /// When the backend last went from no attempt in flight to one.
    var busySince = MonotonicInstant.zero
    /// When an attempt on the backend last ended (answer, failure or timeout).
    var lastAnswer = MonotonicInstant.zero
    var requests = 0
    var successes = 0
    var failures = FailureCounts()
    var retries = 0
    var inFlight = 0
    var histogram = LatencyHistogram()
    var lastByteHistogram = LatencyHistogram()
    var lastCheck: HealthCheckRecord?
    var healthChecks = HealthCheckTally()
    var exclusions = ExclusionTally()
    var responses = StatusClassCounts()
    /// Whether the "no health endpoint" advice was logged for this backend.
    var noHealthEndpointNoticed = false
}

struct ClusterState: Sendable {
    var health: [HealthStateMachine]
    var latency: [LatencyTracker]
    var stats: [BackendStats]
    var weights: [Int]
    var draining: [Bool]
    /// Reported load per backend (agent header and CPU/memory against the thresholds).
    var load: [BackendLoadGate]
    var selector: any BackendSelector
    var random: any RandomNumberGenerator & Sendable
    var scratch: [BackendContext]
    /// Backends currently ejected, slow or probing (for the max-ejected cap).
    var passivelyExcluded = 0
    /// No time-based transition can happen before this instant.
    var nextDeadline = MonotonicInstant(nanoseconds: .max)
    /// When any backend last ended an attempt.
    var lastAnswerAny = MonotonicInstant.zero

    /// The hung-backend rule: backend `i` has had attempts outstanding and ended none for longer
    /// than `max(floor, factor x its latency EWMA)`, while another backend did end one after that
    /// point (so it is not the whole system, or us, that stalled). Cheap when nothing is stalled:
    /// two comparisons before any latency is read.
    mutating func hungTransition(_ i: Int, at now: MonotonicInstant, configuration: HangDetection,
                                 allowExclusion: Bool) -> HealthTransition? {
        guard configuration.factor > 0 else { return nil }
        let stalledSince = max(stats[i].busySince, stats[i].lastAnswer)
        let stalled = now - stalledSince
        guard stalled > configuration.floor else { return nil }
        let typical = Duration.nanoseconds(Int64(min(latency[i].ewma(at: now), 9e18)))
        let threshold = max(configuration.floor, typical * configuration.factor)
        guard stalled > threshold, lastAnswerAny > stalledSince + threshold else { return nil }
        let reason = "hung: \(stats[i].inFlight) requests outstanding, none answered for \(formatDuration(stalled)) while other backends answer"
        return health[i].markHung(reason: reason, at: now, allowExclusion: allowExclusion)
    }

    mutating func apply(_ transition: HealthTransition, to index: Int) {
        if transition.to == .healthy && transition.from != .healthy {
            // Re-admitted on fresh evidence (fast probes or a good trial): the EWMA must not keep
            // the slowness that got it excluded, or a latency-aware selector would keep avoiding it
            // and it would never receive the traffic that could lower the EWMA again.
            latency[index].resetPeakToRecent()
        }
        if let cause = transition.cause { stats[index].exclusions.add(cause) }
        if transition.from.isPassiveExclusion { passivelyExcluded -= 1 }
        if transition.to.isPassiveExclusion { passivelyExcluded += 1 }
        if let deadline = health[index].nextDeadline, deadline < nextDeadline { nextDeadline = deadline }
    }

    mutating func refresh(at now: MonotonicInstant, into transitions: inout [(Int, HealthTransition)]) {
        var next = MonotonicInstant(nanoseconds: .max)
        for i in 0..<health.count {
            if let transition = health[i].tick(at: now) {
                apply(transition, to: i)
                transitions.append((i, transition))
            }
            if let deadline = health[i].nextDeadline, deadline < next { next = deadline }
        }
        nextDeadline = next
    }

    func retryAfter(at now: MonotonicInstant, excluding: BackendIndexSet) -> Duration {
        var wait = Duration.seconds(1)
        var first = true
        for i in 0..<health.count {
            let candidate = excluding.contains(i) ? Duration.zero : health[i].timeUntilEligible(at: now)
            if first || candidate < wait { wait = candidate }
            first = false
        }
        // Whole seconds (Retry-After is in seconds), rounded up, at least one.
        let ns = max(wait.nanosecondsClamped, 0)
        let seconds = max(1, ns / 1_000_000_000 + (ns % 1_000_000_000 == 0 ? 0 : 1))
        return .seconds(seconds)
    }
}

struct RetryState: Sendable {
    var budget: RetryBudget
    var granted = InlineArray<5, Int>(repeating: 0)
    var denied = InlineArray<5, Int>(repeating: 0)
}
