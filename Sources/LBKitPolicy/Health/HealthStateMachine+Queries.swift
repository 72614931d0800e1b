// HealthStateMachine's read-only questions (eligibility, slow-start share, next deadline,
// time until eligible), which change nothing; the rules that change state stay in
// HealthStateMachine.swift with the stored properties.

extension HealthStateMachine {
    /// Whether passing active checks may end the current exclusion. True for connectivity
    /// ejections (refused, reset: a passing probe is evidence the backend is back) and
    /// exclusions by checks; false for 5xx, timeout, failure-rate, latency and hang verdicts of
    /// real requests, where `/health` answering says nothing about the route that failed or was slow
    /// (an every-other-request 500 backend, or one slow on `POST /orders` and fast on `/health`,
    /// would otherwise flap straight back). Those wait for the exclusion time and trial requests.
    public var probesCanReadmit: Bool { readmission == .healthChecks }

    // MARK: Queries

    /// Whether the backend may receive a request now: healthy, or probing without an
    /// outstanding trial.
    public func isEligible(at now: MonotonicInstant) -> Bool {
        switch state {
        case .healthy: true
        case .probing: !trialInFlight
        case .ejected, .down, .slow: false
        }
    }

    /// The slow-start factor in `0.1...1`: 1 in normal service; after a re-admission
    /// `0.1 + 0.9 x elapsed / slowStart` until `slowStart` has elapsed.
    public func slowStartFactor(at now: MonotonicInstant) -> Double {
        Self.slowStartFactor(state: state, recoveredAt: recoveredAt, slowStart: policy.slowStart, at: now)
    }

    /// ``slowStartFactor(at:)`` from the three fields it reads. The cluster passes them from its
    /// array of machines field by field: calling the method on an array element made the
    /// compiler copy the whole machine (retains and all) on every choice during slow start.
    @inline(__always)
    static func slowStartFactor(state: BackendHealthState, recoveredAt: MonotonicInstant?, slowStart: Duration,
                                at now: MonotonicInstant) -> Double {
        guard state == .healthy, let recoveredAt, slowStart > .zero else { return 1 }
        let elapsed = now - recoveredAt
        if elapsed >= slowStart { return 1 }
        if elapsed <= .zero { return 0.1 }
        let fraction = Double(elapsed.nanosecondsClamped) / Double(slowStart.nanosecondsClamped)
        return 0.1 + 0.9 * fraction
    }

    /// The next instant at which ``tick(at:)`` may change something, if any.
    public var nextDeadline: MonotonicInstant? {
        switch state {
        case .ejected, .slow: excludedUntil
        case .probing: trialInFlight ? trialStartedAt + policy.maxEjection : nil
        case .healthy, .down: nil
        }
    }

    /// An estimate of how long until the backend can take requests again (zero when it can now).
    public func timeUntilEligible(at now: MonotonicInstant) -> Duration {
        switch state {
        case .healthy: return .zero
        case .probing: return trialInFlight ? .seconds(1) : .zero
        case .ejected:
            var wait = excludedUntil.map { $0 - now } ?? policy.maxEjection
            if policy.activeChecks && probesCanReadmit {
                wait = min(wait, policy.activeCheckInterval * max(1, policy.rise - probeSuccesses))
            }
            return max(wait, .zero)
        case .slow:
            if let excludedUntil { return max(excludedUntil - now, .zero) }
            return policy.activeCheckInterval * max(1, policy.rise - fastChecks)
        case .down:
            return policy.activeCheckInterval * max(1, policy.rise - probeSuccesses)
        }
    }
}
