/// Settings of a ``ThrottleTable``: the per-client rate, the burst it may exceed it by, how many
/// clients to track, and the penalty box for clients that keep hammering while throttled.
///
/// ```swift
/// // 10 requests/second sustained, bursts of up to 20, defaults for the rest.
/// let config = ThrottleConfiguration(rate: 10, burst: 20)
///
/// // No penalty box.
/// var lenient = ThrottleConfiguration(rate: 100, burst: 200)
/// lenient.penaltyDuration = .zero
/// ```
///
/// ``ThrottleTable`` clamps out-of-range values when it is created (see each property) and
/// exposes the clamped copy as ``ThrottleTable/configuration``.
public struct ThrottleConfiguration: Sendable, Equatable {
    /// Sustained requests per second per client (clamped to 1e-6 ... 1e9). One request is
    /// admitted every `1 / rate` seconds once the burst is spent.
    public var rate: Double
    /// Requests a client with no recent traffic may send at once (clamped to 1 ... 1_000_000).
    public var burst: Int
    /// Most clients tracked at once (clamped to 1 ... 1 << 30); beyond it the least recently seen
    /// client is forgotten.
    public var maxKeys: Int
    /// A client throttled more than this many times within ``penaltyWindow`` is penalised
    /// (clamped to 0 ... 1_000_000).
    public var penaltyThreshold: Int
    /// The window over which throttled requests are counted, starting at the first one.
    public var penaltyWindow: Duration
    /// How long a penalty lasts; `.zero` (or less) disables the penalty box.
    public var penaltyDuration: Duration
    /// While penalised, `rate` and `burst` are divided by this (clamped to 1 ... 1000; the burst
    /// never drops below one request).
    public var penaltyFactor: Int

    /// Creates a configuration; every parameter has a default.
    ///
    /// - Parameters:
    ///   - rate: sustained requests per second per client (default 10).
    ///   - burst: requests admitted at once from an idle client (default 20).
    ///   - maxKeys: clients tracked at once (default 100_000).
    ///   - penaltyThreshold: throttled requests tolerated per window (default 10).
    ///   - penaltyWindow: the counting window (default 10 s).
    ///   - penaltyDuration: how long a penalty lasts (default 60 s; `.zero` disables penalties).
    ///   - penaltyFactor: divisor of rate and burst while penalised (default 4).
    public init(
        rate: Double = 10,
        burst: Int = 20,
        maxKeys: Int = 100_000,
        penaltyThreshold: Int = 10,
        penaltyWindow: Duration = .seconds(10),
        penaltyDuration: Duration = .seconds(60),
        penaltyFactor: Int = 4
    ) {
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
        self.penaltyThreshold = penaltyThreshold
        self.penaltyWindow = penaltyWindow
        self.penaltyDuration = penaltyDuration
        self.penaltyFactor = penaltyFactor
    }

    /// Whether the penalty box is enabled (``penaltyDuration`` is positive).
    public var penaltyEnabled: Bool { penaltyDuration > .zero }

    /// A copy with every value clamped into its documented range.
    public var clamped: ThrottleConfiguration {
        var c = self
        c.rate = rate.isNaN ? 1e-6 : min(max(rate, 1e-6), 1e9)
        c.burst = min(max(burst, 1), 1_000_000)
        c.maxKeys = min(max(maxKeys, 1), 1 << 30)
        c.penaltyThreshold = min(max(penaltyThreshold, 0), 1_000_000)
        c.penaltyWindow = max(penaltyWindow, .zero)
        c.penaltyDuration = max(penaltyDuration, .zero)
        c.penaltyFactor = min(max(penaltyFactor, 1), 1000)
        return c
    }
}
