/// What a ``BackendSelector`` knows about one eligible backend when it picks.
///
/// ``BackendCluster`` builds one context per eligible, not-yet-tried backend (in ascending
/// `index` order) under its lock and hands the list to its selector.
public struct BackendContext: Sendable, Equatable {
    /// The backend's position in ``BackendCluster/backends``.
    public var index: Int
    /// Attempts started on the backend and not finished yet.
    public var inFlight: Int
    /// Peak-sensitive latency EWMA in milliseconds, decayed to the current instant
    /// (0 when unknown, or when the selector's ``BackendSelector/usesLatency`` is `false`).
    public var latencyEWMA: Double
    /// The configured weight (at least 1).
    public var weight: Int
    /// Slow-start share in `0...1`: 1 for a backend in normal service, lower while it ramps up
    /// after re-admission.
    public var slowStartFactor: Double

    /// Creates a context.
    public init(index: Int, inFlight: Int = 0, latencyEWMA: Double = 0, weight: Int = 1, slowStartFactor: Double = 1) {
        self.index = index
        self.inFlight = inFlight
        self.latencyEWMA = latencyEWMA
        self.weight = weight
        self.slowStartFactor = slowStartFactor
    }

    /// Decides whether a backend in slow start takes this pick: always when the factor is 1,
    /// otherwise with probability `slowStartFactor` (one draw from `generator`, so seeded tests
    /// are deterministic). Selectors skip a backend this returns `false` for.
    @inlinable
    public func slowStartAdmits<G: RandomNumberGenerator>(using generator: inout G) -> Bool {
        if slowStartFactor >= 1 { return true }
        if slowStartFactor <= 0 { return false }
        return Double.random(in: 0..<1, using: &generator) < slowStartFactor
    }
}

/// A load-balancing strategy: picks one backend among the eligible candidates.
///
/// Selectors are plain values mutated under the owning ``BackendCluster``'s lock, so they need
/// no synchronisation of their own. Implementations must return the `index` of one of the
/// candidates (or `nil` when `candidates` is empty) and should honour
/// ``BackendContext/slowStartFactor`` (see ``BackendContext/slowStartAdmits(using:)``).
///
/// ```swift
/// var selector = RoundRobinSelector()
/// var rng = SplitMix64(seed: 1)
/// let candidates = [BackendContext(index: 0), BackendContext(index: 2)]
/// let first = selector.choose(from: candidates, using: &rng)   // 0
/// let second = selector.choose(from: candidates, using: &rng)  // 2
/// ```
public protocol BackendSelector: Sendable {
    /// Whether the selector reads ``BackendContext/latencyEWMA`` (the cluster skips computing it
    /// otherwise). Defaults to `true`.
    var usesLatency: Bool { get }

    /// Picks a backend among `candidates` (eligible backends in ascending index order, already
    /// without the ones excluded for this request) and returns its ``BackendContext/index``,
    /// or `nil` if `candidates` is empty.
    mutating func choose<G: RandomNumberGenerator>(from candidates: [BackendContext], using generator: inout G) -> Int?
}

extension BackendSelector {
    /// Selectors read the latency EWMA unless they say otherwise.
    public var usesLatency: Bool { true }
}

/// Strict rotation over the eligible backends.
///
/// The cursor is a backend index: each pick takes the first candidate at or after the cursor
/// (wrapping around) and moves the cursor just past it. With backends 0, 1, 2 healthy the picks
/// are 0, 1, 2, 0, 1, 2; with 1 ineligible they alternate 0, 2, 0, 2; a retry that excludes the
/// backend whose turn it is gets the next one, and rotation continues after that.
/// A backend in slow start is skipped with probability `1 - slowStartFactor` when its turn comes.
///
/// ```swift
/// var rr = RoundRobinSelector()
/// var rng = SplitMix64(seed: 7)
/// let all = (0..<3).map { BackendContext(index: $0) }
/// let picks = (0..<4).compactMap { _ in rr.choose(from: all, using: &rng) }  // [0, 1, 2, 0]
/// ```
public struct RoundRobinSelector: BackendSelector {
    /// The backend index the next pick starts searching from.
    public private(set) var cursor: Int

