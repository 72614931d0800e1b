#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Byte-level scanning shared by the request and response head parsers and the chunked decoder:
// field lines, framing facts, tokens, versions, Content-Length.

/// Framing-relevant facts collected while parsing header fields.
struct HTTP1FieldSummary {
    var hostCount = 0
    /// Where the (last) Host field's trimmed value lies in the buffer.
    var hostValue = 0..<0
    var contentLength: Int?
    var hasTransferEncoding = false
    var teCodingCount = 0
    var teChunkedCount = 0
    var teLastIsChunked = false
    var connectionClose = false
    var connectionKeepAlive = false
    var expectContinue = false
}

/// Byte-level helpers shared by the request/response parsers and the chunked decoder.
enum HTTP1Scan {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let sp: UInt8 = 0x20
    static let htab: UInt8 = 0x09
    static let colon: UInt8 = 0x3A
    static let comma: UInt8 = 0x2C
    static let maxLeadingEmptyLines = 8
    /// Fields a parsed head has room for before its list grows: typical heads have 3 to 10, and
    /// the proxy adds a few (`X-Forwarded-*`, `Content-Length`, the backend header).
    static let initialFieldCapacity = 12

    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let highs: UInt64 = 0x8080_8080_8080_8080

    /// RFC 9110 tchar.
    @inline(__always)
    static func isToken(_ b: UInt8) -> Bool {
        // tchar (RFC 9110 5.6.2) as two 64-bit sets: "!#$%&'*+-.0-9" below 0x40, "A-Z^_`a-z|~"
        // from 0x40. A bit test per byte, where a switch cost a jump table for the punctuation
        // (this loop runs over every byte of every field name).
        let below64: UInt64 = 0x03FF_6CFA_0000_0000
        let below128: UInt64 = 0x57FF_FFFF_C7FF_FFFE
        let set = b < 64 ? below64 : (b < 128 ? below128 : 0)
        return (set >> UInt64(b & 63)) & 1 != 0
    }

    @inline(__always)
    static func isOWS(_ b: UInt8) -> Bool { b == sp || b == htab }

    /// Index of the first LF in `p[from..<to]`, or nil.
    @inline(__always)
    static func findLF(_ p: UnsafeRawBufferPointer, from: Int, to: Int) -> Int? {
        guard from < to, let base = p.baseAddress else { return nil }
        #if canImport(Glibc) || canImport(Musl) || canImport(Darwin)
        guard let hit = memchr(base + from, Int32(lf), to - from) else { return nil }
        return base.distance(to: UnsafeRawPointer(hit))
        #else
        var i = from
        while i < to { if p[i] == lf { return i }; i += 1 }
        return nil
        #endif
    }

    /// Finds the end of the head (one past the LF of the final CRLFCRLF) in `p`, searching from
    /// `max(start, scanFrom - 3)`. Returns nil when not found and `p.count` is within the limit.
    static func findHeadEnd(
        _ p: UnsafeRawBufferPointer, start: Int, scanFrom: Int, limits: HTTPParserLimits
    ) throws(HTTPParseError) -> Int? {
        let count = p.count
        let scanEnd = min(count, max(limits.maxHeadBytes, 0))
        var i = max(start, min(max(scanFrom, 0), count) - 3)
        while let at = findLF(p, from: i, to: scanEnd) {
            // `p[start]` is neither CR nor LF, so `at > start` and `at - 1` is in range.
            guard at > start, p[at - 1] == cr else { throw .malformed("bare LF") }
            if at - 3 >= start && p[at - 2] == lf && p[at - 3] == cr { return at + 1 }
            i = at + 1
        }
        if count > limits.maxHeadBytes { throw .headTooLarge }
        return nil
    }

