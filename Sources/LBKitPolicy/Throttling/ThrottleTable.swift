import Synchronization

/// Per-client rate limiting: admits or refuses each request of a client address, with bounded
/// memory, a penalty box for persistent offenders and no actors (safe to call from any thread).
///
/// ```swift
/// let table = ThrottleTable(
///     configuration: ThrottleConfiguration(rate: 10, burst: 20),
///     clock: ManualClock(),
///     log: { print($0.line) })
/// let client = resolver.resolve(peer: peer, forwardedFor: xForwardedFor)   // a ClientAddress
/// let decision = table.check(client)
/// if !decision.isAllowed { /* 429 with decision.responseHeaders() */ }
/// ```
///
/// ## Algorithm: GCRA
/// Each client has one 8-byte *theoretical arrival time* (TAT): the instant at which it would be
/// back to an empty bucket if it stopped now. With the emission interval `T = 1/rate` and the
/// burst window `W = burst × T`, a request at time `t`:
///
/// ```
/// tat' = max(TAT, t) + T
/// allowed  iff  tat' − t ≤ W          → store TAT = tat'; remaining = ⌊(W − (tat' − t)) / T⌋
/// otherwise throttled, TAT unchanged  → retryAfter = (tat' − t) − W
/// ```
///
/// An idle client gets exactly `burst` requests at once, then one per `T`; over any interval of
/// length `d` at most `burst + ⌊d / T⌋` requests are admitted. GCRA is the token bucket
/// expressed as a single timestamp: same behaviour, exact integer-nanosecond arithmetic, O(1),
/// no refill timers, and half the state of a bucket (which needs a token count *and* a
/// last-refill time). A client whose TAT is in the past has fully decayed: forgetting it changes
/// nothing, which is what makes idle entries free to reclaim. Refused requests do not move the
/// TAT, so hammering does not extend the wait; the penalty box handles that.
///
/// ## Penalty box
/// A client throttled more than `penaltyThreshold` times within `penaltyWindow` (counted from
/// its first throttled request in the window) is penalised for `penaltyDuration`: rate and burst
/// are divided by `penaltyFactor` (burst at least 1). The start of each penalty is logged once:
/// `[THROTTLE] 203.0.113.7 penalised for 60s`.
///
/// ## Memory and concurrency
/// Keys are spread over up to 32 shards by a 64-bit hash seeded per table (remote clients
/// cannot aim collisions at one chain); each shard is a `Mutex` around flat storage: 48-byte
/// entries (16-byte address, TAT, penalty state, Int32 LRU links and hash-chain link) in
/// 64-entry chunks, and a power-of-two array of Int32 bucket heads (load factor <= 1). Lookup,
/// insert, LRU move and eviction are O(1); hits touch only their shard's lock.
///
/// An atomic counter keeps the number of tracked keys <= `maxKeys` across shards. An insert
/// into a full table forgets the least recently seen key of the key's shard (LRU per shard,
/// approximately LRU globally, since keys spread uniformly). Before taking a new slot an insert
/// also reclaims up to two fully decayed entries from its shard's LRU tail, so the table stays
/// about as large as the set of *active* clients. Storage grows chunk by chunk and is released
/// only by ``removeAll()``. (A key whose shard is empty while the table is full, which takes
/// a freak hash distribution, is judged as a new key without being stored.)
///
/// Measured (`throttle-bench`, glibc `mallinfo2`, heap bytes in use after minus before
/// inserting the keys): 100_000 keys (`maxKeys` 100_000) cost
/// 54.4 bytes/key, 1_000_000 keys (`maxKeys` 1_000_000) 52.8 bytes/key: 48 for the entry, 4–8 for
/// its bucket head, the rest partly filled chunks and chunk tables. A check costs about 15 ns
/// with one hot key and 80 ns with 100_000 random keys (cache misses), plus the clock read,
/// in a release build on one core.
public final class ThrottleTable: Sendable {
    /// The configuration in force, with values clamped into range (see ``ThrottleConfiguration``).
    public let configuration: ThrottleConfiguration

    private let clock: any MonotonicClock
    private let log: LogSink
    private let shardMask: Int
    let seed0: UInt64
    let seed1: UInt64
    private let params: ThrottleParameters
    private let penaltyNote: String
    private let padding = ThrottleCacheLinePadding()
    /// Keys tracked across all shards; never above `maxKeys`.
    private let total = Atomic<Int>(0)
    private let penalties = Atomic<Int>(0)
    private let shards: InlineArray<32, ThrottlePaddedShard>