    /// Creates a selector whose first pick is the first candidate at or after `cursor`.
    public init(cursor: Int = 0) { self.cursor = max(0, cursor) }

    /// Round-robin ignores latency.
    public var usesLatency: Bool { false }

    /// Picks the next candidate in rotation (see the type's documentation).
    public mutating func choose<G: RandomNumberGenerator>(from candidates: [BackendContext], using generator: inout G) -> Int? {
        let count = candidates.count
        guard count > 0 else { return nil }
        var start = 0
        while start < count && candidates[start].index < cursor { start += 1 }
        if start == count { start = 0 }
        var fallback: Int?
        for step in 0..<count {
            let candidate = candidates[(start + step) % count]
            if candidate.slowStartAdmits(using: &generator) {
                cursor = candidate.index &+ 1
                return candidate.index
            }
            if fallback == nil { fallback = candidate.index }
        }
        // Every candidate is ramping up and all skipped their turn: serve the one whose turn it was.
        guard let chosen = fallback else { return nil }
        cursor = chosen &+ 1
        return chosen
    }
}

/// nginx's smooth weighted round-robin.
///
/// Each pick adds every candidate's effective weight to its running "current" value, picks the
/// largest (first on ties) and subtracts the total from it. Weights 5, 1, 1 give the sequence
/// a a b a c a a. The effective weight is `weight x slowStartFactor`, so a backend in slow start
/// gets a deterministic, linearly growing share instead of a random skip.
///
/// ```swift
/// var wrr = WeightedRoundRobinSelector(backendCount: 3)
/// var rng = SplitMix64(seed: 1)
/// let c = [BackendContext(index: 0, weight: 5), BackendContext(index: 1), BackendContext(index: 2)]
/// let seven = (0..<7).compactMap { _ in wrr.choose(from: c, using: &rng) }  // [0, 0, 1, 0, 2, 0, 0]
/// ```
public struct WeightedRoundRobinSelector: BackendSelector {
    private var current: [Double]

    /// Creates a selector; `backendCount` preallocates per-backend state (it grows if needed).
    public init(backendCount: Int = 0) {
        current = Array(repeating: 0, count: max(0, backendCount))
    }

    /// Weighted round-robin ignores latency.
    public var usesLatency: Bool { false }

    /// Picks by smooth weighted round-robin (see the type's documentation).
    public mutating func choose<G: RandomNumberGenerator>(from candidates: [BackendContext], using generator: inout G) -> Int? {
        var best = -1
        var total = 0.0
        for candidate in candidates {
            let index = candidate.index
            guard index >= 0 else { continue }
            if index >= current.count {
                current.append(contentsOf: repeatElement(0, count: index - current.count + 1))
            }
            let weight = Double(max(candidate.weight, 1)) * min(max(candidate.slowStartFactor, 0.01), 1)
            current[index] += weight
            total += weight
            if best < 0 || current[index] > current[best] { best = index }
        }
        guard best >= 0 else { return nil }
        current[best] -= total
        return best
    }
}

/// Power of two random choices on load: draws two distinct candidates at random and takes the
/// one with fewer requests in flight (ties go to the first drawn, which is random). Weights are
/// not used: dividing by a weight would make a low-weight backend lose every comparison while the
/// pool is idle and starve it (weights belong to ``WeightedRoundRobinSelector``).
///
/// A backend in slow start loses the comparison with probability `1 - slowStartFactor`.
///
/// ```swift
/// var p2c = LeastRequestsSelector()
/// var rng = SplitMix64(seed: 3)
/// let c = [BackendContext(index: 0, inFlight: 9), BackendContext(index: 1, inFlight: 0)]
/// let pick = p2c.choose(from: c, using: &rng)  // 1: with two candidates both are drawn
/// ```
public struct LeastRequestsSelector: BackendSelector {
    /// Creates the selector.
    public init() {}

    /// Least-requests ignores latency.
    public var usesLatency: Bool { false }

