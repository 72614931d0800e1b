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

    // MARK: Byte-level access for the engine (no strings made)

    /// Appends a field from bytes the caller has validated (the parsers).
    @inlinable
    package mutating func appendLine(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let length = name.count + value.count + 4
        let w = makeRoom(bytes: length, lines: 1)
        let start = w.counts.pointee.byteCount
        let p = w.base + start
        UnsafeMutableRawBufferPointer(start: p, count: name.count).copyMemory(from: name)
        p.storeBytes(of: 0x3A, toByteOffset: name.count, as: UInt8.self)
        p.storeBytes(of: 0x20, toByteOffset: name.count + 1, as: UInt8.self)
        UnsafeMutableRawBufferPointer(start: p + name.count + 2, count: value.count).copyMemory(from: value)
        p.storeBytes(of: 0x0D, toByteOffset: length - 2, as: UInt8.self)
        p.storeBytes(of: 0x0A, toByteOffset: length - 1, as: UInt8.self)
        w.append(Line(start: start, nameLength: name.count, valueLength: value.count))
        w.counts.pointee.byteCount = start + length
    }

    /// Appends field `i` of `other`, as one copy of its line.
    @inlinable
    package mutating func appendLine(from other: HeaderFields, at i: Int) {
        let source = other.contents
        let line = source.line(i)
        let w = makeRoom(bytes: line.length, lines: 1)
        let start = w.counts.pointee.byteCount
        UnsafeMutableRawBufferPointer(start: w.base + start, count: line.length)
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: source.bytes[line.start..<line.end]))
        w.append(Line(start: start, nameLength: line.nameLength, valueLength: line.valueLength))
        w.counts.pointee.byteCount = start + line.length
    }

    /// Calls `body` with each comma-separated element of field `i`'s value, without the
    /// whitespace around it, skipping empty ones (RFC 9110 5.6.1), e.g. the tokens of a
    /// `Connection` field.
    @inlinable
    package func forEachToken(inValueAt i: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        let c = contents
        let line = c.line(i)
        let s = c.bytes
        let end = line.valueStart + line.valueLength
        var k = line.valueStart
        while k < end {
            var e = k
            while e < end && s[e] != 0x2C { e += 1 }
            var a = k, b = e
            while a < b && (s[a] == 0x20 || s[a] == 0x09) { a += 1 }
            while b > a && (s[b - 1] == 0x20 || s[b - 1] == 0x09) { b -= 1 }
            if b > a { body(UnsafeRawBufferPointer(rebasing: s[a..<b])) }
            k = e + 1
        }
    }

    /// Whether field `i`'s value lists `token` (ASCII case-insensitive), e.g. `upgrade` in a
    /// `Connection` field.
    @inlinable
    package func value(at i: Int, hasToken token: StaticString) -> Bool {
        var found = false
        forEachToken(inValueAt: i) { t in
            if !found && Self.bytes(t, equalFoldingCase: token) { found = true }
        }
        return found
    }

    /// Whether `bytes` spell `literal`, ASCII case-insensitively.
    @inlinable @inline(__always)
    package static func bytes(_ bytes: UnsafeRawBufferPointer, equalFoldingCase literal: StaticString) -> Bool {
        bytes.count == literal.utf8CodeUnitCount
            && bytesEqualFoldingCase(bytes, 0, UnsafeRawBufferPointer(start: literal.utf8Start, count: bytes.count), 0, bytes.count)
    }

    /// The byte length of field `i`'s name (to classify names before comparing bytes).
    @inlinable
    package func nameLength(at i: Int) -> Int { contents.line(i).nameLength }

    /// Whether field `i`'s name is `name`, ASCII case-insensitively.
    @inlinable
    package func name(at i: Int, is name: StaticString) -> Bool {
        let c = contents
        let line = c.line(i)
        guard line.nameLength == name.utf8CodeUnitCount else { return false }
        return Self.bytesEqualFoldingCase(
            c.bytes, line.start, UnsafeRawBufferPointer(start: name.utf8Start, count: line.nameLength), 0, line.nameLength)
    }

    /// Whether field `i`'s name is `name`, ASCII case-insensitively.
    @inlinable
    package func name(at i: Int, equals name: String) -> Bool {
        var query = name
        return query.withUTF8 { q in withContents { c in Self.matches(c.bytes, c.line(i), UnsafeRawBufferPointer(q)) } }
    }

    /// Field `i`'s name as a string.
    package func name(at i: Int) -> String {
        withContents { c in
            let line = c.line(i)
            return Self.string(c.bytes, line.start, line.nameLength)
        }
    }

    /// Field `i`'s value as a string.
    package func value(at i: Int) -> String {
        withContents { c in
            let line = c.line(i)
            return Self.string(c.bytes, line.valueStart, line.valueLength)
        }
    }

    /// The index of the first field named `name`, or nil.
    package func firstIndex(name: String) -> Int? {
        var query = name
        return query.withUTF8 { q in
            let q = UnsafeRawBufferPointer(q)
            return withContents { c in (0..<c.lineCount).first { Self.matches(c.bytes, c.line($0), q) } }
        }
    }

    /// Appends field `i`'s wire line, `name: value\r\n`, to `buffer`.
    @inlinable
    package func appendWireLine(at i: Int, to buffer: inout [UInt8]) {
        let c = contents
        let line = c.line(i)
        Self.append(UnsafeRawBufferPointer(rebasing: c.bytes[line.start..<line.end]), to: &buffer)
    }

    /// Appends every field's wire line to `buffer`, in order.
    package func appendWire(to buffer: inout [UInt8]) {
        appendWire(to: &buffer) { _ in false }
    }

    /// Appends the wire lines of the fields `skip` returns false for, in order. Lines that lie
    /// next to each other in storage (all of them, for a parsed head) go in one copy.
    @inlinable
    package func appendWire(to buffer: inout [UInt8], skipping skip: (Int) -> Bool) {
        let c = contents
        let s = c.bytes
        var run = 0..<0
        for i in 0..<c.lineCount where !skip(i) {
            let line = c.line(i)
            if line.start == run.upperBound && !run.isEmpty {
                run = run.lowerBound..<line.end
            } else {
                if !run.isEmpty { Self.append(UnsafeRawBufferPointer(rebasing: s[run]), to: &buffer) }
                run = line.start..<line.end
            }
        }
        if !run.isEmpty { Self.append(UnsafeRawBufferPointer(rebasing: s[run]), to: &buffer) }
    }

    /// Appends the fields of `other` that `skip` returns false for, in order, copying runs of
    /// adjacent lines at once.
    @inlinable
    package mutating func appendLines(from other: HeaderFields, skipping skip: (Int) -> Bool) {
        let n = other.count
        guard n > 0 else { return }
        // Room for all of them (an upper bound: `skip` is called once per field, below).
        let w = makeRoom(bytes: other.wireByteCount, lines: n)
        let source = other.contents
        let s = source.bytes
        let base = w.base
        var written = w.counts.pointee.byteCount
        var runStart = -1, runEnd = -1
        for i in 0..<n where !skip(i) {
            let line = source.line(i)
            if line.start != runEnd {
                if runStart >= 0 {
                    UnsafeMutableRawBufferPointer(start: base + written, count: runEnd - runStart)
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: s[runStart..<runEnd]))
                    written += runEnd - runStart
                }
                runStart = line.start
            }
            runEnd = line.end
            w.append(Line(start: written + (line.start - runStart), nameLength: line.nameLength, valueLength: line.valueLength))
        }
        if runStart >= 0 {
            UnsafeMutableRawBufferPointer(start: base + written, count: runEnd - runStart)
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: s[runStart..<runEnd]))
            written += runEnd - runStart
        }
        w.counts.pointee.byteCount = written
    }

    /// The number of bytes ``appendWire(to:)`` appends.
    @inlinable
    package var wireByteCount: Int {
        guard let header = buffer?.counts else { return 0 }
        return header.byteCount - header.deadBytes
    }

    // MARK: Building a list from a parsed field block (the parsers)

    /// Indexes a field whose wire line will start at `start` once the bytes before its end are
    /// appended with ``appendBytes(_:)``: a parser indexes the lines of a field block first and
    /// copies the block in once at the end. Keeps room for the bytes up to the line's end, so the
    /// index never overlaps them and each offset fits its entry.
    @inline(__always)
    mutating func indexLine(start: Int, nameLength: Int, valueLength: Int) {
        let line = Line(start: start, nameLength: nameLength, valueLength: valueLength)
        let pending = Swift.max(0, line.end - (buffer?.counts.byteCount ?? 0))
        makeRoom(bytes: pending, lines: 1).append(line)
    }

    /// Appends `bytes` (lines indexed beforehand with ``indexLine(start:nameLength:valueLength:)``).
    mutating func appendBytes(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let w = makeRoom(bytes: bytes.count, lines: 0)
        UnsafeMutableRawBufferPointer(start: w.base + w.counts.pointee.byteCount, count: bytes.count).copyMemory(from: bytes)
        w.counts.pointee.byteCount += bytes.count
    }

    /// Bytes in the buffer, including lines no longer indexed (tests: compaction).
    var storedByteCount: Int { buffer?.counts.byteCount ?? 0 }

    /// The buffer's identity (tests: sharing between copies).
    var bufferIdentity: ObjectIdentifier? { buffer.map { ObjectIdentifier($0) } }

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

    /// Drops the fields for which `drop` returns true (called once per field, in order, with the
    /// list's bytes and the field's line). Nothing is written when no field goes, so a shared
    /// list stays shared.
    @usableFromInline
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

