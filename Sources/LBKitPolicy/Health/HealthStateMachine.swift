/// The health of one backend: a pure state machine fed with attempt outcomes, probe results and
/// time. It never logs; every method that may change state returns the ``HealthTransition``
/// (at most one per call), and ``BackendCluster`` logs each exactly once.
///
/// Rules (defaults in parentheses):
/// * **Passive ejection** (healthy → ejected): `maxFails` (3) consecutive failures, or a failure
///   rate of at least `failureRateThreshold` (50%) over the last `failureRateWindow` (10)
///   attempts once `failureRateMinimumRequests` (6) are in the window, so a backend failing every
///   other request is caught. The n-th ejection in a row lasts `min(n x baseEjection, maxEjection)`
///   (5 s, 10 s, ... 60 s); the count is forgiven after `maxEjection` of uninterrupted health.
///   The caller passes `allowExclusion: false` when the max-ejected cap is reached.
/// * **Half-open** (ejected → probing): when the ejection time is over, one trial request at a
///   time; success → healthy, failure → ejected again, for longer.
/// * **Active checks**: `fall` (3) failed checks in a row → down from any state (uncapped);
///   `rise` (2) passing checks in a row → healthy from down, and from an ejection that checks can
///   judge (refused or reset connections).
/// * **Slow** (only with `maxDelay`): healthy → slow when the median of the last three latency
///   samples *of one source* exceeds `maxDelay` (two slow samples in a row suffice; one outlier
///   never does). Real requests and health checks are judged apart: a fast `/health` does not
///   hide a slow real route, and the other way round.
/// * **Re-admission is judged by the traffic that excluded** (``ReadmissionEvidence``). A backend
///   excluded by health checks (a slow or failing health path, connection failures) comes back
///   on `rise` passing checks, latency under `0.8 x maxDelay` (hysteresis). A backend excluded by
///   real requests that checks cannot judge (slow answers, a hang, 5xx, a failure rate) comes
///   back only through trial requests: after the exclusion time, one request at a time; for
///   latency `rise` consecutive trials under `0.8 x maxDelay`. Each failed or slow trial excludes
///   it again for longer, doubling for latency verdicts (``ExclusionBackoff``: 5 s, 10 s, 20 s ...
///   60 s). Checks may still take such a backend down; when they pass again it goes to probing
///   (a trial), never straight to healthy.
/// * **Slow start**: after every re-admission the backend's share ramps linearly from 10% to
///   100% over `slowStart` (10 s).
///
/// ```swift
/// let clock = ManualClock()
/// var machine = HealthStateMachine(policy: HealthPolicy(), now: clock.now())
/// for _ in 0..<3 {
///     if let t = machine.attemptFinished(failure: .connect, sample: nil, recentLatency: nil, at: clock.now(), allowExclusion: true) {
///         print(t.logLine(url: "http://127.0.0.1:5002"))  // ... UNHEALTHY (3 consecutive connection failures)
///     }
/// }
/// ```
public struct HealthStateMachine: Sendable {
    /// The thresholds applied.
    public let policy: HealthPolicy
    /// The current state.
    public private(set) var state: BackendHealthState = .healthy
    /// Why the backend is in its state (the reason of the last transition).
    public private(set) var reason: String = "initial state"
    /// When the backend entered its state.
    public private(set) var since: MonotonicInstant
    /// How many times the backend was excluded passively (ejected or slow), in total.
    public private(set) var ejectionCount = 0
    /// End of the current exclusion (ejected, or slow awaiting a trial), if any.
    public private(set) var excludedUntil: MonotonicInstant?
    /// Whether a half-open trial request is outstanding.
    public private(set) var trialInFlight = false
    /// What may bring the backend back from its current exclusion (see ``ReadmissionEvidence``):
    /// health checks, or only trial requests. Kept while checks take it down, so passing checks
    /// then lead to a trial, not straight back to healthy.
    public private(set) var readmission: ReadmissionEvidence = .healthChecks
    /// The verdict behind the current exclusion (nil in service).
    public private(set) var exclusionCause: ExclusionCause?

