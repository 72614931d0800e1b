// One key's rate-limit state and the GCRA arithmetic that judges its requests (with the
// configuration turned into integer nanoseconds), apart from ThrottleTable.swift, which holds
// the public table, and ThrottleShard.swift, which holds where entries are stored.

/// The configuration turned into integer nanoseconds.
struct ThrottleParameters: Sendable {
    /// Emission interval `T = 1/rate`.
    let interval: UInt64
    /// Burst window `W = burst × T`.
    let window: UInt64
    let limit: Int
    /// `T × factor`, `max(W, T × factor)` and the burst while penalised.
    let penalisedInterval: UInt64
    let penalisedWindow: UInt64
    let penalisedLimit: Int
    let penaltyEnabled: Bool
    let penaltyThreshold: UInt32
    let penaltyWindow: UInt64
    let penaltyDuration: UInt64
    let maxKeys: Int

    init(_ c: ThrottleConfiguration) {
        let t = max(1, UInt64((1e9 / c.rate).rounded()))
        interval = t
        window = saturatingMultiply(t, UInt64(c.burst))
        limit = c.burst
        penalisedInterval = saturatingMultiply(t, UInt64(c.penaltyFactor))
        penalisedWindow = max(window, penalisedInterval)
        penalisedLimit = max(1, c.burst / c.penaltyFactor)
        penaltyEnabled = c.penaltyEnabled
        penaltyThreshold = UInt32(c.penaltyThreshold)
        penaltyWindow = UInt64(c.penaltyWindow.nanosecondsClamped)
        penaltyDuration = UInt64(c.penaltyDuration.nanosecondsClamped)
        maxKeys = c.maxKeys
    }
}

@inline(__always)
private func saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}

@inline(__always)
private func saturatingMultiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let (product, overflow) = a.multipliedReportingOverflow(by: b)
    return overflow ? .max : product
}

/// One tracked key: 48 bytes.
struct ThrottleEntry {
    /// The key.
    var high: UInt64
    var low: UInt64
    /// GCRA theoretical arrival time (ns); 0 for a new key.
    var tat: UInt64 = 0
    /// Start of the strike-counting window, or the end of the penalty when penalised.
    var phase: UInt64 = 0
    /// Throttled requests in the current window, or `penalisedMark` while penalised.
    var strikes: UInt32 = 0
    /// LRU neighbours (towards the head / towards the tail), -1 for none.
    var prev: Int32 = -1
    var next: Int32 = -1
    /// Next entry in the same hash bucket, -1 for none.
    var chain: Int32 = -1

    static let penalisedMark = UInt32.max

    /// Whether forgetting this entry would change nothing: TAT passed, no penalty running and
    /// no strikes in a live window.
    @inline(__always)
    func isIdle(now: UInt64, params: ThrottleParameters) -> Bool {
        guard tat <= now else { return false }
        if strikes == 0 { return true }
        if strikes == Self.penalisedMark { return now >= phase }
        return now > saturatingAdd(phase, params.penaltyWindow) || now < phase
    }

    /// Applies GCRA (and the penalty box) to a request at `now`. The Bool is true when this
    /// request started a penalty.
    @inline(__always)
    mutating func decide(now t: UInt64, params p: ThrottleParameters) -> (ThrottleDecision, Bool) {
        var penalised = false
        if strikes == Self.penalisedMark {
            if t < phase { penalised = true } else { strikes = 0 }
        }
        let interval = penalised ? p.penalisedInterval : p.interval
        let window = penalised ? p.penalisedWindow : p.window
        let limit = penalised ? p.penalisedLimit : p.limit
        let base = max(tat, t)
        let newTAT = saturatingAdd(base, interval)
        let ahead = newTAT - t
        if ahead <= window {
            tat = newTAT
            return (.allowed(
                limit: limit,
                remaining: Int(truncatingIfNeeded: (window - ahead) / interval),
                resetAfter: .nanoseconds(Int64(clamping: ahead))), false)
        }
        var started = false
        if p.penaltyEnabled && !penalised {
            if strikes == 0 || t < phase || t > saturatingAdd(phase, p.penaltyWindow) {
                phase = t
                strikes = 1
            } else {
                strikes += 1
            }
            if strikes > p.penaltyThreshold {
                strikes = Self.penalisedMark
                phase = saturatingAdd(t, p.penaltyDuration)
                started = true
            }
        }
        return (.throttled(
            retryAfter: .nanoseconds(Int64(clamping: ahead - window)),
            limit: limit,
            resetAfter: .nanoseconds(Int64(clamping: base - t))), started)
    }
}
