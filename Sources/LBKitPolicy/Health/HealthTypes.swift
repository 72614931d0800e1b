// The values around HealthStateMachine: the states it moves between, the failure kinds it is
// fed, the transitions it returns (with their log lines) and the policy it applies. Kept apart
// from the machine's rules (HealthStateMachine.swift) so that file reads as transitions only.

/// The health of one backend, as seen by ``BackendCluster``.
public enum BackendHealthState: String, Sendable, CaseIterable, Hashable {
    /// In service.
    case healthy
    /// Passively ejected: real traffic failed too often (consecutive failures or failure rate).
    case ejected
    /// Actively marked down: `fall` consecutive health checks failed. Not subject to the
    /// max-ejected cap; only `rise` passing checks bring it back.
    case down
    /// Excluded because its latency exceeds the configured max-delay.
    case slow
    /// Half-open: its exclusion time is over and it gets one trial request at a time;
    /// success re-admits it, failure excludes it again for longer.
    case probing

    /// The word used in `[HEALTH]` log lines when a healthy backend enters this state:
    /// `HEALTHY`, `UNHEALTHY` (ejected or down), `SLOW` or `PROBING`. A transition between two
    /// excluded states uses the state's own name instead (see ``HealthTransition/logWord``), so
    /// one outage logs one `UNHEALTHY` line.
    public var logLabel: String {
        switch self {
        case .healthy: "HEALTHY"
        case .ejected, .down: "UNHEALTHY"
        case .slow: "SLOW"
        case .probing: "PROBING"
        }
    }

    /// Whether this state counts against the max-ejected-percent cap (everything but
    /// `healthy` and the actively detected `down`).
    public var isPassiveExclusion: Bool {
        switch self {
        case .ejected, .slow, .probing: true
        case .healthy, .down: false
        }
    }
}

/// How an attempt on a backend failed. Every kind counts as a failure for health; a timeout
/// also records the timeout as a latency sample.
public enum FailureKind: String, Sendable, CaseIterable, Hashable {
    /// The TCP connection could not be established (refused, unreachable, connect timeout).
    case connect
    /// The connection broke before a complete response (reset, EOF, malformed response).
    case reset
    /// The backend did not answer within the request timeout.
    case timeout
    /// The backend answered with a 5xx status.
    case status5xx

    var bit: UInt8 {
        switch self {
        case .connect: 1
        case .reset: 2
        case .timeout: 4
        case .status5xx: 8
        }
    }

    var phrase: String {
        switch self {
        case .connect: "connection failure"
        case .reset: "connection reset"
        case .timeout: "timeout"
        case .status5xx: "5xx response"
        }
    }
}

/// One change of a backend's ``BackendHealthState``.
public struct HealthTransition: Sendable, Equatable {
    /// The state left.
    public var from: BackendHealthState
    /// The state entered.
    public var to: BackendHealthState
    /// Why, as it appears in parentheses in the log line.
    public var reason: String
    /// When.
    public var at: MonotonicInstant
    /// The verdict that excluded the backend, when this transition takes it out of rotation (or
    /// keeps it out after a failed trial); nil for re-admissions and trials starting.
    public var cause: ExclusionCause? = nil
    /// Whether a re-admission starts a slow-start ramp (the backend then shows as `warming`).
    public var warming = false

    /// The state name operators see after this transition (`/_lb/stats`, `lb_backend_state`):
    /// `warming` for a re-admission with slow start, else the state entered.
    public var stateName: BackendStateName {
        switch to {
        case .healthy: warming ? .warming : .healthy
        case .probing: .probing
        case .slow: .slow
        case .ejected: .ejected
        case .down: .down
        }
    }

    /// The log line, e.g.
    /// `[HEALTH] Marking http://127.0.0.1:5002 as UNHEALTHY (3 consecutive connection failures)`.
    public func logLine(url: String) -> String { logEvent(url: url).line }

    /// The word of the log line. Leaving service for `ejected` or `down` is `UNHEALTHY` (once
    /// per outage); a later move between excluded states names the state entered (`DOWN` when
    /// an ejected backend also fails its checks, `EJECTED` when a trial request fails), so one
    /// outage never logs two `UNHEALTHY` lines. Otherwise the state's name: `HEALTHY`, `SLOW`,
    /// `PROBING`.
    public var logWord: String {
        switch to {
        case .ejected where from != .healthy, .down where from != .healthy: to.rawValue.uppercased()
        default: to.logLabel
        }
    }