    private var multiplier = 0
    private var exclusionDuration: Duration = .zero
    private var exponentialBackoff = false
    private var consecutiveFailures = 0
    private var streakKinds: UInt8 = 0
    private var outcomeBits: UInt64 = 0
    private var outcomeCount = 0
    private(set) var probeSuccesses = 0
    private var probeFailures = 0
    /// Consecutive checks under `0.8 x maxDelay`.
    private(set) var fastChecks = 0
    /// Consecutive trial requests under `0.8 x maxDelay`.
    private var fastTrials = 0
    private var probingForLatency = false
    /// Whether the trial owed after a latency verdict is a latency trial (kept through `down`).
    private var latencyVerdict = false
    private(set) var trialStartedAt: MonotonicInstant = .zero
    private(set) var recoveredAt: MonotonicInstant?
    private var trafficLatency = RecentMedian()
    private var probeLatency = RecentMedian()

    /// Creates a healthy backend (no slow start at boot).
    public init(policy: HealthPolicy, now: MonotonicInstant) {
        self.policy = policy
        self.since = now
    }

    /// Starts slow start now (a backend that joined a running balancer: a reload, a new DNS
    /// address, the admin API), as after a re-admission; no effect when `slowStart` is zero or the
    /// backend is not healthy.
    public mutating func beginSlowStart(at now: MonotonicInstant) {
        guard state == .healthy, policy.slowStart > .zero else { return }
        recoveredAt = now
    }

    // MARK: Events

    /// Applies the passage of time: ends exclusions whose time is over (→ probing) and forgets a
    /// trial request that never reported back after `maxEjection`.
    public mutating func tick(at now: MonotonicInstant) -> HealthTransition? {
        switch state {
        case .ejected:
            guard let until = excludedUntil, now >= until else { return nil }
            return startProbing(forLatency: false, reason: timeElapsedReason(latency: false), at: now)
        case .slow:
            guard let until = excludedUntil, now >= until else { return nil }
            return startProbing(forLatency: true, reason: timeElapsedReason(latency: true), at: now)
        case .probing:
            if trialInFlight && now >= trialStartedAt + policy.maxEjection { trialInFlight = false }
            return nil
        case .healthy, .down:
            return nil
        }
    }

    /// Notes that a request was sent to the backend while probing (its half-open trial).
    public mutating func trialStarted(at now: MonotonicInstant) {
        guard state == .probing else { return }
        trialInFlight = true
        trialStartedAt = now
    }

    /// Ejects a backend that holds requests without answering any while other backends answer
    /// (a paused process, a deadlocked worker pool). A paused process still completes TCP
    /// handshakes from its listen backlog, so probes cannot tell it is back: it returns only
    /// through the ejection timer (doubling, like latency verdicts) and a successful trial
    /// request. nil when not healthy (a probing backend's trial is judged by its own outcome).
    public mutating func markHung(reason: String, at now: MonotonicInstant, allowExclusion: Bool) -> HealthTransition? {
        guard state == .healthy, allowExclusion else { return nil }
        return exclude(to: .ejected, reason: reason, cause: .hung, at: now, readmission: .trialRequests, exponential: true)
    }

    /// Forgets a trial that was started by choosing this backend but never sent (the retry
    /// budget or the request deadline refused the attempt), so the next request can be the trial
    /// instead of the backend waiting out the maximum ejection time.
    public mutating func trialAbandoned() {
        guard state == .probing else { return }
        trialInFlight = false
    }

