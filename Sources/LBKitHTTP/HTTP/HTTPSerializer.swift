/// Writes HTTP/1.x heads and chunks into byte buffers.
///
/// The serializer does not validate: callers pass heads that came from the strict parsers or that
/// they built from trusted values (no CR, LF or other control bytes in names, values, targets).
///
/// ```swift
/// var out: [UInt8] = []
/// HTTPSerializer.appendResponseHead(ResponseHead(status: 200, headers: ["Content-Length": "2"]), to: &out)
/// out += Array("ok".utf8)
/// // "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
/// ```
package enum HTTPSerializer {
    /// Appends `method SP target SP version CRLF`, each field as `Name: value CRLF`, and the final CRLF.
    ///
    /// ```swift
    /// var out: [UInt8] = []
    /// HTTPSerializer.appendRequestHead(RequestHead(method: "GET", target: "/x", headers: ["Host": "a"]), to: &out)
    /// // "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    /// ```
    package static func appendRequestHead(_ head: RequestHead, to buffer: inout [UInt8]) {
        buffer.reserveCapacity(buffer.count + head.method.utf8.count + head.target.utf8.count + 12
            + headersSize(head.headers) + 2)
        appendUTF8(head.method, to: &buffer)
        buffer.append(0x20)
        appendUTF8(head.target, to: &buffer)
        buffer.append(0x20)
        appendVersion(head.version, to: &buffer)
        appendCRLF(to: &buffer)
        appendHeaders(head.headers, to: &buffer)
        appendCRLF(to: &buffer)
    }

    /// Appends `version SP status SP reason CRLF`, the fields and the final CRLF (the SP after the
    /// status is written even when the reason is empty, as RFC 9112 4 requires).
    ///
    /// ```swift
    /// var out: [UInt8] = []
    /// HTTPSerializer.appendResponseHead(ResponseHead(status: 404), to: &out)
    /// // "HTTP/1.1 404 Not Found\r\n\r\n"
    /// ```
    package static func appendResponseHead(_ head: ResponseHead, to buffer: inout [UInt8]) {
        buffer.reserveCapacity(buffer.count + 14 + head.reason.utf8.count + headersSize(head.headers) + 2)
        appendVersion(head.version, to: &buffer)
        buffer.append(0x20)
        appendStatus(head.status, to: &buffer)
        buffer.append(0x20)
        appendUTF8(head.reason, to: &buffer)
        appendCRLF(to: &buffer)
        appendHeaders(head.headers, to: &buffer)
        appendCRLF(to: &buffer)
    }

    /// Appends `method SP target SP HTTP/1.1 CRLF` (fields follow with ``appendField(_:_:to:)``,
    /// then ``appendEndOfHead(to:)``): for callers that write a head with edits straight into
    /// the wire buffer instead of copying and editing a ``HeaderFields`` first.
    package static func appendRequestLine(method: String, target: String, to buffer: inout [UInt8]) {
        appendUTF8(method, to: &buffer)
        buffer.append(0x20)
        appendUTF8(target, to: &buffer)
        // ` HTTP/1.1\r\n` in one copy (see appendStatusLine).
        var words: (UInt64, UInt64) = ((Self.http11Word << 8 | 0x20).littleEndian, (Self.http11Word >> 56 | 0x0A0D << 8).littleEndian)
        withUnsafeBytes(of: &words) { buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[0..<11])) }
    }

    /// Appends `HTTP/1.1 SP status SP reason CRLF` (see ``appendRequestLine(method:target:to:)``).
    package static func appendStatusLine(status: Int, reason: String, to buffer: inout [UInt8]) {
        guard (100...999).contains(status) else {
            appendVersion(.http1_1, to: &buffer)
            buffer.append(0x20)
            appendStatus(status, to: &buffer)
            buffer.append(0x20)
            appendUTF8(reason, to: &buffer)
            appendCRLF(to: &buffer)
            return
        }
        // `HTTP/1.1 SSS ` composed in two words and appended with one copy: each one-byte
        // append checks the array's uniqueness and capacity (13 of them cost ~200 instructions).
        let digits = UInt64(0x30 + status / 100) | UInt64(0x30 + status / 10 % 10) << 8 | UInt64(0x30 + status % 10) << 16
        var words: (UInt64, UInt64) = (Self.http11Word.littleEndian, (0x20 | digits << 8 | 0x20 << 32).littleEndian)
        withUnsafeBytes(of: &words) { buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[0..<13])) }
        appendUTF8(reason, to: &buffer)
        appendCRLF(to: &buffer)
    }

    /// `HTTP/1.1` as the little-endian bytes of one word.
    private static let http11Word: UInt64 = 0x312E_312F_5054_5448

    /// Appends `name: value CRLF`.
    @inline(__always)
    package static func appendField(_ name: String, _ value: String, to buffer: inout [UInt8]) {
        appendUTF8(name, to: &buffer)
        buffer.append(0x3A)
        buffer.append(0x20)
        appendUTF8(value, to: &buffer)
        appendCRLF(to: &buffer)
    }

    /// Appends `name: <decimal> CRLF` for a non-negative `value` (a length), without building a
    /// `String` for the number.
    package static func appendField(_ name: String, decimal value: Int, to buffer: inout [UInt8]) {
        appendUTF8(name, to: &buffer)
        buffer.append(0x3A)
        buffer.append(0x20)
        appendDecimal(value, suffix: 0x0A0D, suffixLength: 2, to: &buffer)  // digits and CRLF in one copy
    }

    /// Appends the empty line that ends a head.
    @inline(__always)
    package static func appendEndOfHead(to buffer: inout [UInt8]) {
        appendCRLF(to: &buffer)
    }

    /// Appends `Content-Length: <decimal> CRLF` for a non-negative `value` with one copy: the
    /// name, the digits and the CRLF are composed in words on the stack (written twice per
    /// proxied request, once each way).
    ///
    /// ```swift
    /// var out: [UInt8] = []
    /// HTTPSerializer.appendContentLength(19, to: &out)  // "Content-Length: 19\r\n"
    /// ```
    package static func appendContentLength(_ value: Int, to buffer: inout [UInt8]) {
        // "Content-Length: " (16 bytes), then up to 20 digits, then CRLF: at most 38 bytes.
        var words: (UInt64, UInt64, UInt64, UInt64, UInt64) =
            (UInt64(0x2D74_6E65_746E_6F43).littleEndian, UInt64(0x203A_6874_676E_654C).littleEndian, 0, 0, 0)
        let v = UInt64(max(0, value))
        var digits = 1
        var rest = v / 10
        while rest > 0 { digits += 1; rest /= 10 }
        withUnsafeMutableBytes(of: &words) { raw in
            var n = v
            var i = 16 + digits
            raw[i] = 0x0D
            raw[i + 1] = 0x0A
            repeat {
                i -= 1
                raw[i] = UInt8(truncatingIfNeeded: 0x30 + n % 10)
                n /= 10
            } while n > 0
            buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[0..<(18 + digits)]))
        }
    }

    /// Appends the decimal digits of a non-negative `value`.
    static func appendDecimal(_ value: Int, to buffer: inout [UInt8]) {
        appendDecimal(value, suffix: 0, suffixLength: 0, to: &buffer)
    }

    /// Appends the decimal digits of a non-negative `value`, then the `suffixLength` low bytes
    /// of `suffix` (a CRLF), with one copy.
    @inline(__always)
    private static func appendDecimal(_ value: Int, suffix: UInt16, suffixLength: Int, to buffer: inout [UInt8]) {
        var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)  // up to 20 digits and 2 more, written backwards
        var start = 24
        var v = UInt64(max(0, value))
        withUnsafeMutableBytes(of: &digits) { raw in
            raw[24] = UInt8(truncatingIfNeeded: suffix)
            raw[25] = UInt8(truncatingIfNeeded: suffix >> 8)
            repeat {
                start -= 1
                raw[start] = UInt8(truncatingIfNeeded: 0x30 + v % 10)
                v /= 10
            } while v > 0
            buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[start..<(24 + suffixLength)]))
        }
    }

    @inline(__always)
    private static func appendStatus(_ status: Int, to buffer: inout [UInt8]) {
        if (100...999).contains(status) {
            buffer.append(UInt8(truncatingIfNeeded: 0x30 + status / 100))
            buffer.append(UInt8(truncatingIfNeeded: 0x30 + status / 10 % 10))
            buffer.append(UInt8(truncatingIfNeeded: 0x30 + status % 10))
        } else {
            buffer.append(contentsOf: String(status).utf8)
        }
    }

    /// Appends one chunk: lowercase hex size, CRLF, the data, CRLF. Appends nothing for empty input
    /// (an empty chunk would end the body).
    ///
    /// ```swift
    /// var out: [UInt8] = []
    /// let data = Array("hello".utf8)
    /// data.withUnsafeBytes { HTTPSerializer.appendChunk($0, to: &out) }
    /// // "5\r\nhello\r\n"
    /// ```
    package static func appendChunk(_ bytes: UnsafeRawBufferPointer, to buffer: inout [UInt8]) {
        let count = bytes.count
        guard count > 0 else { return }
        var digits = 0
        var v = count
        while v > 0 { digits += 1; v >>= 4 }
        buffer.reserveCapacity(buffer.count + digits + 4 + count)
        var shift = (digits - 1) * 4
        while shift >= 0 {
            let d = UInt8(truncatingIfNeeded: (count >> shift) & 0xF)
            buffer.append(d < 10 ? 0x30 + d : 0x61 + d - 10)
            shift -= 4
        }
        appendCRLF(to: &buffer)
        buffer.append(contentsOf: bytes)
        appendCRLF(to: &buffer)
    }

    /// Appends the last chunk with an empty trailer section: `0\r\n\r\n`.
    ///
    /// ```swift
    /// var out: [UInt8] = []
    /// HTTPSerializer.appendLastChunk(to: &out)  // "0\r\n\r\n"
    /// ```
    package static func appendLastChunk(to buffer: inout [UInt8]) {
        buffer.append(contentsOf: [0x30, 0x0D, 0x0A, 0x0D, 0x0A] as [UInt8])
    }

    /// Appends the UTF-8 of `string` with one copy from its contiguous storage (the generic
    /// `append(contentsOf: string.utf8)` went byte by byte).
    @inline(__always)
    static func appendUTF8(_ string: String, to buffer: inout [UInt8]) {
        let done: Void? = string.utf8.withContiguousStorageIfAvailable { buffer.append(contentsOf: $0) }
        if done == nil { buffer.append(contentsOf: string.utf8) }
    }

    @inline(__always)
    private static func appendCRLF(to buffer: inout [UInt8]) {
        buffer.append(0x0D)
        buffer.append(0x0A)
    }

    @inline(__always)
    private static func appendVersion(_ version: HTTPWireVersion, to buffer: inout [UInt8]) {
        if (0...9).contains(version.major) && (0...9).contains(version.minor) {
            buffer.append(contentsOf: [0x48, 0x54, 0x54, 0x50, 0x2F] as [UInt8])  // "HTTP/"
            buffer.append(UInt8(truncatingIfNeeded: 0x30 + version.major))
            buffer.append(0x2E)
            buffer.append(UInt8(truncatingIfNeeded: 0x30 + version.minor))
        } else {
            buffer.append(contentsOf: version.description.utf8)
        }
    }

    private static func headersSize(_ headers: HeaderFields) -> Int { headers.wireByteCount }

    private static func appendHeaders(_ headers: HeaderFields, to buffer: inout [UInt8]) { headers.appendWire(to: &buffer) }
}