    /// Parses `HTTP/d.d` occupying exactly `p[s..<e]`.
    @inline(__always)
    static func parseVersion(_ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws(HTTPParseError) -> HTTPWireVersion {
        guard e - s == 8, p[s] == 0x48, p[s + 1] == 0x54, p[s + 2] == 0x54, p[s + 3] == 0x50, p[s + 4] == 0x2F,
              isDigit(p[s + 5]), p[s + 6] == 0x2E, isDigit(p[s + 7])
        else { throw .malformed("invalid HTTP version") }
        let major = Int(p[s + 5] &- 0x30), minor = Int(p[s + 7] &- 0x30)
        guard major == 1, minor <= 1 else { throw .unsupportedVersion }
        return minor == 1 ? .http1_1 : .http1_0
    }

    @inline(__always)
    static func isDigit(_ b: UInt8) -> Bool { b &- 0x30 < 10 }

    /// Index of the first byte in `p[from..<to]` outside 0x21...0x7E, or `to`.
    static func firstNonVisible(_ p: UnsafeRawBufferPointer, from: Int, to: Int) -> Int {
        var i = from
        while to - i >= 8 {
            let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let below = (w &- ones &* 0x21) & ~w & highs
            let del = hasZeroByte(w ^ (ones &* 0x7F))
            if (w & highs) | below | del != 0 { break }
            i += 8
        }
        while i < to {
            let b = p[i]
            if b < 0x21 || b > 0x7E { return i }
            i += 1
        }
        return to
    }

    @inline(__always)
    private static func hasZeroByte(_ w: UInt64) -> UInt64 { (w &- ones) & ~w & highs }

    /// The high bit of each byte of `w` that is an ASCII letter or `-`, exactly (no carry or
    /// borrow crosses a byte: every sum below stays under 0x100 per byte).
    @inline(__always)
    static func lettersOrDashes(_ w: UInt64) -> UInt64 {
        let low7 = ones &* 0x7F
        let ascii = ~w & highs
        let folded = (w | (ones &* 0x20)) & low7                 // 'A'...'Z' -> 'a'...'z'
        let atLeastA = (folded &+ ones &* (0x80 - 0x61)) & highs  // >= 'a'
        let pastZ = (folded &+ ones &* (0x80 - 0x7B)) & highs     // >= '{'
        let x = w ^ (ones &* 0x2D)                               // zero where '-'
        let dash = ~(((x & low7) &+ low7) | x | low7)             // high bit where x's byte is 0
        return ((atLeastA & ~pastZ) | dash) & ascii
    }

    /// Whether `p[s..<e]` is a valid field value (or reason phrase): HTAB, SP, VCHAR, or bytes
    /// >= 0x80 that form well-formed UTF-8.
    static func isValidFieldValue(_ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> Bool {
        var i = s
        while i < e {
            if e - i >= 8 {
                let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                let below = (w &- ones &* 0x20) & ~w & highs
                let del = hasZeroByte(w ^ (ones &* 0x7F))
                if (w & highs) | below | del == 0 { i += 8; continue }
            }
            let c = p[i]
            if c < 0x80 {
                if (c < 0x20 && c != htab) || c == 0x7F { return false }
                i += 1
                continue
            }
            // Multi-byte UTF-8 sequence (RFC 3629, no overlongs or surrogates).
            let need: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch c {
            case 0xC2...0xDF: need = 1
            case 0xE0: need = 2; lo = 0xA0
            case 0xE1...0xEC, 0xEE, 0xEF: need = 2
            case 0xED: need = 2; hi = 0x9F
            case 0xF0: need = 3; lo = 0x90
            case 0xF1...0xF3: need = 3
            case 0xF4: need = 3; hi = 0x8F
            default: return false
            }
            guard e - i > need else { return false }
            let c1 = p[i + 1]
            guard c1 >= lo && c1 <= hi else { return false }
            var k = 2
            while k <= need {
                guard p[i + k] & 0xC0 == 0x80 else { return false }
                k += 1
            }
            i += need + 1
        }
        return true
    }

    /// ASCII case-insensitive comparison of `p[s..<e]` with a lowercase literal.
    @inline(__always)
    static func equalsLowercase(_ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int, _ literal: StaticString) -> Bool {
        let n = e - s
        guard n == literal.utf8CodeUnitCount else { return false }
        let l = UnsafeRawPointer(literal.utf8Start)
        guard n >= 8, let base = p.baseAddress else {
            var k = 0
            while k < n {
                var c = p[s + k]
                if c >= 0x41 && c <= 0x5A { c |= 0x20 }
                if c != l.load(fromByteOffset: k, as: UInt8.self) { return false }
                k += 1
            }
            return true
        }
        // Eight bytes at a time, the last word overlapping: setting bit 5 of every byte lowers
        // ASCII capitals, and can only make another byte equal to a literal byte in [a-z0-9-]
        // when that byte is a control character, which the callers have already refused (names
        // are tchar, values are checked by `isValidFieldValue` first).
        let fold: UInt64 = 0x2020_2020_2020_2020
        var k = 0
        while true {
            let at = min(k, n - 8)
            if base.loadUnaligned(fromByteOffset: s + at, as: UInt64.self) | fold != l.loadUnaligned(fromByteOffset: at, as: UInt64.self) {
                return false
            }
            if at == n - 8 { return true }
            k += 8
        }
    }

    /// Validates one field line `p[s..<e]` (no CRLF) and returns where the name ends and where the
    /// trimmed value lies.
    @inline(__always)
    static func splitFieldLine(
        _ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int
    ) throws(HTTPParseError) -> (nameEnd: Int, valueStart: Int, valueEnd: Int) {
        let first = p[s]
        if isOWS(first) { throw .malformed("obsolete line folding") }
        var i = s
        // Names are nearly always letters and dashes: 8 bytes at a time while they are, then the
        // byte loop (which alone decides) from the first other byte.
        if let base = p.baseAddress {
            while e - i >= 8 {
                let w = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                let miss = ~lettersOrDashes(w) & highs
                if miss == 0 { i += 8; continue }
                i += miss.trailingZeroBitCount / 8
                break
            }
        }
        while i < e && isToken(p[i]) { i += 1 }
        guard i < e else { throw .malformed("missing colon in header field") }
        let b = p[i]
        if b != colon {
            if isOWS(b) { throw .malformed("whitespace before colon in header field") }
            if b == cr { throw .malformed("bare CR") }
            throw .malformed("invalid character in header name")
        }
        if i == s { throw .malformed("empty header name") }
        let nameEnd = i
        var vs = i + 1
        while vs < e && isOWS(p[vs]) { vs += 1 }
        var ve = e
        while ve > vs && isOWS(p[ve - 1]) { ve -= 1 }
        guard isValidFieldValue(p, vs, ve) else {
            var k = vs
            while k < ve && p[k] != cr { k += 1 }
            throw k < ve ? .malformed("bare CR") : .malformed("invalid character in header value")
        }
        return (nameEnd, vs, ve)
    }

    /// Parses the field lines from `pos` up to the empty line that ends the head (at or before
    /// `headEnd`), appending the fields to the empty list `fields` and collecting framing facts.
    /// Returns the head length, or nil when no empty line ends the head by `headEnd` (a bound
    /// then, not the end: the caller parses a head that may not be complete yet in one pass).
    ///
    /// Lines already in wire form (`name ": " value CRLF`, as nearly every client and server
    /// writes them) are indexed where they are and their bytes go into the list with one copy at
    /// the end; from the first line that is not (no space after the colon, extra whitespace), the
    /// fields are appended one by one in wire form.
    static func parseFields(
        _ p: UnsafeRawBufferPointer, from pos: Int, headEnd: Int, limits: HTTPParserLimits,
        fields: inout HeaderFields, summary: inout HTTP1FieldSummary
    ) throws(HTTPParseError) -> Int? {
        assert(fields.count == 0 && fields.storedByteCount == 0)
        var pos = pos
        let block = pos
        var inWireForm = true
        while true {
            guard let at = findLF(p, from: pos, to: headEnd) else { return nil }
            guard at > pos, p[at - 1] == cr else { throw .malformed("bare LF") }
            let lineEnd = at - 1
            if lineEnd == pos {
                if inWireForm && pos > block { fields.appendBytes(UnsafeRawBufferPointer(rebasing: p[block..<pos])) }
                return at + 1
            }

            if fields.count >= limits.maxHeaderCount { throw .headTooLarge }
            let (nameEnd, vs, ve) = try splitFieldLine(p, pos, lineEnd)
            try summarize(p, name: pos, nameEnd, value: vs, ve, into: &summary)
            if inWireForm && vs == nameEnd + 2 && ve == lineEnd && p[nameEnd + 1] == sp {
                fields.indexLine(start: pos - block, nameLength: nameEnd - pos, valueLength: ve - vs)
            } else {
                if inWireForm {
                    inWireForm = false
                    if pos > block { fields.appendBytes(UnsafeRawBufferPointer(rebasing: p[block..<pos])) }
                }
                fields.appendLine(name: UnsafeRawBufferPointer(rebasing: p[pos..<nameEnd]),
                                  value: UnsafeRawBufferPointer(rebasing: p[vs..<ve]))
            }
            pos = at + 1
        }
    }

    @inline(__always)
    static func makeString(_ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: p[s..<e]), as: UTF8.self)
    }