    /// Creates a table.
    ///
    /// - Parameters:
    ///   - configuration: rate, burst, capacity and penalty settings (clamped into range).
    ///   - clock: the time source; inject a ``ManualClock`` in tests.
    ///   - log: receives one line per penalty, e.g. `[THROTTLE] 203.0.113.7 penalised for 60s`.
    public init(
        configuration: ThrottleConfiguration = ThrottleConfiguration(),
        clock: any MonotonicClock,
        log: @escaping LogSink = { _ in }
    ) {
        let config = configuration.clamped
        self.configuration = config
        self.clock = clock
        self.log = log
        var rng = SystemRandomNumberGenerator()
        let s0 = rng.next() as UInt64
        let s1 = rng.next() as UInt64
        seed0 = s0
        seed1 = s1
        params = ThrottleParameters(config)
        penaltyNote = " penalised for " + Self.format(config.penaltyDuration)

        // Up to 32 shards, each expecting at least 64 keys when the table is full.
        var shardCount = 1
        while shardCount < 32 && shardCount * 2 * 64 <= config.maxKeys { shardCount *= 2 }
        shardMask = shardCount - 1
        // A shard may hold twice its fair share (plus slack) so uneven hashing never evicts
        // before the table as a whole is full; the global counter enforces maxKeys.
        let fairShare = (config.maxKeys + shardCount - 1) / shardCount
        let shardCap = min(config.maxKeys, 2 * fairShare + 64)
        shards = InlineArray { index in
            ThrottlePaddedShard(cap: index < shardCount ? shardCap : 0, seed0: s0, seed1: s1)
        }
    }

    /// Decides whether `key` may make a request now (per the table's clock), and records it.
    ///
    /// ```swift
    /// if let client = ClientAddress("2001:db8::1") {
    ///     let decision = table.check(client)   // .allowed(limit: 20, remaining: 19, ...)
    /// }
    /// ```
    public func check(_ key: ClientAddress) -> ThrottleDecision {
        check(key, now: clock.now())
    }

    /// Decides whether `key` may make a request at `now`, and records it (for callers that
    /// already read the clock, such as an event loop's per-iteration timestamp).
    public func check(_ key: ClientAddress, now: MonotonicInstant) -> ThrottleDecision {
        let hash = ThrottleShardState.hash(high: key.high, low: key.low, seed0: seed0, seed1: seed1)
        let t = now.nanoseconds
        let p = params
        let outcome: (ThrottleDecision, Bool) = shards[Int(truncatingIfNeeded: hash >> 59) & shardMask]
            .state.withLock { state in
                let slot = state.findOrInsert(high: key.high, low: key.low, hash: hash, now: t, params: p, total: total)
                guard slot >= 0 else {
                    // Only when this shard is empty and the table is full: judge as a new key.
                    var untracked = ThrottleEntry(high: key.high, low: key.low)
                    return untracked.decide(now: t, params: p)
                }
                return state.entry(slot).pointee.decide(now: t, params: p)
            }
        if outcome.1 { penaltyStarted(key) }
        return outcome.0
    }

    // MARK: Shared state

    /// Like ``check(_:now:)``, and also says how far the request moved the key's TAT, for a store
    /// that shares the table's state with other instances (``ThrottleCharge``).
    public func checkCharging(_ key: ClientAddress, now: MonotonicInstant) -> ThrottleCharge {
        let hash = ThrottleShardState.hash(high: key.high, low: key.low, seed0: seed0, seed1: seed1)
        let t = now.nanoseconds
        let p = params
        let outcome: (ThrottleDecision, Bool, UInt64) = shards[Int(truncatingIfNeeded: hash >> 59) & shardMask]
            .state.withLock { state in
                let slot = state.findOrInsert(high: key.high, low: key.low, hash: hash, now: t, params: p, total: total)
                guard slot >= 0 else {
                    // Only when this shard is empty and the table is full: judge as a new key.
                    var untracked = ThrottleEntry(high: key.high, low: key.low)
                    let (decision, started) = untracked.decide(now: t, params: p)
                    return (decision, started, decision.isAllowed ? untracked.tat &- t : 0)
                }
                let entry = state.entry(slot)
                let before = max(entry.pointee.tat, t)
                let (decision, started) = entry.pointee.decide(now: t, params: p)
                return (decision, started, decision.isAllowed ? entry.pointee.tat &- before : 0)
            }
        if outcome.1 { penaltyStarted(key) }
        return ThrottleCharge(decision: outcome.0, charged: outcome.2, penaltyStarted: outcome.1)
    }

    /// Like ``check(_:)`` with the table's clock, reporting the charge.
    public func checkCharging(_ key: ClientAddress) -> ThrottleCharge {
        checkCharging(key, now: clock.now())
    }

