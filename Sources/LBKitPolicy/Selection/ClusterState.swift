// The per-backend state BackendCluster keeps behind its locks (counters, health, latency,
// selector scratch, retry counters) and the rules applied while holding them; the public
// cluster API is in BackendCluster.swift and its extensions.

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
    /// The retry budget and the retries granted and denied. Under the same lock as the rest: a
    /// request's deposit is made with its first choice, in one lock round trip.
    var retry: RetryState

    /// The hung-backend rule: backend `i` has had attempts outstanding and ended none for longer
    /// than `max(floor, factor x its latency EWMA)`, while another backend did end one after that
    /// point (so it is not the whole system, or us, that stalled). Cheap when nothing is stalled:
    /// two comparisons before any latency is read.
    /// How long backend `i` has gone without an answer while busy, in nanoseconds (0 when
    /// `now` is not past the later of its busy start and its last answer). The cheap first test
    /// of ``hungTransition(_:at:configuration:allowExclusion:)``: no stall past the floor, no hang.
    @inline(__always)
    func stalledNanoseconds(_ i: Int, at now: MonotonicInstant) -> UInt64 {
        let since = max(stats[i].busySince.nanoseconds, stats[i].lastAnswer.nanoseconds)
        return now.nanoseconds > since ? now.nanoseconds - since : 0
    }

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