    /// Feeds the outcome of a real request.
    /// - Parameters:
    ///   - failure: `nil` on success.
    ///   - sample: the latency sample just recorded for the backend, if one was.
    ///   - recentLatency: the backend's ``LatencyTracker/recentLatency``, which mixes requests and
    ///     probes. Not consulted: the machine keeps the median of each source itself, so slowness
    ///     of real requests is judged on real requests only. Kept for source compatibility.
    ///   - allowExclusion: whether the max-ejected cap allows excluding one more backend.
    public mutating func attemptFinished(
        failure: FailureKind?, sample: Duration?, recentLatency: Duration?, at now: MonotonicInstant, allowExclusion: Bool
    ) -> HealthTransition? {
        switch state {
        case .healthy:
            if let sample { trafficLatency.record(sample) }
            let windowMask: UInt64 = policy.failureRateWindow == 64 ? .max : (1 << UInt64(policy.failureRateWindow)) - 1
            outcomeBits = ((outcomeBits << 1) | (failure == nil ? 0 : 1)) & windowMask
            outcomeCount = min(outcomeCount + 1, policy.failureRateWindow)
            if let failure {
                consecutiveFailures += 1
                streakKinds |= failure.bit
                if allowExclusion {
                    if consecutiveFailures >= policy.maxFails {
                        // Refused or reset connections: a passing check shows the backend is back.
                        // 5xx answers and timeouts (the request was sent, no answer in time) are
                        // about the route the requests took, which a check does not exercise; a
                        // timeout is a latency verdict, so its trials back off exponentially.
                        let connectivityOnly = streakKinds & (FailureKind.status5xx.bit | FailureKind.timeout.bit) == 0
                        return exclude(to: .ejected, reason: "\(consecutiveFailures) consecutive \(streakPhrase)",
                                       cause: .consecutiveFailures, at: now,
                                       readmission: connectivityOnly ? .healthChecks : .trialRequests,
                                       exponential: streakKinds & FailureKind.timeout.bit != 0)
                    }
                    let failures = outcomeBits.nonzeroBitCount
                    if outcomeCount >= policy.failureRateMinimumRequests
                        && failures * 100 >= policy.failureRateThreshold * outcomeCount {
                        let percent = (failures * 100 + outcomeCount / 2) / outcomeCount
                        return exclude(to: .ejected, reason: "failure rate \(percent)% over last \(outcomeCount) requests",
                                       cause: .failureRate, at: now, readmission: .trialRequests, exponential: false)
                    }
                }
            } else {
                consecutiveFailures = 0
                streakKinds = 0
            }
            if sample != nil, allowExclusion, let reason = slowReason(trafficLatency.value) {
                return exclude(to: .slow, reason: reason, cause: .latency, at: now, readmission: .trialRequests, exponential: true)
            }
            return nil
        case .probing:
            trialInFlight = false
            if let failure {
                if probingForLatency && failure == .timeout {
                    let timedOut = sample.map { " after \(formatDuration($0))" } ?? ""
                    return exclude(to: .slow, reason: "trial request timed out\(timedOut)", cause: .trialFailed, at: now,
                                   readmission: .trialRequests, exponential: true)
                }
                let byChecks = failure != .status5xx && readmission == .healthChecks
                return exclude(to: .ejected, reason: "trial request failed: \(failure.phrase)", cause: .trialFailed, at: now,
                               readmission: byChecks ? .healthChecks : .trialRequests, exponential: exponentialBackoff)
            }
            guard probingForLatency else {
                if let sample { trafficLatency.record(sample) }
                return recover(reason: "trial request succeeded", stillSlow: trafficLatency.value, at: now, allowExclusion: true)
            }
            guard let maxDelay = policy.maxDelay, let sample else { return nil }
            if sample < maxDelay * 0.8 {
                fastTrials += 1
                if fastTrials >= policy.rise {
                    let what = fastTrials == 1 ? "trial request" : "consecutive trial requests"
                    return recover(reason: "\(fastTrials) \(what) under \(formatDuration(maxDelay * 0.8))",
                                   stillSlow: nil, at: now, allowExclusion: true)
                }
            } else if sample > maxDelay {
                return exclude(to: .slow, reason: "trial request: latency \(formatDuration(sample)) > max-delay \(formatDuration(maxDelay))",
                               cause: .trialFailed, at: now, readmission: .trialRequests, exponential: true)
            } else {
                fastTrials = 0
            }
            return nil
        case .ejected, .down, .slow:
            return nil  // a straggler started before the exclusion: no verdict
        }
    }

