import Glibc

/// Per-backend latency statistics in constant memory with O(1) recording.
///
/// * **Peak EWMA** (Finagle's `PeakEwma`): a sample above the current value replaces it at once;
///   a lower one pulls it down with weight `1 - exp(-Δt/τ)`, where Δt is the time since the
///   previous sample. τ defaults to 10 s (Finagle's default): one fast answer cannot hide a spike,
///   yet a backend that recovered looks normal again within roughly 10-30 s. Read through
///   ``ewma(at:)`` the value also decays towards zero while no samples arrive, so an idle backend
///   gets tried again by ``PeakEWMASelector``.
/// * **Quantiles** (``quantile(_:at:)``): two rotating histograms with 4 logarithmic buckets per
///   power of two (relative error about 12%) between 1 µs and ~18 min; each covers `window`
///   (default 30 s), so quantiles describe the last 30-60 s.
/// * **Recent latency** (``recentLatency``): the median of the last three samples (with two
///   samples, the smaller one). It exceeds a threshold only when two of the last three samples
///   do, so one outlier never trips slow exclusion, while two slow answers in a row always do.
///
/// ```swift
/// let clock = ManualClock()
/// var tracker = LatencyTracker(now: clock.now())
/// tracker.record(.milliseconds(40), at: clock.now())
/// clock.advance(by: .seconds(1))
/// tracker.record(.milliseconds(20), at: clock.now())
/// let p99 = tracker.quantile(0.99, at: clock.now())   // ≈ 40 ms
/// let ewma = tracker.ewma(at: clock.now())            // ≈ 38 ms
/// ```
public struct LatencyTracker: Sendable {
    /// Bucket `b` of the histogram covers `[lower(b), lower(b+1))` nanoseconds, 4 per power of two.
    @usableFromInline static let minExponent = 10  // 2^10 ns ≈ 1 µs
    @usableFromInline static let maxExponent = 40  // 2^40 ns ≈ 18 min
    @usableFromInline static let bucketCount = 124  // (maxExponent - minExponent + 1) * 4

    private var peakNanoseconds: Double = 0
    private var lastSampleAt: MonotonicInstant
    private let tauNanoseconds: Double
    private let windowNanoseconds: UInt64

    private var current = InlineArray<124, UInt32>(repeating: 0)
    private var previous = InlineArray<124, UInt32>(repeating: 0)
    private var currentCount: UInt32 = 0
    private var previousCount: UInt32 = 0
    private var currentStart: MonotonicInstant

    private var recent: (UInt64, UInt64, UInt64) = (0, 0, 0)
    private var recentCount = 0

    /// Total samples recorded.
    public private(set) var sampleCount: UInt64 = 0
    /// The most recent sample, if any.
    public private(set) var lastSample: Duration?

    /// Creates an empty tracker.
    /// - Parameters:
    ///   - decay: the EWMA time constant τ (default 10 s).
    ///   - window: how long each of the two rotating histograms covers (default 30 s).
    ///   - now: the current instant.
    public init(decay: Duration = .seconds(10), window: Duration = .seconds(30), now: MonotonicInstant) {
        tauNanoseconds = Double(max(decay.nanosecondsClamped, 1))
        windowNanoseconds = UInt64(max(window.nanosecondsClamped, 1))
        lastSampleAt = now
        currentStart = now
    }

    /// Records one sample. O(1): no allocation, no loops except a histogram rotation that clears
    /// 124 counters at most once per window.
    public mutating func record(_ sample: Duration, at now: MonotonicInstant) {
        let ns = UInt64(max(sample.nanosecondsClamped, 0))
        let value = Double(ns)
        if value > peakNanoseconds || sampleCount == 0 {
            peakNanoseconds = value
        } else {
            let elapsed = now > lastSampleAt ? Double((now - lastSampleAt).nanosecondsClamped) : 0
            let w = exp(-elapsed / tauNanoseconds)
            peakNanoseconds = peakNanoseconds * w + value * (1 - w)
        }
        if now > lastSampleAt { lastSampleAt = now }

        rotate(to: now)
        let bucket = Self.bucket(for: ns)
        current[bucket] &+= 1
        currentCount &+= 1

        switch recentCount % 3 {
        case 0: recent.0 = ns
        case 1: recent.1 = ns
        default: recent.2 = ns
        }
        recentCount = recentCount == 5 ? 3 : recentCount + 1
        sampleCount &+= 1
        lastSample = .nanoseconds(Int64(clamping: ns))
    }

