/// Why a backend left the rotation: the `reason` label of `lb_backend_ejections_total` and
/// ``BackendSnapshot/exclusions``. One exclusion counts once, under the verdict that caused it.
public enum ExclusionCause: String, Sendable, CaseIterable, Hashable {
    /// `maxFails` consecutive failed requests (connection failures, resets, timeouts, 5xx).
    case consecutiveFailures = "consecutive_failures"
    /// Too many failed requests among the recent ones (a backend failing every other request).
    case failureRate = "failure_rate"
    /// Real requests were slower than max-delay.
    case latency
    /// Health checks were slower than max-delay (no request paid for it).
    case probeLatency = "probe_latency"
    /// Requests outstanding and none answered while other backends answered (``HangDetection``).
    case hung
    /// `fall` consecutive failed health checks (state `down`).
    case healthChecks = "health_checks"
    /// A half-open trial request failed or was slow again.
    case trialFailed = "trial_failed"

    var slot: Int {
        switch self {
        case .consecutiveFailures: 0
        case .failureRate: 1
        case .latency: 2
        case .probeLatency: 3
        case .hung: 4
        case .healthChecks: 5
        case .trialFailed: 6
        }
    }
}

/// Exclusions of one backend so far, by ``ExclusionCause``.
public struct ExclusionTally: Sendable, Equatable {
    private var counts = InlineArray<7, Int>(repeating: 0)

    /// An empty tally.
    public init() {}

    /// How many exclusions had `cause`.
    public subscript(cause: ExclusionCause) -> Int { counts[cause.slot] }

    /// Every exclusion counted.
    public var total: Int {
        var sum = 0
        for i in counts.indices { sum += counts[i] }
        return sum
    }

    mutating func add(_ cause: ExclusionCause) { counts[cause.slot] += 1 }

    /// Whether both tallies hold the same counts.
    public static func == (lhs: Self, rhs: Self) -> Bool {
        for i in lhs.counts.indices where lhs.counts[i] != rhs.counts[i] { return false }
        return true
    }
}

/// Who may bring an excluded backend back: the evidence must come from the kind of traffic that
/// excluded it.
///
/// A backend whose real requests were slow (or hung, or failed with 5xx) says nothing about its
/// health path: `/health` may answer in a millisecond while `POST /orders` takes five seconds.
/// Letting fast probes re-admit it makes it flap (`SLOW` → `HEALTHY` → `SLOW` ...), and every
/// re-admission costs clients slow answers. So such a backend returns only through **trial
/// requests**: real requests, one at a time, after an exclusion time that doubles after each
/// failed trial (``ExclusionBackoff``). The balancer races a replayable trial against a healthy
/// backend so it costs the client nothing. Probes may still take any backend *down*, and bring
/// back what probes alone excluded (connection failures, a slow or failing health path).
public enum ReadmissionEvidence: String, Sendable, Hashable {
    /// Passing (and, for latency, fast) health checks re-admit; without active checks a trial does.
    case healthChecks = "health_checks"
    /// Only trial requests re-admit; health checks never do on their own.
    case trialRequests = "trial_requests"
}

/// The exclusion time before the next trial request.
///
/// Failure ejections grow linearly, Envoy's rule: the n-th ejection in a row lasts
/// `min(n x base, max)` (5 s, 10 s, 15 s ... 60 s). Latency verdicts (slow real requests, a hung
/// backend) grow exponentially: `min(base x 2^(n-1), max)` (5 s, 10 s, 20 s, 40 s, 60 s). A
/// backend slow on its real route costs one client-visible slow answer per trial of a
/// non-replayable request, so trials of a persistently slow backend must thin out quickly;
/// an outage of a failing backend is usually short, so its trials stay frequent.
///
/// ```swift
/// ExclusionBackoff.duration(step: 3, exponential: true, base: .seconds(5), max: .seconds(60))  // 20 s
/// ```
public enum ExclusionBackoff {
    /// The exclusion time of the `step`-th consecutive exclusion (1-based).
    public static func duration(step: Int, exponential: Bool, base: Duration, max maximum: Duration) -> Duration {
        let n = Swift.max(1, step)
        guard exponential else { return min(base * n, maximum) }
        var d = base
        var i = 1
        while i < n && d < maximum {
            d = d * 2
            i += 1
        }
        return min(d, maximum)
    }
}

/// The median of the last three latency samples of one source (real requests or probes): it
/// exceeds a threshold only when two of the last three samples do. With two samples, the smaller
/// one; with fewer, none.
struct RecentMedian: Sendable {
    private var a: Int64 = 0
    private var b: Int64 = 0
    private var c: Int64 = 0
    private var count = 0

    mutating func record(_ sample: Duration) {
        a = b
        b = c
        c = sample.nanosecondsClamped
        count = min(count + 1, 3)
    }

    mutating func reset() { count = 0 }

    var value: Duration? {
        switch count {
        case 0, 1: return nil
        case 2: return .nanoseconds(min(b, c))
        default: return .nanoseconds(max(min(a, b), min(max(a, b), c)))
        }
    }
}
