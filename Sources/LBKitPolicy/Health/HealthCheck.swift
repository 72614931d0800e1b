/// A set of HTTP status codes, written as a list of codes and ranges: `200-399`, `200,204`,
/// `200-299,304`. Used for the statuses an active health check accepts.
///
/// ```swift
/// let set = HTTPStatusSet(parsing: "200-299,304")!
/// set.contains(204)   // true
/// set.contains(302)   // false
/// set.description     // "200-299,304"
/// ```
public struct HTTPStatusSet: Sendable, Hashable, CustomStringConvertible {
    /// The ranges, as written (each within 100...599).
    public let ranges: [ClosedRange<Int>]

    /// The set of these ranges (empty ranges are not possible with `ClosedRange`).
    public init(_ ranges: [ClosedRange<Int>]) { self.ranges = ranges }

    /// Parses `200-399`, `200,204`, `200-299, 304`; nil when any item is not a status code
    /// (100...599) or a range `low-high` of them with `low <= high`, or the list is empty.
    public init?(parsing text: String) {
        var ranges: [ClosedRange<Int>] = []
        for rawItem in text.split(separator: ",", omittingEmptySubsequences: false) {
            let item = rawItem.trimmingSpaces
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false).map { $0.trimmingSpaces }
            guard (1...2).contains(bounds.count),
                  let low = Self.code(bounds[0]), let high = bounds.count == 2 ? Self.code(bounds[1]) : low,
                  low <= high
            else { return nil }
            ranges.append(low...high)
        }
        guard !ranges.isEmpty else { return nil }
        self.ranges = ranges
    }

    /// Whether `status` is in the set.
    public func contains(_ status: Int) -> Bool { ranges.contains { $0.contains(status) } }

    /// The canonical text: `200-299,304`.
    public var description: String {
        ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            .joined(separator: ",")
    }

    private static func code(_ text: Substring) -> Int? {
        guard (1...3).contains(text.utf8.count), text.utf8.allSatisfy({ (48...57).contains($0) }),
              let n = Int(text), (100...599).contains(n) else { return nil }
        return n
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}

/// How one active health check ended: passed (and why), or failed and its cause.
///
/// The ``description`` is what log lines and `/_lb/stats` show (`status 500`, `refused`,
/// `timeout after 2000 ms`); ``label`` is the bounded `cause` label of the
/// `lb_health_checks_total` metric (`status_500`, `refused`, `timeout`).
public enum HealthCheckResult: Sendable, Hashable, CustomStringConvertible {
    /// The backend answered with a status the check accepts.
    case passed(status: Int)
    /// No health path was configured and the default one answered 404, 405 or 501: the backend
    /// has no health endpoint, but it answered, so it is reachable (counts as passing).
    case noHealthEndpoint(status: Int)
    /// The backend answered with a status the check does not accept.
    case status(Int)
    /// The connection was refused.
    case refused
    /// The connection broke before a complete answer.
    case reset
    /// No (complete) answer within the check's timeout (or the connect timeout).
    case timeout(Duration)
    /// The connection could not be made for another reason (unreachable, no route...).
    case connectFailed(String)
    /// The answer was not valid HTTP.
    case malformed(String)

    /// Whether the check counts as passing.
    public var passed: Bool {
        switch self {
        case .passed, .noHealthEndpoint: true
        default: false
        }
    }

    /// `pass` or `fail` (the `result` label).
    public var resultLabel: String { passed ? "pass" : "fail" }

    /// The `cause` label: `ok`, `no_health_endpoint`, `status_500`, `refused`, `reset`,
    /// `timeout`, `connect_failed`, `malformed`.
    public var label: String {
        switch self {
        case .passed: "ok"
        case .noHealthEndpoint: "no_health_endpoint"
        case .status(let s): "status_\(s)"
        case .refused: "refused"
        case .reset: "reset"
        case .timeout: "timeout"
        case .connectFailed: "connect_failed"
        case .malformed: "malformed"
        }
    }

