import LBKitPolicy

/// Syntax checks for text that ends up on the wire: request targets we send (health check paths)
/// and Host fields we receive (RFC 9112 3.2, RFC 3986 3.2.2-3.3).
///
/// ```swift
/// HTTP1Syntax.originFormProblem("/health?full=1")   // nil: fine
/// HTTP1Syntax.originFormProblem("/a b")             // "has byte 0x20 at offset 2, which a request path cannot contain"
/// ```
package enum HTTP1Syntax {
    /// Why `target` is not an origin-form request target (`absolute-path [ "?" query ]`,
    /// RFC 9112 3.2.1), or nil when it is one: it starts with `/` and holds only unreserved,
    /// sub-delims, `:`, `@`, `/`, `?` and `%HH` escapes (no spaces, control bytes, `#`, non-ASCII).
    /// The reason completes a sentence about the target (`"'/a b' " + reason`) and is one line of
    /// plain ASCII: it never quotes the offending byte itself.
    package static func originFormProblem(_ target: String) -> String? {
        let bytes = Array(target.utf8)
        guard bytes.first == UInt8(ascii: "/") else { return "must start with /" }
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "%") {
                guard i + 2 < bytes.count, isHexDigit(bytes[i + 1]), isHexDigit(bytes[i + 2]) else {
                    return "has a '%' at offset \(i) that is not followed by two hex digits"
                }
                i += 3
                continue
            }
            guard isPathOrQueryByte(b) else { return "has byte \(hex(b)) at offset \(i), which a request path cannot contain" }
            i += 1
        }
        return nil
    }

    /// Whether `target` is an origin-form request target (see ``originFormProblem(_:)``).
    package static func isOriginForm(_ target: String) -> Bool { originFormProblem(target) == nil }

    /// Whether `p[s..<e]` (a trimmed Host field value) is `uri-host [ ":" port ]` without userinfo
    /// (RFC 9112 3.2, RFC 3986 3.2.2): a reg-name or IPv4 address, or `[IPv6]`, optionally
    /// followed by `:` and 1 to 5 digits of at most 65535. Empty is valid (RFC 9112 3.2 allows an
    /// empty Host; whether one is required is the caller's rule). A comma, although a sub-delim,
    /// is refused: in a singleton field it is the sign of two Host values combined into one.
    static func isValidHost(_ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> Bool {
        if s == e { return true }
        var i = s
        if p[s] == UInt8(ascii: "[") {
            guard let close = (s..<e).first(where: { p[$0] == UInt8(ascii: "]") }), close - s >= 3 else { return false }
            var text = ""
            for k in (s + 1)..<close {
                let b = p[k]
                guard isHexDigit(b) || b == UInt8(ascii: ":") || b == UInt8(ascii: ".") else { return false }
                text.unicodeScalars.append(Unicode.Scalar(b))
            }
            guard text.contains(":"), ClientAddress(text) != nil else { return false }
            i = close + 1
        } else {
            while i < e && p[i] != UInt8(ascii: ":") {
                let b = p[i]
                if b == UInt8(ascii: "%") {
                    guard e - i >= 3, isHexDigit(p[i + 1]), isHexDigit(p[i + 2]) else { return false }
                    i += 3
                    continue
                }
                guard isRegNameByte(b) else { return false }
                i += 1
            }
            if i == s { return false }  // ":80": a port without a host
        }
        if i == e { return true }
        guard p[i] == UInt8(ascii: ":") else { return false }
        i += 1
        let digits = e - i
        guard (1...5).contains(digits) else { return false }
        var port = 0
        while i < e {
            guard HTTP1Scan.isDigit(p[i]) else { return false }
            port = port * 10 + Int(p[i] &- 0x30)
            i += 1
        }
        return port <= 65535
    }

    // MARK: Byte classes (RFC 3986 2.2, 2.3)

    @inline(__always)
    static func isHexDigit(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x46, 0x61...0x66: true
        default: false
        }
    }

    /// ALPHA / DIGIT / "-" / "." / "_" / "~".
    @inline(__always)
    static func isUnreserved(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x2D, 0x2E, 0x5F, 0x7E: true
        default: false
        }
    }

    /// "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "=".
    @inline(__always)
    static func isSubDelim(_ b: UInt8) -> Bool {
        switch b {
        case 0x21, 0x24, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x3B, 0x3D: true
        default: false
        }
    }

    /// pchar (without pct-encoded) plus "/" and "?": what a path and query may hold.
    @inline(__always)
    static func isPathOrQueryByte(_ b: UInt8) -> Bool {
        isUnreserved(b) || isSubDelim(b) || b == UInt8(ascii: ":") || b == UInt8(ascii: "@")
            || b == UInt8(ascii: "/") || b == UInt8(ascii: "?")
    }

    /// reg-name bytes (without pct-encoded), comma excluded (see ``isValidHost(_:_:_:)``):
    /// `(isUnreserved(b) || isSubDelim(b)) && b != ","`, as a bit per ASCII byte (one shift
    /// and test instead of a dozen comparisons per byte of every request's `Host`).
    @inline(__always)
    static func isRegNameByte(_ b: UInt8) -> Bool {
        b < 64 ? (regNameLow >> UInt64(b)) & 1 != 0 : b < 128 && (regNameHigh >> UInt64(b &- 64)) & 1 != 0
    }
    /// Bits 0-63 and 64-127 of the reg-name byte set (tested against the definition in HTTP1SyntaxTests).
    static let regNameLow: UInt64 = 0x2bff_6fd2_0000_0000
    static let regNameHigh: UInt64 = 0x47ff_fffe_87ff_fffe

    private static func hex(_ b: UInt8) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        return "0x" + String(decoding: [digits[Int(b >> 4)], digits[Int(b & 0xF)]], as: UTF8.self)
    }
}

extension String {
    /// `self == name` for a method name, with the lengths compared first: `==` on two different
    /// strings always goes through the runtime's general comparison (about 22 instructions even
    /// for two short ASCII strings), and the proxy asks "is this HEAD, CONNECT, POST...?" of every
    /// request's method several times, where the answer is mostly no and the lengths differ.
    /// For ASCII text (a method is a token, RFC 9110 9.1, and the parser admits nothing else),
    /// equal strings have equal UTF-8 lengths; `==`'s canonical equivalence would also match
    /// `"\u{212A}"` (Kelvin sign) with `"K"`, which this does not.
    ///
    /// ```swift
    /// "GET".isMethod("HEAD")    // false, from the lengths alone
    /// "HEAD".isMethod("HEAD")   // true
    /// ```
    @inline(__always)
    package func isMethod(_ name: String) -> Bool {
        utf8.count == name.utf8.count && self == name
    }
}
