/// The storage behind `HeaderFields`: one `ManagedBuffer` region per list, wire lines from its
/// start and the line index from its end, and the views readers and writers take of it. Kept
/// apart because its invariants (offsets, entry widths, copy-on-write) are its own.

// MARK: Storage: one allocation per list

/// The counts kept in front of a ``HeaderFieldsBuffer``'s bytes.
@usableFromInline
struct HeaderFieldsCounts: Sendable {
    /// Bytes of wire lines, written from the start of the region.
    @usableFromInline var byteCount: Int
    /// Entries of the line index, written from the end of the region backwards.
    @usableFromInline var lineCount: Int
    /// The region's size in bytes (a multiple of 8). It also decides the width of an index entry.
    @usableFromInline var capacity: Int
    /// Bytes of lines no longer indexed (after removals, until compaction).
    @usableFromInline var deadBytes: Int

    @inlinable @inline(__always)
    init(byteCount: Int, lineCount: Int, capacity: Int, deadBytes: Int) {
        self.byteCount = byteCount
        self.lineCount = lineCount
        self.capacity = capacity
        self.deadBytes = deadBytes
    }

    /// Whether `bytes` more bytes and `lines` more index entries fit.
    @inlinable @inline(__always)
    func hasRoom(bytes: Int, lines: Int) -> Bool {
        capacity - byteCount - (lineCount + lines) * HeaderFieldsBuffer.entryWidth(capacity: capacity) >= bytes
    }
}

/// One heap object holding a whole header list: a region whose wire lines grow from the start and
/// whose line index grows from the end backwards, entry `i` at `capacity - (i + 1) * width`.
///
/// Why: two arrays (bytes, index) cost two allocations per list, and a proxied request makes four
/// lists (request parsed, request forwarded, response parsed, response forwarded). An index entry
/// is three `UInt16`s (start, name length, value length) in a region of at most 65,535 bytes
/// (every head within the parsers' default limits), three `Int`s in a larger one, so an offset
/// always fits its entry: the width follows the region's size, chosen when it is allocated.
///
/// Written only through the ``HeaderFields`` value that holds the only reference to it (see why
/// that value is `Sendable`).
@usableFromInline
final class HeaderFieldsBuffer: ManagedBuffer<HeaderFieldsCounts, UInt8> {
    /// The largest region whose index entries are three `UInt16`s.
    @inlinable @inline(__always)
    static var narrowLimit: Int { 0xFFFF }

    /// The counts, read through the header pointer: `header` is a stored class property, and
    /// each access to it costs a dynamic exclusivity check (about 170 instructions).
    @inlinable @inline(__always)
    var counts: HeaderFieldsCounts { withUnsafeMutablePointerToHeader { $0.pointee } }

    /// Bytes per index entry in a region of `capacity` bytes.
    @inlinable @inline(__always)
    static func entryWidth(capacity: Int) -> Int { capacity <= narrowLimit ? 6 : 24 }

    /// The smallest region size, a multiple of 8 and at least `minimum`, holding `bytes` bytes and
    /// `lines` index entries (of the width that size implies).
    @usableFromInline
    static func capacity(bytes: Int, lines: Int, atLeast minimum: Int) -> Int {
        let narrow = roundUp(max(minimum, bytes + lines * 6))
        return narrow <= narrowLimit ? narrow : roundUp(max(minimum, bytes + lines * 24))
    }

    @inline(__always)
    static func roundUp(_ n: Int) -> Int { (n + 7) & ~7 }

    /// An empty buffer with a region of `capacity` bytes.
    @usableFromInline
    static func make(capacity: Int) -> HeaderFieldsBuffer {
        let made = create(minimumCapacity: capacity) { _ in
            HeaderFieldsCounts(byteCount: 0, lineCount: 0, capacity: capacity, deadBytes: 0)
        }
        return unsafeDowncast(made, to: HeaderFieldsBuffer.self)
    }

