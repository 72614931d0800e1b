/// An ordered list of header fields with case-insensitive name look-up.
///
/// Field order and name spelling are preserved, so a proxy forwards headers as it received them.
///
/// ```swift
/// var headers = HeaderFields()
/// headers.add(name: "Content-Type", value: "application/json")
/// headers.first(name: "content-type")  // "application/json"
/// ```
///
/// ## Storage
/// The fields are kept as their wire lines, `name ": " value CRLF`, one after the other in one
/// byte buffer, with a small index of where each line starts. Why: a proxied request's head is
/// parsed, rewritten and written out again once per hop, and a list of `String` pairs cost a
/// string (and often a heap allocation and a reference count) per name and value, a validation
/// per string, a retain per field each time the list was copied, and a copy per field on the way
/// out. Now parsing appends each line's bytes, forwarding copies lines, writing a head copies
/// lines, and a `String` is only made when someone asks for a name or a value.
public struct HeaderFields: @unchecked Sendable, Sequence, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    /// One field's line in the buffer: `name ": " value "\r\n"` from `start` (decoded from an
    /// index entry, see ``HeaderFieldsBuffer``).
    @usableFromInline
    struct Line: Sendable {
        @usableFromInline var start: Int
        @usableFromInline var nameLength: Int
        @usableFromInline var valueLength: Int

        @inlinable @inline(__always)
        init(start: Int, nameLength: Int, valueLength: Int) {
            self.start = start
            self.nameLength = nameLength
            self.valueLength = valueLength
        }

        @inlinable @inline(__always) var valueStart: Int { start + nameLength + 2 }
        @inlinable @inline(__always) var end: Int { start + nameLength + valueLength + 4 }
        @inlinable @inline(__always) var length: Int { nameLength + valueLength + 4 }
    }

    /// The list's one heap object, wire lines and line index together (nil: empty, nothing
    /// reserved). Shared between copies and copied before a write when shared.
    @usableFromInline var buffer: HeaderFieldsBuffer?

    /// An empty header list.
    public init() {
        buffer = nil
    }

    /// An empty header list with room for `capacity` fields of `bytes` wire bytes in all (the
    /// parsers, forwarding: one allocation for the whole list).
    package init(reservingCapacity capacity: Int, bytes: Int = 0) {
        let bytes = bytes > 0 ? bytes : capacity * 32
        buffer = capacity > 0 || bytes > 0
            ? HeaderFieldsBuffer.make(capacity: HeaderFieldsBuffer.capacity(bytes: bytes, lines: capacity, atLeast: 0))
            : nil
    }

    /// A header list holding `fields` in order.
    public init(_ fields: [(String, String)]) {
        self.init()
        for (name, value) in fields { add(name: name, value: value) }
    }

    /// A header list from a literal, e.g. `["Content-Type": "text/plain"]`.
    public init(dictionaryLiteral elements: (String, String)...) { self.init(elements) }

    /// The number of fields.
    public var count: Int { buffer?.counts.lineCount ?? 0 }

    /// The fields in wire order, as strings (made on each call: prefer iterating, or
    /// ``first(name:)``, on a hot path).
    public var fields: [(name: String, value: String)] { map { $0 } }

    /// Appends a field.
    public mutating func add(name: String, value: String) {
        var name = name, value = value
        name.withUTF8 { n in
            value.withUTF8 { v in appendLine(name: UnsafeRawBufferPointer(n), value: UnsafeRawBufferPointer(v)) }
        }
    }

    /// Removes every field named `name` and appends one with `value`.
    public mutating func replaceOrAdd(name: String, value: String) {
        remove(name: name)
        add(name: name, value: value)
    }

    /// Removes every field named `name` (case-insensitive).
    ///
    /// Hot path: the list is only written to when a field goes, so removing a field that is not
    /// there costs no copy of a list shared with another value (copy-on-write).
    public mutating func remove(name: String) {
        var query = name
        query.withUTF8 { q in
            let q = UnsafeRawBufferPointer(q)
            removeLines { s, line in Self.matches(s, line, q) }
        }
    }

    /// Removes the fields for which `shouldRemove` returns true (called once per field, in
    /// order, with the field's name and value as strings).
    public mutating func removeAll(where shouldRemove: (_ name: String, _ value: String) -> Bool) {
        removeLines { s, line in
            shouldRemove(Self.string(s, line.start, line.nameLength), Self.string(s, line.valueStart, line.valueLength))
        }
    }

    /// The value of the first field named `name`, or nil.
    public func first(name: String) -> String? {
        guard let i = firstIndex(name: name) else { return nil }
        return value(at: i)
    }

    /// The values of every field named `name`, in order.
    public subscript(name: String) -> [String] {
        var query = name
        return query.withUTF8 { q in
            let q = UnsafeRawBufferPointer(q)
            return withContents { c in
                var found: [String] = []
                for i in 0..<c.lineCount {
                    let line = c.line(i)
                    if Self.matches(c.bytes, line, q) { found.append(Self.string(c.bytes, line.valueStart, line.valueLength)) }
                }
                return found
            }
        }
    }

    /// Whether a field named `name` is present.
    public func contains(name: String) -> Bool { firstIndex(name: name) != nil }

    /// Iterates the fields in wire order.
    public func makeIterator() -> Iterator { Iterator(fields: self) }

    /// Iterates the fields of a ``HeaderFields`` in wire order, making each name and value
    /// string as it goes.
    public struct Iterator: IteratorProtocol {
        let fields: HeaderFields
        var position = 0

        /// The next field, or nil after the last.
        public mutating func next() -> (name: String, value: String)? {
            guard position < fields.count else { return nil }
            defer { position += 1 }
            return (fields.name(at: position), fields.value(at: position))
        }
    }

    public var description: String { map { "\($0.name): \($0.value)" }.joined(separator: "\n") }

    /// ASCII case-insensitive comparison of two field names.
    ///
    /// ```swift
    /// HeaderFields.namesEqual("content-type", "Content-Type")  // true
    /// ```
    @inlinable
    public static func namesEqual(_ a: String, _ b: String) -> Bool {
        var a = a, b = b
        guard a.utf8.count == b.utf8.count else { return false }
        return a.withUTF8 { pa in
            b.withUTF8 { pb in bytesEqualFoldingCase(UnsafeRawBufferPointer(pa), 0, UnsafeRawBufferPointer(pb), 0, pa.count) }
        }
    }

    // MARK: Internals

    /// A read-only view of the list's bytes and line index, valid while `self` holds the same
    /// buffer: in a non-mutating method (or for a parameter) for the whole call, since `self` is
    /// borrowed and the buffer it references stays alive and unchanged. A view instead of a
    /// closure so that readers compile to straight-line code across modules.
    @inlinable @inline(__always)
    var contents: HeaderFieldsContents {
        guard let buffer else { return HeaderFieldsContents(base: nil, byteCount: 0, lineCount: 0, capacity: 0) }
        return buffer.withUnsafeMutablePointers { c, e in
            HeaderFieldsContents(
                base: UnsafeRawPointer(e), byteCount: c.pointee.byteCount, lineCount: c.pointee.lineCount,
                capacity: c.pointee.capacity)
        }
    }

    /// Calls `body` with ``contents``.
    @inlinable @inline(__always)
    func withContents<R>(_ body: (HeaderFieldsContents) throws -> R) rethrows -> R {
        try withExtendedLifetime(buffer) { try body(contents) }
    }

    /// Pointers to the buffer, owned by this value alone, with room for `bytes` more bytes and
    /// `lines` more index entries: the one check before every write (copy-on-write, growth). The
    /// pointers stay valid until `self.buffer` is replaced (the next `makeRoom` may do so).
    @inlinable @inline(__always)
    mutating func makeRoom(bytes: Int, lines: Int) -> HeaderFieldsWriter {
        if !isKnownUniquelyReferenced(&buffer) || !buffer.unsafelyUnwrapped.counts.hasRoom(bytes: bytes, lines: lines) {
            reallocate(bytes: bytes, lines: lines)
        }
        return buffer.unsafelyUnwrapped.withUnsafeMutablePointers { c, e in
            HeaderFieldsWriter(counts: c, base: UnsafeMutableRawPointer(e))
        }
    }

    /// Replaces the buffer with one holding its contents and room for `bytes` more bytes and
    /// `lines` more entries: twice the size when growing (so a list built field by field
    /// reallocates a logarithmic number of times), the same size when only copying a shared one.
    @usableFromInline
    mutating func reallocate(bytes: Int, lines: Int) {
        let fresh: HeaderFieldsBuffer
        if let old = buffer {
            let counts = old.counts
            let target = counts.hasRoom(bytes: bytes, lines: lines) ? counts.capacity : Swift.max(64, 2 * counts.capacity)
            fresh = HeaderFieldsBuffer.make(capacity: HeaderFieldsBuffer.capacity(
                bytes: counts.byteCount + bytes, lines: counts.lineCount + lines, atLeast: target))
            fresh.copyContents(of: old)
        } else {
            fresh = HeaderFieldsBuffer.make(capacity: HeaderFieldsBuffer.capacity(bytes: bytes, lines: lines, atLeast: 64))
        }
        buffer = fresh
    }

    /// Removes the hop-by-hop fields a proxy must not forward (RFC 9110 7.6.1): `Connection` and
    /// the fields it names (`named`, lowercase or not), `Keep-Alive`, `Proxy-Connection`, `TE`,
    /// `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`,
    /// and `Content-Length` (the sender frames the message itself) unless
    /// `keepingFirstContentLength` (a HEAD or 304 answer keeps the length the GET would have,
    /// RFC 9110 8.6). Edited in place when the list owns its buffer alone.
    ///
    /// ```swift
    /// var fields: HeaderFields = ["Connection": "close", "Content-Type": "text/plain"]
    /// fields.removeHopByHop(keepingFirstContentLength: false, named: [])
    /// ```
    package mutating func removeHopByHop(keepingFirstContentLength: Bool, named: [String]) {
        var keepLength = keepingFirstContentLength
        removeLines { s, line in
            let n = line.nameLength
            if n == 14 && keepLength && Self.isName(s, line, "Content-Length") {
                keepLength = false
                return false
            }
            if Self.isHopByHopByDefault(s, line) { return true }
            guard !named.isEmpty else { return false }
            return named.contains { token in
                var token = token
                return token.withUTF8 { Self.matches(s, line, UnsafeRawBufferPointer($0)) }
            }
        }
    }

    /// Whether `line`'s name is one of the fields a proxy always drops (see
    /// ``removeHopByHop(keepingFirstContentLength:named:)``).
    @inline(__always)
    static func isHopByHopByDefault(_ s: UnsafeRawBufferPointer, _ line: Line) -> Bool {
        isHopByHopByDefault(s, at: line.start, count: line.nameLength)
    }

    /// Whether field `i`'s name is one of the fields a proxy always drops.
    @inlinable
    package func isHopByHopByDefault(at i: Int) -> Bool {
        let c = contents
        let line = c.line(i)
        return Self.isHopByHopByDefault(c.bytes, at: line.start, count: line.nameLength)
    }

    /// Whether the `count` bytes of `s` from `start` name one of the fields a proxy always
    /// drops: `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
    /// `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization` (RFC 9110
    /// 7.6.1) and `Content-Length` (the sender frames the message itself). The length picks the
    /// candidates before any byte is compared. The one list of these names.
    @inlinable @inline(__always)
    package static func isHopByHopByDefault(_ s: UnsafeRawBufferPointer, at start: Int, count: Int) -> Bool {
        func named(_ name: StaticString) -> Bool { bytes(s, at: start, count: count, equalFoldingCase: name) }
        switch count {
        case 2: return named("TE")
        case 7: return named("Trailer") || named("Upgrade")
        case 10: return named("Connection") || named("Keep-Alive")
        case 14: return named("Content-Length")
        case 16: return named("Proxy-Connection")
        case 17: return named("Transfer-Encoding")
        case 18: return named("Proxy-Authenticate")
        case 19: return named("Proxy-Authorization")
        default: return false
        }
    }

    /// Whether `line`'s name in `s` is `name`.
    @inline(__always)
    static func isName(_ s: UnsafeRawBufferPointer, _ line: Line, _ name: StaticString) -> Bool {
        bytes(s, at: line.start, count: line.nameLength, equalFoldingCase: name)
    }

    /// Drops the fields for which `drop` returns true (called once per field, in order, with the
    /// list's bytes and the field's line). Nothing is written when no field goes, so a shared
    /// list stays shared.
    @usableFromInline @inline(__always)
    mutating func removeLines(where drop: (UnsafeRawBufferPointer, Line) -> Bool) {
        guard let first = withContents({ c in (0..<c.lineCount).first { drop(c.bytes, c.line($0)) } }) else { return }
        if isKnownUniquelyReferenced(&buffer), let buffer {
            // Ours alone: close the gaps in the index; the dropped lines' bytes stay until compaction.
            buffer.withUnsafeMutablePointers { c, e in
                let base = UnsafeMutableRawPointer(e)
                let capacity = c.pointee.capacity
                let s = UnsafeRawBufferPointer(start: base, count: c.pointee.byteCount)
                var kept = first
                var dead = HeaderFieldsBuffer.load(at: first, in: base, capacity: capacity).length
                for i in (first + 1)..<c.pointee.lineCount {
                    let line = HeaderFieldsBuffer.load(at: i, in: base, capacity: capacity)
                    if drop(s, line) {
                        dead += line.length
                    } else {
                        HeaderFieldsBuffer.store(line, at: kept, in: base, capacity: capacity)
                        kept += 1
                    }
                }
                c.pointee.lineCount = kept
                c.pointee.deadBytes += dead
            }
        } else {
            // Shared: a new list with the kept lines only (the other values keep the old one).
            let old = self
            let fresh = withContents { c in
                var fresh = HeaderFields(reservingCapacity: c.lineCount - 1, bytes: wireByteCount)
                fresh.appendLines(from: old) { i in i == first || (i > first && drop(c.bytes, c.line(i))) }
                return fresh
            }
            self = fresh
        }
        compactIfWasteful()
    }

    /// Appends `bytes` with one copy. (`append(contentsOf:)` with a raw buffer takes the generic
    /// element-by-element path, about 150 instructions for a short field; a typed buffer copies.)
    @inlinable @inline(__always)
    static func append(_ bytes: UnsafeRawBufferPointer, to buffer: inout [UInt8]) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        buffer.append(contentsOf: UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: bytes.count))
    }

    @usableFromInline
    static func string(_ s: UnsafeRawBufferPointer, _ start: Int, _ length: Int) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: s[start..<start + length]), as: UTF8.self)
    }

    /// Whether `line`'s name in `s` is `query`, ASCII case-insensitively.
    @inlinable @inline(__always)
    static func matches(_ s: UnsafeRawBufferPointer, _ line: Line, _ query: UnsafeRawBufferPointer) -> Bool {
        line.nameLength == query.count && bytesEqualFoldingCase(s, line.start, query, 0, query.count)
    }

    /// Whether `count` bytes of `a` from `i` equal those of `b` from `j`, folding ASCII letters
    /// only (field names are tokens, RFC 9110 5.1). Names are mostly compared with their
    /// canonical spelling: equal 8-byte words are skipped first, then bytes are folded.
    @inlinable @inline(__always)
    static func bytesEqualFoldingCase(
        _ a: UnsafeRawBufferPointer, _ i: Int, _ b: UnsafeRawBufferPointer, _ j: Int, _ count: Int
    ) -> Bool {
        guard count > 0, let pa = a.baseAddress, let pb = b.baseAddress else { return count == 0 }
        var k = 0
        while count - k >= 8
            && pa.loadUnaligned(fromByteOffset: i + k, as: UInt64.self) == pb.loadUnaligned(fromByteOffset: j + k, as: UInt64.self)
        {
            k += 8
        }
        while k < count {
            let x = pa.load(fromByteOffset: i + k, as: UInt8.self), y = pb.load(fromByteOffset: j + k, as: UInt8.self)
            if !asciiCaseInsensitiveEqual(x, y) { return false }
            k += 1
        }
        return true
    }

    /// Whether two bytes are equal, folding ASCII letters only.
    @inlinable @inline(__always)
    static func asciiCaseInsensitiveEqual(_ x: UInt8, _ y: UInt8) -> Bool {
        x == y || (x | 0x20 == y | 0x20 && (x | 0x20) >= 0x61 && (x | 0x20) <= 0x7A)
    }

    /// After removals, copies the live lines into a new buffer when the dead ones take more
    /// room than the live ones (so a list edited in a loop does not grow without bound).
    mutating func compactIfWasteful() {
        let stored = storedByteCount, live = wireByteCount
        guard stored > 256 && stored > 2 * live else { return }
        var fresh = HeaderFields(reservingCapacity: count, bytes: live)
        fresh.appendLines(from: self) { _ in false }
        self = fresh
    }
}
