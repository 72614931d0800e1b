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

// MARK: - Internals

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

/// 64 bytes that keep hot data of different shards (and the global counter) on different
/// cache lines.
struct ThrottleCacheLinePadding: Sendable {
    let words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
}

/// A shard's lock and storage, preceded by a cache line of padding.
struct ThrottlePaddedShard: ~Copyable, Sendable {
    private let padding = ThrottleCacheLinePadding()
    let state: Mutex<ThrottleShardState>

    init(cap: Int, seed0: UInt64, seed1: UInt64) {
        state = Mutex(ThrottleShardState(cap: cap, seed0: seed0, seed1: seed1))
    }
}

/// One shard: entries in 64-entry chunks, linked into an LRU list and hash chains by Int32
/// slot number.
struct ThrottleShardState: ~Copyable {
    static let chunkShift = 6
    static let chunkSize = 1 << chunkShift

    /// Entry chunks; slots `0..<used` have been handed out (live or on the free list).
    private let chunks: UnsafeMutablePointer<UnsafeMutablePointer<ThrottleEntry>>
    private let chunkTableSize: Int
    private var chunkCount = 0
    private var used: Int32 = 0
    /// Bucket heads (-1 for empty); `bucketMask + 1` of them, a power of two, >= `count`.
    private var buckets: UnsafeMutablePointer<Int32>
    private var bucketMask: Int
    /// Most and least recently seen entries, and the free-slot list (linked through `next`).
    private var head: Int32 = -1
    private var tail: Int32 = -1
    private var freeHead: Int32 = -1
    private(set) var count: Int32 = 0
    /// Most entries this shard may hold.
    private let cap: Int32
    private let seed0: UInt64
    private let seed1: UInt64

    private static let initialBuckets = 16

    init(cap: Int, seed0: UInt64, seed1: UInt64) {
        self.cap = Int32(cap)
        self.seed0 = seed0
        self.seed1 = seed1
        chunkTableSize = max(1, (cap + Self.chunkSize - 1) / Self.chunkSize)
        chunks = .allocate(capacity: chunkTableSize)
        bucketMask = Self.initialBuckets - 1
        buckets = .allocate(capacity: Self.initialBuckets)
        buckets.initialize(repeating: -1, count: Self.initialBuckets)
    }

    deinit {
        for i in 0..<chunkCount { chunks[i].deallocate() }
        chunks.deallocate()
        buckets.deallocate()
    }

    /// Seeded hash of a key. The top 5 bits pick the shard, the low bits the bucket.
    @inline(__always)
    static func hash(high: UInt64, low: UInt64, seed0: UInt64, seed1: UInt64) -> UInt64 {
        let m1 = (high ^ seed0).multipliedFullWidth(by: low ^ seed1)
        let h = m1.high ^ m1.low
        let m2 = (h ^ seed1).multipliedFullWidth(by: 0x9E37_79B9_7F4A_7C15)
        return m2.high ^ m2.low
    }

    var allocatedBytes: Int {
        chunkCount * Self.chunkSize * MemoryLayout<ThrottleEntry>.stride
            + (bucketMask + 1) * MemoryLayout<Int32>.stride
            + chunkTableSize * MemoryLayout<UnsafeMutablePointer<ThrottleEntry>>.stride
    }

    /// The entry in `slot`.
    @inline(__always)
    func entry(_ slot: Int32) -> UnsafeMutablePointer<ThrottleEntry> {
        chunks[Int(slot) >> Self.chunkShift] + (Int(slot) & (Self.chunkSize - 1))
    }

    /// The slot holding the key, or -1.
    @inline(__always)
    func find(high: UInt64, low: UInt64, hash: UInt64) -> Int32 {
        var i = buckets[Int(truncatingIfNeeded: hash) & bucketMask]
        while i >= 0 {
            let e = entry(i)
            if e.pointee.high == high && e.pointee.low == low { return i }
            i = e.pointee.chain
        }
        return -1
    }

    /// The slot of the key, moved to the LRU head; inserted with fresh state if absent. -1 only
    /// if the key could not be stored (this shard is empty and the table is full).
    @inline(__always)
    mutating func findOrInsert(
        high: UInt64, low: UInt64, hash: UInt64, now: UInt64, params: ThrottleParameters,
        total: borrowing Atomic<Int>
    ) -> Int32 {
        let i = find(high: high, low: low, hash: hash)
        if i >= 0 {
            if i != head {
                unlinkLRU(i)
                pushFront(i)
            }
            return i
        }
        return insert(high: high, low: low, hash: hash, now: now, params: params, total: total)
    }