    /// Whether `p[s..<e]` is exactly the bytes of `literal` (case-sensitive).
    @inline(__always)
    static func bytesEqual(_ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int, _ literal: StaticString) -> Bool {
        guard e - s == literal.utf8CodeUnitCount, let base = p.baseAddress else { return false }
        return memcmp(base + s, literal.utf8Start, e - s) == 0
    }

    /// Records the framing-relevant meaning of one field.
    @inline(__always)
    static func summarize(
        _ p: UnsafeRawBufferPointer, name ns: Int, _ ne: Int, value vs: Int, _ ve: Int,
        into summary: inout HTTP1FieldSummary
    ) throws(HTTPParseError) {
        switch ne - ns {
        case 4:
            if equalsLowercase(p, ns, ne, "host") {
                summary.hostCount += 1
                summary.hostValue = vs..<ve
            }
        case 6:
            if equalsLowercase(p, ns, ne, "expect") && equalsLowercase(p, vs, ve, "100-continue") {
                summary.expectContinue = true
            }
        case 10:
            if equalsLowercase(p, ns, ne, "connection") {
                forEachListElement(p, vs, ve) { s, e in
                    if equalsLowercase(p, s, e, "close") { summary.connectionClose = true }
                    else if equalsLowercase(p, s, e, "keep-alive") { summary.connectionKeepAlive = true }
                }
            }
        case 14:
            if equalsLowercase(p, ns, ne, "content-length") {
                try parseContentLength(p, vs, ve, into: &summary)
            }
        case 17:
            if equalsLowercase(p, ns, ne, "transfer-encoding") {
                summary.hasTransferEncoding = true
                var i = vs
                while true {
                    while i < ve && isOWS(p[i]) { i += 1 }
                    let es = i
                    while i < ve && p[i] != comma { i += 1 }
                    var ee = i
                    while ee > es && isOWS(p[ee - 1]) { ee -= 1 }
                    if ee == es { throw .malformed("empty transfer coding") }
                    let chunked = equalsLowercase(p, es, ee, "chunked")
                    summary.teCodingCount += 1
                    if chunked { summary.teChunkedCount += 1 }
                    summary.teLastIsChunked = chunked
                    if i >= ve { break }
                    i += 1  // skip comma
                }
            }
        default:
            break
        }
    }

