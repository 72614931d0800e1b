import Synchronization

/// A point on the monotonic clock, in nanoseconds since an arbitrary origin (boot).
///
/// The policy core (health, latency, throttling) works on `MonotonicInstant`s handed to it by a
/// ``MonotonicClock``, so tests can drive time by hand:
///
/// ```swift
/// let clock = ManualClock()
/// let start = clock.now()
/// clock.advance(by: .milliseconds(250))
/// assert(clock.now() - start == .milliseconds(250))
/// ```
public struct MonotonicInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the clock's origin.
    public var nanoseconds: UInt64

    /// Creates an instant `nanoseconds` after the clock's origin.
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// The clock's origin.
    public static let zero = MonotonicInstant(nanoseconds: 0)

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// The instant `duration` later (saturating; negative durations move back, not below zero).
    public static func + (lhs: Self, rhs: Duration) -> Self {
        let delta = rhs.nanosecondsClamped
        if delta >= 0 {
            let (sum, overflow) = lhs.nanoseconds.addingReportingOverflow(UInt64(delta))
            return Self(nanoseconds: overflow ? .max : sum)
        }
        let back = UInt64(-delta)
        return Self(nanoseconds: lhs.nanoseconds > back ? lhs.nanoseconds - back : 0)
    }

    /// The duration from `rhs` to `lhs` (negative when `lhs` is earlier).
    public static func - (lhs: Self, rhs: Self) -> Duration {
        if lhs.nanoseconds >= rhs.nanoseconds {
            return .nanoseconds(Int64(clamping: lhs.nanoseconds - rhs.nanoseconds))
        }
        return .nanoseconds(-Int64(clamping: rhs.nanoseconds - lhs.nanoseconds))
    }

    public var description: String { "\(nanoseconds)ns" }
}

extension Duration {
    /// The duration in whole nanoseconds, clamped to `Int64`.
    ///
    /// Hot path (deadlines and latency samples of every request): a duration under about 9.2 s
    /// fits in 64-bit attoseconds and is divided as an `Int64`; only longer ones take
    /// `components`, whose 128-bit division cost hundreds of instructions a call.
    public var nanosecondsClamped: Int64 {
        let atto = attoseconds
        let small = Int64(truncatingIfNeeded: atto)
        if Int128(small) == atto { return small / 1_000_000_000 }
        // Not `components`: it traps when the seconds do not fit an Int64 (a duration built
        // from an extreme setting, e.g. `.seconds(Int64.max) * 10`).
        let ns = atto / 1_000_000_000
        if ns > Int128(Int64.max) { return .max }
        if ns < Int128(Int64.min) { return .min }
        return Int64(ns)
    }

    /// The duration in milliseconds as a `Double` (for logs, stats and JSON).
    public var milliseconds: Double { Double(nanosecondsClamped) / 1_000_000 }
}

/// A source of monotonic time. The balancer's policy objects take one so that tests can inject
/// a ``ManualClock`` and run in microseconds without sleeping.
public protocol MonotonicClock: Sendable {
    /// The current instant.
    func now() -> MonotonicInstant
}

/// A clock that only moves when told to: for deterministic tests of time-dependent policy.
///
/// ```swift
/// let clock = ManualClock()
/// clock.advance(by: .seconds(30))
/// ```
public final class ManualClock: MonotonicClock {
    private let current: Mutex<UInt64>

    /// Creates a clock reading `start`.
    public init(start: MonotonicInstant = MonotonicInstant(nanoseconds: 1_000_000_000)) {
        current = Mutex(start.nanoseconds)
    }

    /// The instant the clock was last moved to.
    public func now() -> MonotonicInstant { MonotonicInstant(nanoseconds: current.withLock { $0 }) }

    /// Moves the clock forward by `duration` (durations below zero are ignored).
    public func advance(by duration: Duration) {
        let delta = max(0, duration.nanosecondsClamped)
        current.withLock { $0 &+= UInt64(delta) }
    }

    /// Sets the clock to `instant` (which may be earlier: for tests of misbehaving clocks).
    public func set(_ instant: MonotonicInstant) { current.withLock { $0 = instant.nanoseconds } }
}