    /// Folds shared state into `key` at `now`: its TAT becomes at least `now + ahead`, and a
    /// positive `penaltyRemaining` keeps it penalised until at least `now + penaltyRemaining`.
    /// Never loosens what the table already holds. The key is inserted if absent.
    public func merge(_ key: ClientAddress, ahead: Duration, penaltyRemaining: Duration, now: MonotonicInstant) {
        let hash = ThrottleShardState.hash(high: key.high, low: key.low, seed0: seed0, seed1: seed1)
        let t = now.nanoseconds
        let p = params
        let tat = (now + max(ahead, .zero)).nanoseconds
        let penaltyEnd = penaltyRemaining > .zero && p.penaltyEnabled ? (now + penaltyRemaining).nanoseconds : nil
        shards[Int(truncatingIfNeeded: hash >> 59) & shardMask].state.withLock { state in
            let slot = state.findOrInsert(high: key.high, low: key.low, hash: hash, now: t, params: p, total: total)
            guard slot >= 0 else { return }
            let e = state.entry(slot)
            if tat > e.pointee.tat { e.pointee.tat = tat }
            if let penaltyEnd {
                if e.pointee.strikes == ThrottleEntry.penalisedMark && e.pointee.phase > t {
                    e.pointee.phase = max(e.pointee.phase, penaltyEnd)
                } else {
                    e.pointee.strikes = ThrottleEntry.penalisedMark
                    e.pointee.phase = penaltyEnd
                }
            }
        }
    }

    /// The clock the table reads.
    public var timeSource: any MonotonicClock { clock }

    /// The shard `key` lives in (for tests).
    func shardIndex(of key: ClientAddress) -> Int {
        let hash = ThrottleShardState.hash(high: key.high, low: key.low, seed0: seed0, seed1: seed1)
        return Int(truncatingIfNeeded: hash >> 59) & shardMask
    }

    /// The number of shards in use.
    var shardCount: Int { shardMask + 1 }

    /// Whether `key` is in the penalty box now (does not count as a request or refresh the key).
    public func isPenalised(_ key: ClientAddress) -> Bool {
        let hash = ThrottleShardState.hash(high: key.high, low: key.low, seed0: seed0, seed1: seed1)
        let t = clock.now().nanoseconds
        return shards[Int(truncatingIfNeeded: hash >> 59) & shardMask].state.withLock { state in
            let slot = state.find(high: key.high, low: key.low, hash: hash)
            guard slot >= 0 else { return false }
            let entry = state.entry(slot).pointee
            return entry.strikes == ThrottleEntry.penalisedMark && t < entry.phase
        }
    }

    /// The number of keys tracked (<= `maxKeys`), including idle ones not yet reclaimed.
    public var count: Int { total.load(ordering: .relaxed) }

    /// Penalties started by this table's decisions so far (`lb_throttle_penalties_total`); a
    /// penalty learnt from another instance through ``merge(_:ahead:penaltyRemaining:now:)`` is
    /// not counted here.
    public var penaltiesStarted: Int { penalties.load(ordering: .relaxed) }

    private func penaltyStarted(_ key: ClientAddress) {
        penalties.add(1, ordering: .relaxed)
        log(LBLogEvent(level: .notice, category: .throttle, message: "\(key)\(penaltyNote)", metadata: ["client": key.description]))
    }

    /// Heap bytes held by the key storage (entry chunks, bucket and chunk arrays of every shard).
    public var allocatedBytes: Int {
        var bytes = 0
        for i in 0...shardMask { bytes += shards[i].state.withLock { $0.allocatedBytes } }
        return bytes
    }

    /// Heap bytes of key storage per tracked key right now (``allocatedBytes`` / ``count``), or
    /// the cost of one entry plus one bucket head (52) when the table is empty. About 52–56 once the
    /// table holds thousands of keys (see the measurements above); more while it is nearly empty.
    public var approximateBytesPerKey: Int {
        let n = count
        guard n > 0 else { return MemoryLayout<ThrottleEntry>.stride + MemoryLayout<Int32>.stride }
        return allocatedBytes / n
    }

    /// Forgets every key whose state has fully decayed (it would be treated exactly like a new
    /// key), e.g. from a periodic housekeeping timer. Returns how many were removed. O(keys).
    @discardableResult
    public func purgeIdle() -> Int {
        let t = clock.now().nanoseconds
        let p = params
        var removed = 0
        for i in 0...shardMask { removed += shards[i].state.withLock { $0.purgeIdle(now: t, params: p) } }
        total.subtract(removed, ordering: .relaxed)
        return removed
    }

    /// Forgets every key and releases the storage.
    public func removeAll() {
        for i in 0...shardMask {
            let removed = shards[i].state.withLock { $0.removeAll() }
            total.subtract(removed, ordering: .relaxed)
        }
    }

    /// `60s`, `1500ms`, `250us`-style text for the penalty log line.
    static func format(_ duration: Duration) -> String {
        let ns = duration.nanosecondsClamped
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
        if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
        if ns % 1_000 == 0 { return "\(ns / 1_000)us" }
        return "\(ns)ns"
    }
}