    private mutating func insert(
        high: UInt64, low: UInt64, hash: UInt64, now: UInt64, params: ThrottleParameters,
        total: borrowing Atomic<Int>
    ) -> Int32 {
        // Reclaim up to two fully decayed entries from the LRU tail first.
        for _ in 0..<2 {
            guard tail >= 0, entry(tail).pointee.isIdle(now: now, params: params) else { break }
            release(tail)
            total.subtract(1, ordering: .relaxed)
        }
        // Reserve room in the table-wide count.
        var reserved = false
        if count < cap {
            if total.add(1, ordering: .relaxed).newValue <= params.maxKeys {
                reserved = true
            } else {
                total.subtract(1, ordering: .relaxed)
            }
        }
        let slot: Int32
        if reserved {
            if freeHead >= 0 {
                slot = freeHead
                freeHead = entry(slot).pointee.next
            } else {
                if Int(used) == chunkCount << Self.chunkShift { addChunk() }
                slot = used
                used += 1
            }
            count += 1
            if Int(count) > bucketMask + 1 { rehash(bucketCount: (bucketMask + 1) * 2) }
        } else {
            // Full: forget this shard's least recently seen key and reuse its slot.
            guard tail >= 0 else { return -1 }
            slot = tail
            unlinkChain(slot)
            unlinkLRU(slot)
        }
        let b = Int(truncatingIfNeeded: hash) & bucketMask
        entry(slot).initialize(to: ThrottleEntry(high: high, low: low, chain: buckets[b]))
        buckets[b] = slot
        pushFront(slot)
        return slot
    }

    /// Removes the entry in `slot` and puts the slot on the free list (the caller adjusts the
    /// table-wide count).
    private mutating func release(_ slot: Int32) {
        unlinkChain(slot)
        unlinkLRU(slot)
        entry(slot).pointee.next = freeHead
        freeHead = slot
        count -= 1
    }

    private mutating func unlinkChain(_ slot: Int32) {
        let e = entry(slot).pointee
        let h = Self.hash(high: e.high, low: e.low, seed0: seed0, seed1: seed1)
        let b = Int(truncatingIfNeeded: h) & bucketMask
        if buckets[b] == slot {
            buckets[b] = e.chain
            return
        }
        var i = buckets[b]
        while i >= 0 {
            let link = entry(i)
            if link.pointee.chain == slot {
                link.pointee.chain = e.chain
                return
            }
            i = link.pointee.chain
        }
    }

    @inline(__always)
    private mutating func unlinkLRU(_ slot: Int32) {
        let e = entry(slot)
        let prev = e.pointee.prev, next = e.pointee.next
        if prev >= 0 { entry(prev).pointee.next = next } else { head = next }
        if next >= 0 { entry(next).pointee.prev = prev } else { tail = prev }
    }

    @inline(__always)
    private mutating func pushFront(_ slot: Int32) {
        let e = entry(slot)
        e.pointee.prev = -1
        e.pointee.next = head
        if head >= 0 { entry(head).pointee.prev = slot } else { tail = slot }
        head = slot
    }

    private mutating func addChunk() {
        chunks[chunkCount] = .allocate(capacity: Self.chunkSize)
        chunkCount += 1
    }

    private mutating func rehash(bucketCount: Int) {
        buckets.deallocate()
        buckets = .allocate(capacity: bucketCount)
        buckets.initialize(repeating: -1, count: bucketCount)
        bucketMask = bucketCount - 1
        var i = head
        while i >= 0 {
            let e = entry(i)
            let h = Self.hash(high: e.pointee.high, low: e.pointee.low, seed0: seed0, seed1: seed1)
            let b = Int(truncatingIfNeeded: h) & bucketMask
            e.pointee.chain = buckets[b]
            buckets[b] = i
            i = e.pointee.next
        }
    }

    /// Removes every idle entry; returns how many (the caller adjusts the table-wide count).
    mutating func purgeIdle(now: UInt64, params: ThrottleParameters) -> Int {
        var removed = 0
        var i = tail
        while i >= 0 {
            let prev = entry(i).pointee.prev
            if entry(i).pointee.isIdle(now: now, params: params) {
                release(i)
                removed += 1
            }
            i = prev
        }
        return removed
    }

    /// Forgets every entry and releases the storage; returns how many entries there were.
    mutating func removeAll() -> Int {
        let removed = Int(count)
        for i in 0..<chunkCount { chunks[i].deallocate() }
        chunkCount = 0
        buckets.deallocate()
        bucketMask = Self.initialBuckets - 1
        buckets = .allocate(capacity: Self.initialBuckets)
        buckets.initialize(repeating: -1, count: Self.initialBuckets)
        used = 0
        head = -1
        tail = -1
        freeHead = -1
        count = 0
        return removed
    }
}
