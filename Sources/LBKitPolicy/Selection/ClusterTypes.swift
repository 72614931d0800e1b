/// One backend server of a ``BackendCluster``.
public struct BackendDescriptor: Sendable, Hashable {
    /// Base URL, e.g. `http://127.0.0.1:5002` (used verbatim in log lines).
    public var url: String
    /// Relative weight for ``BalancingStrategy/weighted`` (and the power-of-two strategies);
    /// values below 1 count as 1.
    public var weight: Int

    /// Creates a descriptor.
    public init(url: String, weight: Int = 1) {
        self.url = url
        self.weight = weight
    }
}
/// When a backend counts as hung: it has attempts outstanding and has ended none for longer
/// than `max(floor, factor x its latency EWMA)` while other backends keep answering. Then it
/// is ejected at once (no new requests; replayable requests waiting on it are hedged) and comes
/// back through the ejection timer and a trial request. On by default; `factor` 0 turns it off.
///
/// ```swift
/// var config = ClusterConfiguration()
/// config.hangDetection = HangDetection(floor: .milliseconds(200), factor: 20)
/// ```
public struct HangDetection: Sendable, Equatable {
    /// The shortest stall that can count as a hang.
    public var floor: Duration
    /// How many times its usual latency a backend may stall before it counts as hung (0 = off).
    public var factor: Int

    /// Creates the rule; the defaults catch a paused backend within about 50 ms when it usually
    /// answers within 5 ms. Faster would keep more client connections from getting stuck on a
    /// stalled backend, but a scheduling hiccup of a few tens of milliseconds on a busy host
    /// must not eject a healthy backend for the whole ejection time.
    public init(floor: Duration = .milliseconds(50), factor: Int = 10) {
        self.floor = max(floor, .milliseconds(1))
        self.factor = max(0, factor)
    }
}

/// Tunables of a ``BackendCluster``. `init()` gives the defaults; change fields as needed.
/// Out-of-range values are clamped, never trapped on.
///
/// ```swift
/// var config = ClusterConfiguration()
/// config.strategy = .peakEWMA
/// config.maxDelay = .milliseconds(200)
/// config.activeChecks = true
/// ```
public struct ClusterConfiguration: Sendable {
    /// Balancing strategy (default round-robin).
    public var strategy: BalancingStrategy = .roundRobin
    /// Consecutive failed attempts that eject a backend (default 3, nginx's `max_fails`).
    public var maxFails = 3
    /// Number of recent attempts over which the failure rate is computed (default 10, max 64).
    public var failureRateWindow = 10
    /// Attempts needed in the window before the failure rate is judged (default 6), so two
    /// unlucky requests on a fresh backend do not eject it.
    public var failureRateMinimumRequests = 6
    /// Failure rate, in percent, that ejects (default 50: a backend failing every other request
    /// is ejected, which the consecutive counter alone never catches).
    public var failureRateThreshold = 50
    /// First ejection duration (default 5 s); the n-th ejection in a row lasts n times longer.
    public var baseEjection: Duration = .seconds(5)
    /// Longest ejection (default 60 s).
    public var maxEjection: Duration = .seconds(60)
    /// At most this percentage of the backends (at least one) may be passively excluded
    /// (ejected, slow or probing) at once (default 50), so a proxy-side problem cannot empty the
    /// pool. Actively `down` backends are not capped.
    public var maxEjectedPercent = 50
    /// The hung-backend rule (on by default).
    public var hangDetection = HangDetection()
    /// Set when a health-check task calls ``BackendCluster/probeFinished(_:success:latency:)``
    /// (default `false`). With active checks, a slow backend waits for fast checks; without,
    /// it gets timed trial requests like an ejected one.
    public var activeChecks = false
    /// Consecutive passing checks that re-admit a down, ejected or probing backend, and
    /// consecutive fast samples that re-admit a slow one (default 2).
    public var rise = 2
    /// Consecutive failing checks that mark a backend down (default 3).
    public var fall = 3
    /// Latency above which a backend is excluded as slow (default `nil`: no slow exclusion).
    public var maxDelay: Duration?
    /// Slow-start window after a re-admission: the share ramps from 10% to 100% (default 10 s;
    /// `.zero` disables).
    public var slowStart: Duration = .seconds(10)
    /// Retry budget: percentage of requests that may be retried (default 20, Finagle's).
    public var retryBudgetPercent = 20
    /// Retry budget floor, in retries per second (default 10, Finagle's).
    public var minRetriesPerSecond = 10
    /// How long retry-budget deposits and withdrawals count (default 10 s, Finagle's).
    public var retryBudgetTTL: Duration = .seconds(10)
    /// Time constant τ of the peak-EWMA latency (default 10 s, Finagle's).
    public var latencyDecay: Duration = .seconds(10)
    /// Span of each of the two rotating latency histograms (default 30 s: p50/p99 cover the
    /// last 30-60 s).
    public var latencyWindow: Duration = .seconds(30)
    /// Base timeout for one health check (default 2 s); see ``BackendCluster/probeTimeout(for:)``.
    public var probeTimeout: Duration = .seconds(2)
    /// Interval between health checks of one backend (default 2 s). The cluster does not run
    /// checks; it only uses this to estimate Retry-After for down backends.
    public var activeCheckInterval: Duration = .seconds(2)
    /// Thresholds on the load backends report in their health answers (default: none, so
    /// reported CPU and memory are shown but exclude nothing; the agent header's `drain`,
    /// `down` and `weight:N%` always apply). See ``BackendLoadGate``.
    public var backendLoad = BackendLoadPolicy()