    /// Calls `body` with the bounds of each non-empty, OWS-trimmed element of a comma list.
    @inline(__always)
    static func forEachListElement(_ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int, _ body: (Int, Int) -> Void) {
        var i = s
        while i < e {
            while i < e && (isOWS(p[i]) || p[i] == comma) { i += 1 }
            let es = i
            while i < e && p[i] != comma { i += 1 }
            var ee = i
            while ee > es && isOWS(p[ee - 1]) { ee -= 1 }
            if ee > es { body(es, ee) }
        }
    }

    /// Content-Length = 1*DIGIT (at most 18), optionally as a list of identical values.
    static func parseContentLength(
        _ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int, into summary: inout HTTP1FieldSummary
    ) throws(HTTPParseError) {
        var i = s
        while true {
            while i < e && isOWS(p[i]) { i += 1 }
            let ds = i
            var value = 0
            while i < e && isDigit(p[i]) {
                if i - ds == 18 { throw .malformed("Content-Length too large") }
                value = value &* 10 &+ Int(p[i] &- 0x30)
                i += 1
            }
            if i == ds { throw .malformed("invalid Content-Length") }
            while i < e && isOWS(p[i]) { i += 1 }
            if let existing = summary.contentLength, existing != value {
                throw .malformed("conflicting Content-Length values")
            }
            summary.contentLength = value
            if i == e { return }
            guard p[i] == comma else { throw .malformed("invalid Content-Length") }
            i += 1
        }
    }

    /// The values of every field named `lowercaseName`, joined with ", " (error paths only).
    static func joinedValues(_ fields: HeaderFields, _ lowercaseName: String) -> String {
        fields[lowercaseName].joined(separator: ", ")
    }
}
