// The storage behind ThrottleTable: cache-line-padded shards, each a Mutex around 64-entry
// chunks linked into an LRU list and hash chains. Separate from the table's public API
// (ThrottleTable.swift) and from the per-key GCRA arithmetic (ThrottleEntry.swift).

import Synchronization

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
