/// `HeaderFields`' byte-level API: what the engine (parsers, forwarding, serializers) and the
/// framework integrations use to read and build header lists without making strings. Kept apart
/// from the type's public `String` API (HeaderFields.swift) and from its storage
/// (HeaderFieldsStorage.swift) because it is the hot path's own vocabulary.

extension HeaderFields {
    // MARK: Byte-level access for the engine (no strings made)

    /// Appends a field named by a literal the code vouches for (a valid token), with `value`
    /// bytes the caller has validated: no string is made.
    @inlinable @inline(__always)
    package mutating func appendLine(name: StaticString, value: UnsafeRawBufferPointer) {
        appendLine(name: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount), value: value)
    }

    /// Appends a field whose name and value are both literals the code vouches for.
    @inlinable @inline(__always)
    package mutating func appendLine(name: StaticString, value: StaticString) {
        appendLine(name: name, value: UnsafeRawBufferPointer(start: value.utf8Start, count: value.utf8CodeUnitCount))
    }

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

    /// Whether field `i`'s whole value is `literal`, ASCII case-insensitively (e.g. a
    /// `Connection: keep-alive`, without walking it as a list).
    @inlinable
    package func value(at i: Int, equalsFoldingCase literal: StaticString) -> Bool {
        let c = contents
        let line = c.line(i)
        return Self.bytes(c.bytes, at: line.valueStart, count: line.valueLength, equalFoldingCase: literal)
    }

    /// Whether `count` bytes of `s` from `start` spell `literal`, ASCII case-insensitively.
    @inlinable @inline(__always)
    package static func bytes(_ s: UnsafeRawBufferPointer, at start: Int, count: Int, equalFoldingCase literal: StaticString) -> Bool {
        count == literal.utf8CodeUnitCount
            && bytesEqualFoldingCase(s, start, UnsafeRawBufferPointer(start: literal.utf8Start, count: count), 0, count)
    }

    /// Whether two byte strings are equal, ASCII case-insensitively (field names, tokens).
    @inlinable
    package static func bytes(_ a: UnsafeRawBufferPointer, equalFoldingCase b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && bytesEqualFoldingCase(a, 0, b, 0, a.count)
    }

    /// Whether `bytes` spell `literal`, ASCII case-insensitively.
    @inlinable @inline(__always)
    package static func bytes(_ bytes: UnsafeRawBufferPointer, equalFoldingCase literal: StaticString) -> Bool {
        Self.bytes(bytes, at: 0, count: bytes.count, equalFoldingCase: literal)
    }

    /// The byte length of field `i`'s name (to classify names before comparing bytes).
    @inlinable
    package func nameLength(at i: Int) -> Int { contents.line(i).nameLength }

    /// Whether field `i`'s name is `name`, ASCII case-insensitively.
    @inlinable
    package func name(at i: Int, is name: StaticString) -> Bool {
        let c = contents
        let line = c.line(i)
        return Self.bytes(c.bytes, at: line.start, count: line.nameLength, equalFoldingCase: name)
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
