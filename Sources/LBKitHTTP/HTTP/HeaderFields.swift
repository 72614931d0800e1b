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
public struct HeaderFields: Sendable, Sequence, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    /// One field's line in ``storage``: `name ": " value "\r\n"` from `start`.
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
    }

    /// The wire lines of the fields (and, after removals, lines no longer indexed).
    @usableFromInline var storage: [UInt8]
    /// The fields in wire order.
    @usableFromInline var lines: [Line]

    /// An empty header list.
    public init() {
        storage = []
        lines = []
    }

    /// An empty header list with room for `capacity` fields of `bytes` wire bytes in all (the
    /// parsers: one allocation each instead of one per doubling).
    package init(reservingCapacity capacity: Int, bytes: Int = 0) {
        storage = []
        lines = []
        lines.reserveCapacity(capacity)
        storage.reserveCapacity(bytes > 0 ? bytes : capacity * 32)
    }

    /// A header list holding `fields` in order.
    public init(_ fields: [(String, String)]) {
        self.init()
        for (name, value) in fields { add(name: name, value: value) }
    }

    /// A header list from a literal, e.g. `["Content-Type": "text/plain"]`.
    public init(dictionaryLiteral elements: (String, String)...) { self.init(elements) }

    /// The number of fields.
    public var count: Int { lines.count }

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
        guard firstIndex(name: name) != nil else { return }
        var query = name
        query.withUTF8 { q in
            let q = UnsafeRawBufferPointer(q)
            let keep = storage.withUnsafeBytes { s in lines.filter { !Self.matches(s, $0, q) } }
            lines = keep
        }
        compactIfWasteful()
    }

    /// Removes the fields for which `shouldRemove` returns true (called once per field, in
    /// order, with the field's name and value as strings).
    public mutating func removeAll(where shouldRemove: (_ name: String, _ value: String) -> Bool) {
        var kept: [Line] = []
        var removed = false
        for line in lines {
            if shouldRemove(string(line.start, line.nameLength), string(line.valueStart, line.valueLength)) {
                removed = true
            } else {
                kept.append(line)
            }
        }
        guard removed else { return }
        lines = kept
        compactIfWasteful()
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
            let found = storage.withUnsafeBytes { s in lines.filter { Self.matches(s, $0, q) } }
            return found.map { string($0.valueStart, $0.valueLength) }
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
        let start = storage.count
        Self.append(name, to: &storage)
        storage.append(0x3A)
        storage.append(0x20)
        Self.append(value, to: &storage)
        storage.append(0x0D)
        storage.append(0x0A)
        lines.append(Line(start: start, nameLength: name.count, valueLength: value.count))
    }

    /// Appends field `i` of `other`, as one copy of its line.
    @inlinable
    package mutating func appendLine(from other: HeaderFields, at i: Int) {
        let line = other.lines[i]
        let start = storage.count
        other.storage.withUnsafeBytes { s in
            Self.append(UnsafeRawBufferPointer(rebasing: s[line.start..<line.end]), to: &storage)
        }
        lines.append(Line(start: start, nameLength: line.nameLength, valueLength: line.valueLength))
    }

    /// Calls `body` with each comma-separated element of field `i`'s value, without the
    /// whitespace around it, skipping empty ones (RFC 9110 5.6.1), e.g. the tokens of a
    /// `Connection` field.
    @inlinable
    package func forEachToken(inValueAt i: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        let line = lines[i]
        storage.withUnsafeBytes { s in
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
    package func nameLength(at i: Int) -> Int { lines[i].nameLength }

    /// Whether field `i`'s name is `name`, ASCII case-insensitively.
    @inlinable
    package func name(at i: Int, is name: StaticString) -> Bool {
        let line = lines[i]
        guard line.nameLength == name.utf8CodeUnitCount else { return false }
        return storage.withUnsafeBytes { s in
            Self.bytesEqualFoldingCase(
                s, line.start, UnsafeRawBufferPointer(start: name.utf8Start, count: line.nameLength), 0, line.nameLength)
        }
    }

    /// Whether field `i`'s name is `name`, ASCII case-insensitively.
    @inlinable
    package func name(at i: Int, equals name: String) -> Bool {
        var query = name
        return query.withUTF8 { q in storage.withUnsafeBytes { s in Self.matches(s, lines[i], UnsafeRawBufferPointer(q)) } }
    }

    /// Field `i`'s name as a string.
    package func name(at i: Int) -> String { string(lines[i].start, lines[i].nameLength) }

    /// Field `i`'s value as a string.
    package func value(at i: Int) -> String { string(lines[i].valueStart, lines[i].valueLength) }

    /// The index of the first field named `name`, or nil.
    package func firstIndex(name: String) -> Int? {
        var query = name
        return query.withUTF8 { q in
            let q = UnsafeRawBufferPointer(q)
            return storage.withUnsafeBytes { s in lines.firstIndex { Self.matches(s, $0, q) } }
        }
    }

    /// Appends field `i`'s wire line, `name: value\r\n`, to `buffer`.
    @inlinable
    package func appendWireLine(at i: Int, to buffer: inout [UInt8]) {
        let line = lines[i]
        storage.withUnsafeBytes { s in Self.append(UnsafeRawBufferPointer(rebasing: s[line.start..<line.end]), to: &buffer) }
    }

    /// Appends every field's wire line to `buffer`, in order.
    package func appendWire(to buffer: inout [UInt8]) {
        appendWire(to: &buffer) { _ in false }
    }

    /// Appends the wire lines of the fields `skip` returns false for, in order. Lines that lie
    /// next to each other in storage (all of them, for a parsed head) go in one copy.
    @inlinable
    package func appendWire(to buffer: inout [UInt8], skipping skip: (Int) -> Bool) {
        storage.withUnsafeBytes { s in
            var run = 0..<0
            for i in lines.indices where !skip(i) {
                let line = lines[i]
                if line.start == run.upperBound && !run.isEmpty {
                    run = run.lowerBound..<line.end
                } else {
                    if !run.isEmpty { Self.append(UnsafeRawBufferPointer(rebasing: s[run]), to: &buffer) }
                    run = line.start..<line.end
                }
            }
            if !run.isEmpty { Self.append(UnsafeRawBufferPointer(rebasing: s[run]), to: &buffer) }
        }
    }

    /// Appends the fields of `other` that `skip` returns false for, in order, copying runs of
    /// adjacent lines at once.
    @inlinable
    package mutating func appendLines(from other: HeaderFields, skipping skip: (Int) -> Bool) {
        let base = storage.count
        var copied = 0  // bytes of `other` appended so far
        var runStart = -1, runEnd = -1
        other.storage.withUnsafeBytes { s in
            for i in other.lines.indices where !skip(i) {
                let line = other.lines[i]
                if line.start != runEnd {
                    if runStart >= 0 {
                        Self.append(UnsafeRawBufferPointer(rebasing: s[runStart..<runEnd]), to: &storage)
                        copied += runEnd - runStart
                    }
                    runStart = line.start
                }
                runEnd = line.end
                lines.append(Line(start: base + copied + (line.start - runStart), nameLength: line.nameLength, valueLength: line.valueLength))
            }
            if runStart >= 0 { Self.append(UnsafeRawBufferPointer(rebasing: s[runStart..<runEnd]), to: &storage) }
        }
    }

    /// The number of bytes ``appendWire(to:)`` appends.
    package var wireByteCount: Int { lines.reduce(0) { $0 + $1.end - $1.start } }

    // MARK: Internals

    /// Appends `bytes` with one copy. (`append(contentsOf:)` with a raw buffer takes the generic
    /// element-by-element path, about 150 instructions for a short field; a typed buffer copies.)
    @inlinable @inline(__always)
    static func append(_ bytes: UnsafeRawBufferPointer, to buffer: inout [UInt8]) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        buffer.append(contentsOf: UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: bytes.count))
    }

    @usableFromInline
    func string(_ start: Int, _ length: Int) -> String {
        storage.withUnsafeBytes { s in
            String(decoding: UnsafeRawBufferPointer(rebasing: s[start..<start + length]), as: UTF8.self)
        }
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
        let live = wireByteCount
        guard storage.count > 256 && storage.count > 2 * live else { return }
        var fresh = HeaderFields(reservingCapacity: lines.count, bytes: live)
        for i in lines.indices { fresh.appendLine(from: self, at: i) }
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
        lines.reserveCapacity(lines.count + fields)
        storage.reserveCapacity(storage.count + bytes + 4 * fields)   // ": " and CRLF per line
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
        try storage.withUnsafeBytes { s in
            for line in lines {
                try body(UnsafeRawBufferPointer(rebasing: s[line.start..<(line.start + line.nameLength)]),
                         UnsafeRawBufferPointer(rebasing: s[line.valueStart..<(line.valueStart + line.valueLength)]))
            }
        }
    }
}