    /// The transition as a log event: `warning` when the backend leaves rotation, `info` when it
    /// comes back; metadata `backend`, `state` (the state name entered, as in `/_lb/stats`:
    /// `warming` for a re-admission with slow start), `from`, `reason` and, for exclusions,
    /// `cause` (the `reason` label of `lb_backend_ejections_total`).
    public func logEvent(url: String) -> LBLogEvent {
        let level: LogLevel = (to == .healthy || to == .probing) ? .info : .warning
        var metadata = ["backend": url, "state": stateName.rawValue, "from": from.rawValue, "reason": reason]
        if let cause { metadata["cause"] = cause.rawValue }
        return LBLogEvent(level: level, category: .health, message: "Marking \(url) as \(logWord) (\(reason))",
                        metadata: metadata)
    }
}

/// The thresholds a ``HealthStateMachine`` applies (see ``ClusterConfiguration`` for the
/// meaning of each). The initialiser clamps nonsensical values instead of trapping.
public struct HealthPolicy: Sendable, Equatable {
    /// Consecutive failures that eject (at least 1).
    public var maxFails: Int
    /// Attempts in the failure-rate window (1...64).
    public var failureRateWindow: Int
    /// Attempts needed in the window before the rate is judged (1...window).
    public var failureRateMinimumRequests: Int
    /// Failure rate that ejects, in percent (1...100).
    public var failureRateThreshold: Int
    /// First ejection duration; the n-th consecutive one lasts n times as long.
    public var baseEjection: Duration
    /// Longest ejection.
    public var maxEjection: Duration
    /// Whether a health-check task calls ``BackendCluster/probeFinished(_:success:latency:)``.
    public var activeChecks: Bool
    /// Consecutive passing checks that re-admit.
    public var rise: Int
    /// Consecutive failing checks that mark down.
    public var fall: Int
    /// Latency above which a backend is excluded as slow (`nil`: never).
    public var maxDelay: Duration?
    /// Slow-start ramp after re-admission (`.zero`: none).
    public var slowStart: Duration
    /// Expected interval between health checks (for Retry-After estimates only).
    public var activeCheckInterval: Duration

    /// Creates a policy with the documented defaults (see ``ClusterConfiguration``).
    public init(
        maxFails: Int = 3, failureRateWindow: Int = 10, failureRateMinimumRequests: Int = 6,
        failureRateThreshold: Int = 50, baseEjection: Duration = .seconds(5), maxEjection: Duration = .seconds(60),
        activeChecks: Bool = false, rise: Int = 2, fall: Int = 3, maxDelay: Duration? = nil,
        slowStart: Duration = .seconds(10), activeCheckInterval: Duration = .seconds(2)
    ) {
        self.maxFails = max(1, maxFails)
        self.failureRateWindow = min(max(1, failureRateWindow), 64)
        self.failureRateMinimumRequests = min(max(1, failureRateMinimumRequests), self.failureRateWindow)
        self.failureRateThreshold = min(max(1, failureRateThreshold), 100)
        self.baseEjection = max(baseEjection, .milliseconds(1))
        self.maxEjection = max(maxEjection, self.baseEjection)
        self.activeChecks = activeChecks
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        if let maxDelay, maxDelay > .zero { self.maxDelay = maxDelay } else { self.maxDelay = nil }
        self.slowStart = max(slowStart, .zero)
        self.activeCheckInterval = max(activeCheckInterval, .milliseconds(1))
    }
}

/// `5 s`, `1.5 s`, `200 ms`, `512 ms`, `0.3 ms`: durations for log lines.
func formatDuration(_ duration: Duration) -> String {
    let ns = duration.nanosecondsClamped
    if ns >= 1_000_000_000 && ns % 100_000_000 == 0 {
        let tenths = ns / 100_000_000
        return tenths % 10 == 0 ? "\(tenths / 10) s" : "\(tenths / 10).\(tenths % 10) s"
    }
    let ms = Double(ns) / 1_000_000
    if ms >= 10 || ms == ms.rounded() { return "\(Int64(ms.rounded())) ms" }
    return "\((ms * 10).rounded() / 10) ms"
}