    /// Feeds the result of an active health check.
    /// - Parameters:
    ///   - success: whether the check passed.
    ///   - sample: the latency sample just recorded for the backend, if one was.
    ///   - recentLatency: the backend's ``LatencyTracker/recentLatency``; not consulted (checks
    ///     are judged on the median of the last three checks). Kept for source compatibility.
    ///   - allowExclusion: whether the max-ejected cap allows excluding one more backend.
    ///   - failureCause: why a failing check failed (`status 500`, `refused`, `timeout after
    ///     2000 ms`), named in the reason when the backend is marked down:
    ///     `3 failed checks: status 500`.
    public mutating func probeFinished(
        success: Bool, sample: Duration?, recentLatency: Duration?, at now: MonotonicInstant, allowExclusion: Bool,
        failureCause: String? = nil
    ) -> HealthTransition? {
        if let sample { probeLatency.record(sample) }
        if success {
            probeSuccesses += 1
            probeFailures = 0
            if let maxDelay = policy.maxDelay, let sample, sample < maxDelay * 0.8 { fastChecks += 1 } else { fastChecks = 0 }
        } else {
            probeFailures += 1
            probeSuccesses = 0
            fastChecks = 0
        }
        if state != .down && probeFailures >= policy.fall {
            return markDown(at: now, cause: failureCause)
        }
        switch state {
        case .healthy:
            if sample != nil, allowExclusion, let reason = slowReason(probeLatency.value, checks: true) {
                return exclude(to: .slow, reason: reason, cause: .probeLatency, at: now, readmission: .healthChecks, exponential: false)
            }
            return nil
        case .slow where readmission == .healthChecks, .probing where probingForLatency && readmission == .healthChecks:
            guard let maxDelay = policy.maxDelay, fastChecks >= policy.rise else { return nil }
            return recover(reason: "\(fastChecks) consecutive checks under \(formatDuration(maxDelay * 0.8))",
                           stillSlow: nil, at: now, allowExclusion: true)
        case .slow:
            return nil  // real requests were slow: only trial requests re-admit
        case .probing where probingForLatency:
            return nil  // the same, during its trials
        case .down where readmission == .trialRequests:
            // Checks took down a backend that real requests had excluded: they show it is
            // reachable again, not that the route that failed or was slow works. A trial decides.
            guard probeSuccesses >= policy.rise else { return nil }
            return startProbing(
                forLatency: latencyVerdict,
                reason: "\(probeSuccesses) successful checks; a trial request decides, since real requests excluded it",
                at: now)
        case .ejected, .probing, .down:
            guard probeSuccesses >= policy.rise, state == .down || readmission == .healthChecks else { return nil }
            return recover(
                reason: "\(probeSuccesses) successful checks", stillSlow: probeLatency.value, at: now,
                allowExclusion: state != .down || allowExclusion)
        }
    }

    // MARK: Transitions

    private var streakPhrase: String {
        switch streakKinds {
        case 1, 2, 3: "connection failures"
        case 4: "timeouts"
        case 8: "5xx responses"
        default: "failures"
        }
    }

    /// `latency 400 ms > max-delay 200 ms` for real requests, `check latency ...` for health
    /// checks: the log line says which traffic was slow (and so what may re-admit it).
    private func slowReason(_ recentLatency: Duration?, checks: Bool = false) -> String? {
        guard let maxDelay = policy.maxDelay, let recent = recentLatency, recent > maxDelay else { return nil }
        return "\(checks ? "check " : "")latency \(formatDuration(recent)) > max-delay \(formatDuration(maxDelay))"
    }