    /// `status 200`, `status 404 (no health endpoint)`, `status 500`, `refused`, `reset`,
    /// `timeout after 2000 ms`, `connect failed: ...`, `malformed response: ...`.
    public var description: String {
        switch self {
        case .passed(let s): "status \(s)"
        case .noHealthEndpoint(let s): "status \(s) (no health endpoint)"
        case .status(let s): "status \(s)"
        case .refused: "refused"
        case .reset: "reset"
        case .timeout(let d): "timeout after \(Int64(d.milliseconds.rounded())) ms"
        case .connectFailed(let why): "connect failed: \(why)"
        case .malformed(let why): "malformed response: \(why)"
        }
    }

    /// The status the backend answered, if it answered.
    public var status: Int? {
        switch self {
        case .passed(let s), .noHealthEndpoint(let s), .status(let s): s
        default: nil
        }
    }
}

/// Which answers of an active health check pass.
///
/// - With ``expectedStatuses`` (`--health-expect-status`): exactly those statuses pass.
/// - Otherwise 2xx and 3xx pass. When the health path was **not** configured explicitly (the
///   default `/health`), 404, 405 and 501 mean "this application has no health endpoint": the
///   backend answered, so it is reachable, and the check passes
///   (``HealthCheckResult/noHealthEndpoint(status:)``). A backend that serves real traffic is
///   never taken down only because it lacks the probe path. With an explicit path every other
///   status fails.
///
/// ```swift
/// let automatic = HealthCheckExpectation(pathIsExplicit: false)
/// automatic.judge(status: 404)   // .noHealthEndpoint(status: 404): passes
/// let strict = HealthCheckExpectation(pathIsExplicit: true)
/// strict.judge(status: 404)      // .status(404): fails
/// ```
public struct HealthCheckExpectation: Sendable, Hashable {
    /// Whether the path was configured by the operator (flag, config key, per-backend path).
    public var pathIsExplicit: Bool
    /// The statuses that pass, when set explicitly; nil = automatic (see the type's rules).
    public var expectedStatuses: HTTPStatusSet?

    /// Statuses that say "no such endpoint" rather than "unhealthy".
    public static let noEndpointStatuses: Set<Int> = [404, 405, 501]

    /// Creates the rule.
    public init(pathIsExplicit: Bool, expectedStatuses: HTTPStatusSet? = nil) {
        self.pathIsExplicit = pathIsExplicit
        self.expectedStatuses = expectedStatuses
    }

    /// The verdict on an answer with `status`.
    public func judge(status: Int) -> HealthCheckResult {
        if let expectedStatuses {
            return expectedStatuses.contains(status) ? .passed(status: status) : .status(status)
        }
        if (200..<400).contains(status) { return .passed(status: status) }
        if !pathIsExplicit && Self.noEndpointStatuses.contains(status) { return .noHealthEndpoint(status: status) }
        return .status(status)
    }
}

/// The last active health check of a backend, for `/_lb/stats`.
public struct HealthCheckRecord: Sendable, Equatable {
    /// How it ended.
    public var result: HealthCheckResult
    /// When it ended.
    public var at: MonotonicInstant
    /// How long it took.
    public var latency: Duration

    /// Creates a record.
    public init(result: HealthCheckResult, at: MonotonicInstant, latency: Duration) {
        self.result = result
        self.at = at
        self.latency = latency
    }
}

/// Active health checks of one backend counted by result and cause label (the
/// `lb_health_checks_total{result,cause}` series), in first-seen order.
public struct HealthCheckTally: Sendable, Equatable {
    /// `(result, cause, count)`, one per distinct pair seen.
    public private(set) var counts: [(result: String, cause: String, count: Int)] = []

    /// An empty tally.
    public init() {}

    /// Counts one check.
    public mutating func add(_ result: HealthCheckResult) {
        let r = result.resultLabel, c = result.label
        if let i = counts.firstIndex(where: { $0.result == r && $0.cause == c }) {
            counts[i].count += 1
        } else {
            counts.append((r, c, 1))
        }
    }

    /// The count for a result and cause label (0 if never seen).
    public func count(result: String, cause: String) -> Int {
        counts.first { $0.result == result && $0.cause == cause }?.count ?? 0
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.counts.count == rhs.counts.count
            && zip(lhs.counts, rhs.counts).allSatisfy { $0.result == $1.result && $0.cause == $1.cause && $0.count == $1.count }
    }
}