    /// Picks the less loaded of two random candidates.
    public mutating func choose<G: RandomNumberGenerator>(from candidates: [BackendContext], using generator: inout G) -> Int? {
        powerOfTwoChoices(candidates, using: &generator) { Double($0.inFlight) }
    }
}

/// Power of two random choices on Finagle's peak-EWMA cost,
/// `latencyEWMA x (inFlight + 1)`. Weights are not used: dividing the cost by a weight would make
/// a low-weight backend lose every comparison while the pool is idle and starve it (weights belong to
/// ``WeightedRoundRobinSelector``).
///
/// A backend with no latency sample yet costs 0 while idle (so it gets tried) and is avoided
/// while its first requests are in flight (Finagle's "penalty"), so a newcomer is not dog-piled.
/// A backend in slow start loses the comparison with probability `1 - slowStartFactor`.
///
/// ```swift
/// var ewma = PeakEWMASelector()
/// var rng = SplitMix64(seed: 3)
/// let c = [BackendContext(index: 0, latencyEWMA: 80), BackendContext(index: 1, latencyEWMA: 5)]
/// let pick = ewma.choose(from: c, using: &rng)  // 1
/// ```
public struct PeakEWMASelector: BackendSelector {
    /// Creates the selector.
    public init() {}

    /// Picks the cheaper of two random candidates.
    public mutating func choose<G: RandomNumberGenerator>(from candidates: [BackendContext], using generator: inout G) -> Int? {
        powerOfTwoChoices(candidates, using: &generator) { candidate in
            if candidate.latencyEWMA <= 0 { return candidate.inFlight == 0 ? 0 : .infinity }
            return candidate.latencyEWMA * Double(candidate.inFlight + 1)
        }
    }
}

/// Two distinct random candidates; the slow-start admission decides first, then the lower cost
/// (the first drawn on ties).
@inline(__always)
private func powerOfTwoChoices<G: RandomNumberGenerator>(
    _ candidates: [BackendContext], using generator: inout G, cost: (BackendContext) -> Double
) -> Int? {
    let count = candidates.count
    if count == 0 { return nil }
    if count == 1 { return candidates[0].index }
    let first = Int.random(in: 0..<count, using: &generator)
    var second = Int.random(in: 0..<(count - 1), using: &generator)
    if second >= first { second += 1 }
    let a = candidates[first]
    let b = candidates[second]
    let admitsA = a.slowStartAdmits(using: &generator)
    let admitsB = b.slowStartAdmits(using: &generator)
    if admitsA != admitsB { return admitsA ? a.index : b.index }
    return cost(b) < cost(a) ? b.index : a.index
}

/// The built-in balancing strategies, by their command-line names.
///
/// ```swift
/// let strategy = BalancingStrategy(rawValue: "peak-ewma") ?? .roundRobin
/// var selector = strategy.makeSelector(backendCount: 3)
/// ```
public enum BalancingStrategy: String, Sendable, CaseIterable {
    /// ``RoundRobinSelector``.
    case roundRobin = "round-robin"
    /// ``WeightedRoundRobinSelector``.
    case weighted
    /// ``LeastRequestsSelector``.
    case leastRequests = "least-requests"
    /// ``PeakEWMASelector``.
    case peakEWMA = "peak-ewma"

    /// A fresh selector implementing the strategy for `backendCount` backends.
    public func makeSelector(backendCount: Int) -> any BackendSelector {
        switch self {
        case .roundRobin: RoundRobinSelector()
        case .weighted: WeightedRoundRobinSelector(backendCount: backendCount)
        case .leastRequests: LeastRequestsSelector()
        case .peakEWMA: PeakEWMASelector()
        }
    }
}

/// A small, fast, seedable random number generator (SplitMix64), for deterministic tests and for
/// clusters that do not need cryptographic randomness.
///
/// ```swift
/// var rng = SplitMix64(seed: 42)
/// let x = Int.random(in: 0..<10, using: &rng)
/// ```
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// Creates a generator; equal seeds give equal sequences.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