    /// The defaults listed on each property.
    public init() {}

    /// The health thresholds derived from this configuration.
    public var healthPolicy: HealthPolicy {
        HealthPolicy(
            maxFails: maxFails, failureRateWindow: failureRateWindow,
            failureRateMinimumRequests: failureRateMinimumRequests, failureRateThreshold: failureRateThreshold,
            baseEjection: baseEjection, maxEjection: maxEjection, activeChecks: activeChecks,
            rise: rise, fall: fall, maxDelay: maxDelay, slowStart: slowStart, activeCheckInterval: activeCheckInterval)
    }
}

/// How one attempt on a backend ended.
public enum AttemptOutcome: Sendable, Equatable {
    /// A response below 500 arrived.
    case success
    /// The attempt failed; all kinds count as failures for health.
    case failure(FailureKind)
}

/// The answer of ``BackendCluster/choose(excluding:)``.
public enum ChooseResult: Sendable, Equatable {
    /// Send the attempt to the backend with this index.
    case backend(Int)
    /// No backend can take the request: all are ejected, down, slow or already tried.
    /// `retryAfter` (whole seconds, at least 1 s) estimates when one could be back; the proxy
    /// answers 503 with a `Retry-After` header.
    case noneEligible(retryAfter: Duration)
}

/// A set of backend indices (the ones a request already tried), as a 256-bit mask: a small
/// value with no allocation. Indices outside `0..<256` are ignored.
///
/// ```swift
/// var tried = BackendIndexSet()
/// tried.insert(2)
/// tried.contains(2)  // true
/// ```
public struct BackendIndexSet: Sendable, Hashable, ExpressibleByArrayLiteral {
    /// The largest number of backends the set can represent.
    public static let capacity = 256
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    /// The empty set.
    public init() {}

    /// A set holding `indices`.
    public init<S: Sequence>(_ indices: S) where S.Element == Int {
        for index in indices { insert(index) }
    }

    /// A set holding the listed indices.
    public init(arrayLiteral elements: Int...) { self.init(elements) }

    /// Whether `index` is in the set.
    @inlinable
    public func contains(_ index: Int) -> Bool {
        guard index >= 0 && index < Self.capacity else { return false }
        return word(index >> 6) & (1 << UInt64(index & 63)) != 0
    }

    /// Adds `index` (ignored outside `0..<256`).
    public mutating func insert(_ index: Int) {
        guard index >= 0 && index < Self.capacity else { return }
        let bit: UInt64 = 1 << UInt64(index & 63)
        switch index >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    /// Removes `index`.
    public mutating func remove(_ index: Int) {
        guard index >= 0 && index < Self.capacity else { return }
        let mask: UInt64 = ~(1 << UInt64(index & 63))
        switch index >> 6 {
        case 0: words.0 &= mask
        case 1: words.1 &= mask
        case 2: words.2 &= mask
        default: words.3 &= mask
        }
    }

    /// Whether the set is empty.
    public var isEmpty: Bool { (words.0 | words.1 | words.2 | words.3) == 0 }

    /// Number of indices in the set.
    public var count: Int {
        words.0.nonzeroBitCount + words.1.nonzeroBitCount + words.2.nonzeroBitCount + words.3.nonzeroBitCount
    }

    @usableFromInline
    func word(_ i: Int) -> UInt64 {
        switch i {
        case 0: words.0
        case 1: words.1
        case 2: words.2
        default: words.3
        }
    }

    /// Whether both sets hold the same indices.
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2 && lhs.words.3 == rhs.words.3
    }