    /// Replaces the EWMA with the recent evidence (the median of the last three samples, or the
    /// last sample): used when a backend is re-admitted because it proved fast again, so its old
    /// slowness does not keep a latency-aware selector away from it. Histograms are kept.
    public mutating func resetPeakToRecent() {
        guard sampleCount > 0 else { return }
        if let recent = recentLatency ?? lastSample {
            peakNanoseconds = Double(max(recent.nanosecondsClamped, 0))
        }
    }

    /// The peak EWMA as of the last sample (`nil` before the first sample).
    public var peakEWMA: Duration? {
        sampleCount == 0 ? nil : .nanoseconds(Int64(peakNanoseconds))
    }

    /// The peak EWMA decayed towards zero for the time since the last sample, in nanoseconds
    /// (0 before the first sample). This is what ``PeakEWMASelector`` compares.
    public func ewma(at now: MonotonicInstant) -> Double {
        guard sampleCount > 0 else { return 0 }
        guard now > lastSampleAt else { return peakNanoseconds }
        let elapsed = Double((now - lastSampleAt).nanosecondsClamped)
        return peakNanoseconds * exp(-elapsed / tauNanoseconds)
    }

    /// The `q` quantile (`0...1`) of the samples of the last one to two windows, or `nil` when
    /// there are none. Estimated as the geometric middle of a bucket.
    public func quantile(_ q: Double, at now: MonotonicInstant) -> Duration? {
        let age = now > currentStart ? UInt64((now - currentStart).nanosecondsClamped) : 0
        // The histograms as they would be after rotating to `now`: within one window both count,
        // within two only the current one (about to become the previous), beyond that neither.
        let useCurrent = age < 2 * windowNanoseconds
        let usePrevious = age < windowNanoseconds
        var total: UInt64 = 0
        if useCurrent { total += UInt64(currentCount) }
        if usePrevious { total += UInt64(previousCount) }
        guard total > 0 else { return nil }
        let clamped = min(max(q, 0), 1)
        let rank = max(1, UInt64((clamped * Double(total)).rounded(.up)))
        var seen: UInt64 = 0
        for bucket in 0..<Self.bucketCount {
            if useCurrent { seen += UInt64(current[bucket]) }
            if usePrevious { seen += UInt64(previous[bucket]) }
            if seen >= rank { return .nanoseconds(Int64(clamping: Self.representative(of: bucket))) }
        }
        return .nanoseconds(Int64(clamping: Self.representative(of: Self.bucketCount - 1)))
    }

    /// The median of the last three samples (the smaller of two; `nil` with fewer than two).
    /// Above a threshold exactly when at least two of the last three samples are.
    public var recentLatency: Duration? {
        let value: UInt64
        switch recentCount {
        case 0, 1: return nil
        case 2: value = min(recent.0, recent.1)
        default:
            let (a, b, c) = recent
            value = max(min(a, b), min(max(a, b), c))
        }
        return .nanoseconds(Int64(clamping: value))
    }

    private mutating func rotate(to now: MonotonicInstant) {
        guard now > currentStart else { return }
        let age = UInt64((now - currentStart).nanosecondsClamped)
        guard age >= windowNanoseconds else { return }
        if age >= 2 * windowNanoseconds {
            previous = InlineArray(repeating: 0)
            previousCount = 0
        } else {
            previous = current
            previousCount = currentCount
        }
        current = InlineArray(repeating: 0)
        currentCount = 0
        currentStart = currentStart + .nanoseconds(Int64(clamping: (age / windowNanoseconds) * windowNanoseconds))
    }

    @inline(__always)
    static func bucket(for nanoseconds: UInt64) -> Int {
        let value = max(nanoseconds, 1)
        let exponent = 63 - value.leadingZeroBitCount
        if exponent < minExponent { return 0 }
        if exponent > maxExponent { return bucketCount - 1 }
        let sub = Int((value >> UInt64(exponent - 2)) & 3)
        return (exponent - minExponent) * 4 + sub
    }

    static func lowerBound(of bucket: Int) -> UInt64 {
        let exponent = bucket / 4 + minExponent
        let sub = UInt64(bucket % 4)
        return (4 + sub) << UInt64(exponent - 2)
    }

    static func representative(of bucket: Int) -> UInt64 {
        let low = Double(lowerBound(of: bucket))
        let high = Double(lowerBound(of: bucket + 1))
        return UInt64((low * high).squareRoot())
    }
}