    /// Index entry `i` of a region at `base` of `capacity` bytes. (Wrapping arithmetic: `i` is
    /// below the entry count, whose entries fit in the region, so nothing can overflow.)
    @inlinable @inline(__always)
    static func load(at i: Int, in base: UnsafeRawPointer, capacity: Int) -> HeaderFields.Line {
        if capacity <= narrowLimit {
            let p = base + (capacity &- (i &+ 1) &* 6)
            return HeaderFields.Line(
                start: Int(p.loadUnaligned(as: UInt16.self)),
                nameLength: Int(p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)),
                valueLength: Int(p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
        }
        let p = base + (capacity &- (i &+ 1) &* 24)
        return HeaderFields.Line(
            start: p.loadUnaligned(as: Int.self),
            nameLength: p.loadUnaligned(fromByteOffset: 8, as: Int.self),
            valueLength: p.loadUnaligned(fromByteOffset: 16, as: Int.self))
    }

    /// Writes index entry `i`. In a narrow region every offset and length is below its size, so
    /// the truncation never loses bits (the callers make room up to the line's end first).
    @inlinable @inline(__always)
    static func store(_ line: HeaderFields.Line, at i: Int, in base: UnsafeMutableRawPointer, capacity: Int) {
        if capacity <= narrowLimit {
            let p = base + (capacity &- (i &+ 1) &* 6)
            p.storeBytes(of: UInt16(truncatingIfNeeded: line.start), as: UInt16.self)
            p.storeBytes(of: UInt16(truncatingIfNeeded: line.nameLength), toByteOffset: 2, as: UInt16.self)
            p.storeBytes(of: UInt16(truncatingIfNeeded: line.valueLength), toByteOffset: 4, as: UInt16.self)
        } else {
            let p = base + (capacity &- (i &+ 1) &* 24)
            p.storeBytes(of: line.start, as: Int.self)
            p.storeBytes(of: line.nameLength, toByteOffset: 8, as: Int.self)
            p.storeBytes(of: line.valueLength, toByteOffset: 16, as: Int.self)
        }
    }

    /// Copies `old`'s bytes, index and counts into this (empty, large enough) buffer.
    func copyContents(of old: HeaderFieldsBuffer) {
        old.withUnsafeMutablePointers { oc, oe in
            withUnsafeMutablePointers { nc, ne in
                let from = UnsafeRawPointer(oe), to = UnsafeMutableRawPointer(ne)
                let counts = oc.pointee
                let capacity = nc.pointee.capacity
                to.copyMemory(from: from, byteCount: counts.byteCount)
                let oldWidth = Self.entryWidth(capacity: counts.capacity), width = Self.entryWidth(capacity: capacity)
                if oldWidth == width {
                    let size = counts.lineCount * width
                    (to + (capacity - size)).copyMemory(from: from + (counts.capacity - size), byteCount: size)
                } else {
                    for i in 0..<counts.lineCount {
                        Self.store(Self.load(at: i, in: from, capacity: counts.capacity), at: i, in: to, capacity: capacity)
                    }
                }
                nc.pointee = HeaderFieldsCounts(
                    byteCount: counts.byteCount, lineCount: counts.lineCount, capacity: capacity, deadBytes: counts.deadBytes)
            }
        }
    }
}

/// Where a write goes: the counts and the region of a buffer a ``HeaderFields`` value owns alone
/// (from ``HeaderFields/makeRoom(bytes:lines:)``).
@usableFromInline
struct HeaderFieldsWriter {
    @usableFromInline let counts: UnsafeMutablePointer<HeaderFieldsCounts>
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable @inline(__always)
    init(counts: UnsafeMutablePointer<HeaderFieldsCounts>, base: UnsafeMutableRawPointer) {
        self.counts = counts
        self.base = base
    }

    /// Adds `line` as the last index entry (room made beforehand).
    @inlinable @inline(__always)
    func append(_ line: HeaderFields.Line) {
        HeaderFieldsBuffer.store(line, at: counts.pointee.lineCount, in: base, capacity: counts.pointee.capacity)
        counts.pointee.lineCount += 1
    }
}

/// A read-only view of a header list's bytes and line index (see ``HeaderFields/contents``).
@usableFromInline
struct HeaderFieldsContents {
    /// The region's start (nil for an empty list with no buffer).
    @usableFromInline let base: UnsafeRawPointer?
    @usableFromInline let byteCount: Int
    @usableFromInline let lineCount: Int
    @usableFromInline let capacity: Int

    @inlinable @inline(__always)
    init(base: UnsafeRawPointer?, byteCount: Int, lineCount: Int, capacity: Int) {
        self.base = base
        self.byteCount = byteCount
        self.lineCount = lineCount
        self.capacity = capacity
    }

    /// The wire lines (and dead bytes between them).
    @inlinable @inline(__always)
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: byteCount) }

    /// Field `i`'s line (traps on an index out of range, like an array).
    @inlinable @inline(__always)
    func line(_ i: Int) -> HeaderFields.Line {
        precondition(UInt(bitPattern: i) < UInt(bitPattern: lineCount), "HeaderFields index out of range")
        return HeaderFieldsBuffer.load(at: i, in: base.unsafelyUnwrapped, capacity: capacity)
    }
}