    /// Hashes the set's bits.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }
}

/// Failed attempts of one backend, by kind.
public struct FailureCounts: Sendable, Equatable {
    /// Connection failures.
    public var connect = 0
    /// Resets and broken responses.
    public var reset = 0
    /// Timeouts.
    public var timeout = 0
    /// 5xx responses.
    public var status5xx = 0

    /// Creates counts (zero by default).
    public init(connect: Int = 0, reset: Int = 0, timeout: Int = 0, status5xx: Int = 0) {
        self.connect = connect
        self.reset = reset
        self.timeout = timeout
        self.status5xx = status5xx
    }

    /// All failures.
    public var total: Int { connect + reset + timeout + status5xx }

    mutating func add(_ kind: FailureKind) {
        switch kind {
        case .connect: connect += 1
        case .reset: reset += 1
        case .timeout: timeout += 1
        case .status5xx: status5xx += 1
        }
    }
}

/// A point-in-time view of one backend, for stats pages and logs.
public struct BackendSnapshot: Sendable, Equatable {
    /// Index in ``BackendCluster/backends``.
    public var index: Int
    /// The backend's URL.
    public var url: String
    /// The configured weight.
    public var weight: Int
    /// Health state.
    public var state: BackendHealthState
    /// Reason of the last state change (`"initial state"` before any).
    public var reason: String
    /// When the backend entered `state`.
    public var since: MonotonicInstant
    /// Attempts started.
    public var requests: Int
    /// Attempts that succeeded.
    public var successes: Int
    /// Failed attempts by kind.
    public var failures: FailureCounts
    /// Attempts that were retries (chosen with a non-empty exclusion set).
    public var retries: Int
    /// Attempts in flight.
    public var inFlight: Int
    /// Peak-EWMA latency in milliseconds as of the last sample (0 without samples).
    public var latencyEWMA: Double
    /// Median latency over the last 30-60 s in milliseconds (0 without samples).
    public var latencyP50: Double
    /// 99th-percentile latency over the last 30-60 s in milliseconds (0 without samples).
    public var latencyP99: Double
    /// Times the backend was passively excluded (ejected or slow).
    public var ejectionCount: Int
    /// Current slow-start share (1 in normal service).
    public var slowStartFactor: Double
    /// Taken out of rotation by an operator (``BackendCluster/setDraining(_:_:)``): no new
    /// requests; in-flight ones finish.
    public var draining = false
    /// Attempt latencies (proxied requests only, not probes) in fixed buckets, for Prometheus.
    /// Time to the response head: what health and slowness are judged on.
    public var histogram = LatencyHistogram()
    /// Time to the last byte of each proxied response body (streamed bodies end when the client
    /// has taken them): for dashboards, not for ejection, since it grows with body size and the
    /// client's own speed.
    public var lastByteHistogram = LatencyHistogram()
    /// The last active health check, if any ran.
    public var lastCheck: HealthCheckRecord?
    /// Active health checks by result and cause.
    public var healthChecks = HealthCheckTally()
    /// Exclusions so far, by the verdict that caused each.
    public var exclusions = ExclusionTally()
    /// Answers the backend gave to proxied attempts (hedge losers and retried 5xx included), by
    /// status class.
    public var responses = StatusClassCounts()
    /// While excluded or probing: what may bring it back (health checks, or only trial
    /// requests). nil in service.
    public var readmission: ReadmissionEvidence?
    /// What the backend reports about its own load, judged against the thresholds (nil for a
    /// snapshot built by hand).
    public var reportedLoad: BackendLoadGate?

    /// The one state name shown everywhere (`/_lb/stats`, `/_lb/metrics`, `/_lb/health`):
    /// `draining` when an operator drained it; `overloaded`, `draining` or `down` when its reported
    /// load or agent header keeps it out (``reportedLoad``); `warming` while a re-admitted
    /// backend's slow-start share ramps up; else its health state.
    public var stateName: BackendStateName {
        if draining { return .draining }
        // A backend that reports drain or down, or is overloaded, is out whatever its health.
        if let exclusion = reportedLoad?.exclusion, state != .down { return exclusion.stateName }
        switch state {
        case .healthy: return slowStartFactor < 1 ? .warming : .healthy
        case .probing: return .probing
        case .slow: return .slow
        case .ejected: return .ejected
        case .down: return .down
        }
    }

