/// Finagle-style retry budget: retries may add at most a fixed fraction of the request load,
/// plus a small floor so that a lightly loaded proxy can still retry.
///
/// Every request deposits `percent / 100` of a token, every retry withdraws one token, and both
/// expire after `ttl`. On top of the deposits there is a standing reserve of
/// `minRetriesPerSecond x ttl` tokens. So over any `ttl` window the proxy retries at most
/// `minRetriesPerSecond x ttl + percent% x requests` times, and a retry storm against a failing
/// cluster cannot multiply the load by more than `1 + percent%` once the floor is spent.
///
/// Tokens are kept as integer milli-tokens in 10 rotating slices of `ttl / 10` (constant memory,
/// O(1) amortised): an operation expires between `0.9 x ttl` and `ttl` after it happened.
///
/// The budget is a value: ``BackendCluster`` keeps one under a lock. Standalone use:
///
/// ```swift
/// let clock = ManualClock()
/// var budget = RetryBudget(percent: 20, minRetriesPerSecond: 0, ttl: .seconds(10), clock: clock)
/// for _ in 0..<10 { budget.deposit() }   // 10 requests: 2 tokens
/// budget.tryWithdraw()                    // true
/// budget.tryWithdraw()                    // true
/// budget.tryWithdraw()                    // false
/// ```
public struct RetryBudget: Sendable {
    private static let milli: Int64 = 1000
    private static let sliceCount = 10

    private let clock: any MonotonicClock
    private let depositAmount: Int64
    private let reserve: Int64
    private let sliceNanoseconds: UInt64
    private var slices = InlineArray<10, Int64>(repeating: 0)
    private var currentSlice: UInt64

    /// Creates a budget.
    /// - Parameters:
    ///   - percent: share of requests that may be retried, in percent (default 20; clamped to 0...1000).
    ///   - minRetriesPerSecond: retry floor independent of load (default 10; negative means 0).
    ///   - ttl: how long deposits and withdrawals count (default 10 s; at least 10 ms).
    ///   - clock: the time source.
    public init(percent: Int = 20, minRetriesPerSecond: Int = 10, ttl: Duration = .seconds(10), clock: any MonotonicClock) {
        self.clock = clock
        let ttlNanoseconds = max(ttl.nanosecondsClamped, 10_000_000)
        depositAmount = Int64(min(max(percent, 0), 1000)) * Self.milli / 100
        // minRetriesPerSecond x ttl (in seconds) tokens, in milli-tokens.
        let (reserveValue, overflow) = Int64(max(minRetriesPerSecond, 0)).multipliedReportingOverflow(by: ttlNanoseconds / 1_000_000)
        reserve = overflow ? .max / 2 : reserveValue
        sliceNanoseconds = UInt64(ttlNanoseconds) / UInt64(Self.sliceCount)
        currentSlice = clock.now().nanoseconds / sliceNanoseconds
    }

    /// Records one request (one ``BackendCluster/requestStarted()``), earning `percent%` of a token.
    public mutating func deposit() {
        advance()
        slices[Int(currentSlice % UInt64(Self.sliceCount))] &+= depositAmount
    }

    /// Spends one token for a retry if the budget has one; returns whether the retry may happen.
    @discardableResult
    public mutating func tryWithdraw() -> Bool {
        advance()
        guard windowSum() + reserve >= Self.milli else { return false }
        slices[Int(currentSlice % UInt64(Self.sliceCount))] &-= Self.milli
        return true
    }

    /// Tokens currently available (fractional), i.e. how many retries would be allowed right now.
    public mutating func balance() -> Double {
        advance()
        return Double(windowSum() + reserve) / Double(Self.milli)
    }

    private func windowSum() -> Int64 {
        var sum: Int64 = 0
        for i in 0..<Self.sliceCount { sum &+= slices[i] }
        return sum
    }

    private mutating func advance() {
        let slice = clock.now().nanoseconds / sliceNanoseconds
        guard slice > currentSlice else { return }
        let steps = min(slice - currentSlice, UInt64(Self.sliceCount))
        var s = currentSlice
        for _ in 0..<steps {
            s += 1
            slices[Int(s % UInt64(Self.sliceCount))] = 0
        }
        currentSlice = slice
    }
}

/// Why the proxy wants to retry a request (mirrors ``FailureKind``); ``BackendCluster`` counts
/// retries per reason.
public enum RetryReason: String, Sendable, CaseIterable, Hashable {
    /// The connection to the backend could not be established.
    case connect
    /// The connection was reset or closed before a complete response.
    case reset
    /// The backend did not answer in time.
    case timeout
    /// The backend answered with a 5xx status.
    case status5xx
    /// The first attempt had not started answering by the hedge point, so a second, concurrent
    /// attempt went to another backend.
    case hedge

    /// The retry reason for an attempt that failed with `kind`.
    public init(_ kind: FailureKind) {
        switch kind {
        case .connect: self = .connect
        case .reset: self = .reset
        case .timeout: self = .timeout
        case .status5xx: self = .status5xx
        }
    }

    var slot: Int {
        switch self {
        case .connect: 0
        case .reset: 1
        case .timeout: 2
        case .status5xx: 3
        case .hedge: 4
        }
    }
}

/// Retry counters of a ``BackendCluster``, per ``RetryReason``.
public struct RetryStatistics: Sendable, Equatable {
    /// Retries the budget allowed, per reason.
    public var granted: [RetryReason: Int]
    /// Retries the budget refused, per reason.
    public var denied: [RetryReason: Int]

    /// Creates statistics (empty by default).
    public init(granted: [RetryReason: Int] = [:], denied: [RetryReason: Int] = [:]) {
        self.granted = granted
        self.denied = denied
    }

    /// All granted retries.
    public var totalGranted: Int { granted.values.reduce(0, +) }
    /// All refused retries.
    public var totalDenied: Int { denied.values.reduce(0, +) }
}