// MARK: Byte-level access for framework integrations

extension HeaderFields {
    /// Room for `fields` more fields of `bytes` more name and value bytes in all, so a list built
    /// field by field (converting another framework's headers) allocates once.
    ///
    /// ```swift
    /// var headers = HeaderFields()
    /// headers.reserveCapacity(fields: 2, bytes: 40)
    /// headers.add(name: "Host", value: "example.com")
    /// ```
    public mutating func reserveCapacity(fields: Int, bytes: Int) {
        guard fields > 0 || bytes > 0 else { return }
        reallocateUnlessRoom(bytes: Swift.max(0, bytes) + 4 * Swift.max(0, fields), lines: Swift.max(0, fields))   // ": " and CRLF per line
    }

    /// ``makeRoom(bytes:lines:)`` for its effect only.
    private mutating func reallocateUnlessRoom(bytes: Int, lines: Int) {
        if !isKnownUniquelyReferenced(&buffer) || !buffer.unsafelyUnwrapped.counts.hasRoom(bytes: bytes, lines: lines) {
            reallocate(bytes: bytes, lines: lines)
        }
    }

    /// Calls `body` with each field's name and value bytes, in wire order, without making
    /// strings (converting to another framework's header type). The buffers are valid only
    /// during the call.
    ///
    /// ```swift
    /// let headers: HeaderFields = ["Content-Type": "text/plain"]
    /// headers.forEachField { name, value in
    ///     print(String(decoding: name, as: UTF8.self), value.count)   // Content-Type 10
    /// }
    /// ```
    @inlinable
    public func forEachField(
        _ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Void
    ) rethrows {
        try withContents { c in
            let s = c.bytes
            for i in 0..<c.lineCount {
                let line = c.line(i)
                try body(UnsafeRawBufferPointer(rebasing: s[line.start..<(line.start + line.nameLength)]),
                         UnsafeRawBufferPointer(rebasing: s[line.valueStart..<(line.valueStart + line.valueLength)]))
            }
        }
    }
}

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
