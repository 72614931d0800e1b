internal import CLBKitShim
import LBKitPolicy

/// The system's monotonic clock (`CLOCK_MONOTONIC`).
///
/// ```swift
/// let clock: any MonotonicClock = SystemClock()
/// let t0 = clock.now()
/// ```
public struct SystemClock: MonotonicClock {
    /// Creates the system clock.
    public init() {}
    /// The current `CLOCK_MONOTONIC` reading.
    public func now() -> MonotonicInstant { MonotonicInstant(nanoseconds: lbk_monotonic_ns()) }
}