    /// Whether the backend takes new requests: not draining, not kept out by its reported load,
    /// and healthy (warming included) or probing.
    public var isEligible: Bool { !draining && (reportedLoad?.admits ?? true) && (state == .healthy || state == .probing) }
}

/// The state names of a backend as operators see them, in logs (upper case), `/_lb/stats`,
/// `/_lb/metrics` (`lb_backend_state{state=...}`, one series per name) and `/_lb/health`.
public enum BackendStateName: String, Sendable, CaseIterable, Hashable {
    /// In service with its full share.
    case healthy
    /// In service, re-admitted recently: its share ramps up over the slow-start time.
    case warming
    /// Half-open: gets one trial request at a time.
    case probing
    /// Excluded because its latency exceeds max-delay.
    case slow
    /// Passively ejected by failing real requests.
    case ejected
    /// Marked down by failing active health checks.
    case down
    /// Taken out of rotation by an operator (drain), a reload or its own agent header
    /// (`X-LB-Agent: drain`); in-flight requests finish.
    case draining
    /// Out of rotation because the load it reports (CPU or memory) is over
    /// `--max-backend-cpu` / `--max-backend-memory`, until it drops below the recovery mark.
    case overloaded

    /// Whether a backend in this state takes new requests (`probing` one trial at a time).
    public var isEligible: Bool {
        switch self {
        case .healthy, .warming, .probing: true
        case .slow, .ejected, .down, .draining, .overloaded: false
        }
    }
}

/// Responses counted by status class (`1xx` ... `5xx`).
public struct StatusClassCounts: Sendable, Equatable {
    /// Counts of `1xx`, `2xx`, `3xx`, `4xx`, `5xx`, in that order.
    public private(set) var counts = InlineArray<5, Int>(repeating: 0)

    /// Empty counts.
    public init() {}

    /// The class labels, in the order of ``counts``.
    public static let labels = ["1xx", "2xx", "3xx", "4xx", "5xx"]

    /// Counts one response with `status` (below 200 as 1xx, 500 and above as 5xx).
    public mutating func count(status: Int) {
        counts[min(max(status / 100, 1), 5) - 1] += 1
    }

    /// `(label, count)` for each class.
    public var byLabel: [(String, Int)] { (0..<5).map { (Self.labels[$0], counts[$0]) } }

    /// Whether both hold the same counts.
    public static func == (lhs: Self, rhs: Self) -> Bool {
        for i in 0..<5 where lhs.counts[i] != rhs.counts[i] { return false }
        return true
    }
}

/// Cumulative attempt latencies in fixed buckets (Prometheus histogram semantics: counts only grow).
///
/// ```swift
/// var h = LatencyHistogram()
/// h.record(.milliseconds(3))
/// h.cumulativeCounts  // [0, 0, 0, 0, 0, 1, 1, ...]: one sample at or below 5 ms and every bound above
/// ```
public struct LatencyHistogram: Sendable, Equatable {
    /// Upper bounds in seconds (the `le` labels); a final `+Inf` bucket is implicit.
    /// Starts at 100 µs: a proxied answer from a nearby backend takes well under a millisecond.
    public static let bounds: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    /// Samples per bucket (not cumulative); the last element is the `+Inf` overflow.
    public private(set) var counts = [Int](repeating: 0, count: LatencyHistogram.bounds.count + 1)
    /// Sum of all samples in seconds.
    public private(set) var sum: Double = 0
    /// Number of samples.
    public private(set) var count = 0

    /// Creates an empty histogram.
    public init() {}

    /// Adds one sample.
    public mutating func record(_ latency: Duration) {
        let seconds = Double(max(latency.nanosecondsClamped, 0)) / 1e9
        var i = 0
        while i < Self.bounds.count && seconds > Self.bounds[i] { i += 1 }
        counts[i] += 1
        sum += seconds
        count += 1
    }

    /// Counts at or below each bound, then the total (`+Inf`).
    public var cumulativeCounts: [Int] {
        var running = 0
        return counts.map { running += $0; return running }
    }
}