    private func timeElapsedReason(latency: Bool) -> String {
        "\(latency ? "exclusion" : "ejection") time \(formatDuration(exclusionDuration)) elapsed, sending a trial request"
    }

    private mutating func resetEvidence() {
        consecutiveFailures = 0
        streakKinds = 0
        outcomeBits = 0
        outcomeCount = 0
        trialInFlight = false
    }

    private mutating func move(to newState: BackendHealthState, reason: String, at now: MonotonicInstant,
                               cause: ExclusionCause? = nil) -> HealthTransition {
        let transition = HealthTransition(from: state, to: newState, reason: reason, at: now, cause: cause,
                                          warming: newState == .healthy && recoveredAt != nil)
        state = newState
        self.reason = reason
        since = now
        return transition
    }

    private mutating func exclude(to newState: BackendHealthState, reason: String, cause: ExclusionCause,
                                  at now: MonotonicInstant, readmission: ReadmissionEvidence,
                                  exponential: Bool) -> HealthTransition {
        self.readmission = readmission
        exclusionCause = cause
        exponentialBackoff = exponential
        latencyVerdict = newState == .slow
        if state == .healthy && now - since >= policy.maxEjection { multiplier = 0 }
        multiplier += 1
        ejectionCount += 1
        exclusionDuration = ExclusionBackoff.duration(step: multiplier, exponential: exponential,
                                                      base: policy.baseEjection, max: policy.maxEjection)
        // Slow by checks under active checks waits for fast checks instead of a timer; every
        // other exclusion waits for its time, then a trial.
        let waitsForChecks = newState == .slow && readmission == .healthChecks && policy.activeChecks
        excludedUntil = waitsForChecks ? nil : now + exclusionDuration
        resetEvidence()
        trafficLatency.reset()
        probeSuccesses = 0
        fastChecks = 0
        fastTrials = 0
        probingForLatency = false
        return move(to: newState, reason: reason, at: now, cause: cause)
    }

    private mutating func startProbing(forLatency: Bool, reason: String, at now: MonotonicInstant) -> HealthTransition {
        probingForLatency = forLatency
        excludedUntil = nil
        fastTrials = 0
        resetEvidence()
        return move(to: .probing, reason: reason, at: now)
    }

    private mutating func markDown(at now: MonotonicInstant, cause: String?) -> HealthTransition {
        // A healthy backend marked down comes back on checks; an excluded one keeps what its
        // exclusion needs (a trial after a verdict of real requests).
        if state == .healthy { readmission = .healthChecks; latencyVerdict = false }
        exclusionCause = .healthChecks
        excludedUntil = nil
        probingForLatency = false
        resetEvidence()
        probeSuccesses = 0
        fastChecks = 0
        fastTrials = 0
        let reason = "\(probeFailures) failed checks" + (cause.map { ": \($0)" } ?? "")
        return move(to: .down, reason: reason, at: now, cause: .healthChecks)
    }

    /// Back to healthy, or to slow instead when `stillSlow` (the median of the evidence that
    /// re-admits) exceeds max-delay.
    private mutating func recover(
        reason: String, stillSlow: Duration?, at now: MonotonicInstant, allowExclusion: Bool
    ) -> HealthTransition {
        let byChecks = readmission == .healthChecks || state == .down
        if allowExclusion, let slow = slowReason(stillSlow, checks: byChecks), state != .slow {
            return exclude(to: .slow, reason: slow, cause: byChecks ? .probeLatency : .latency, at: now,
                           readmission: byChecks ? .healthChecks : .trialRequests, exponential: !byChecks)
        }
        excludedUntil = nil
        probingForLatency = false
        latencyVerdict = false
        readmission = .healthChecks
        exclusionCause = nil
        resetEvidence()
        fastChecks = 0
        fastTrials = 0
        recoveredAt = policy.slowStart > .zero ? now : nil
        return move(to: .healthy, reason: reason, at: now)
    }
}
