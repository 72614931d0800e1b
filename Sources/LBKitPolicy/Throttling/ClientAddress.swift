
/// An IPv4 or IPv6 address as one 16-byte value: the key the throttling layer counts requests by.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:0:0/96`, RFC 4291 §2.5.5.2), so a client that
/// reaches a dual-stack listener over IPv4 and one whose IPv4 peer shows up as `::ffff:a.b.c.d`
/// are the same key. Parsing is strict (like `inet_pton`): no zone ids, brackets, ports,
/// leading zeros in IPv4 octets or surrounding whitespace; anything else yields `nil`.
///
/// ```swift
/// let v4 = ClientAddress("203.0.113.7")          // IPv4, stored as ::ffff:203.0.113.7
/// let v6 = ClientAddress("2001:DB8:0:0::1")      // formatted back as "2001:db8::1"
/// ClientAddress("256.1.1.1")                     // nil
/// v4?.description                                // "203.0.113.7"
/// ```
public struct ClientAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Bytes 0–7 of the address, big-endian (the first byte is the most significant).
    public var high: UInt64
    /// Bytes 8–15 of the address, big-endian.
    public var low: UInt64

    /// The upper 64 bits of every IPv4-mapped address' low half: `::ffff:0:0`.
    @usableFromInline static let mappedPrefix: UInt64 = 0x0000_FFFF_0000_0000

    /// Creates an address from its two big-endian halves.
    @inlinable
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates the IPv4-mapped address for `ipv4`, given in host order (`0xCB007107` is 203.0.113.7).
    @inlinable
    public init(ipv4: UInt32) {
        self.init(high: 0, low: Self.mappedPrefix | UInt64(ipv4))
    }

    /// Creates an address from 4 (IPv4) or 16 (IPv6) network-order bytes; nil for any other count.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        switch bytes.count {
        case 4:
            var v: UInt32 = 0
            for b in bytes { v = v << 8 | UInt32(b) }
            self.init(ipv4: v)
        case 16:
            var hi: UInt64 = 0
            var lo: UInt64 = 0
            var n = 0
            for b in bytes {
                if n < 8 { hi = hi << 8 | UInt64(b) } else { lo = lo << 8 | UInt64(b) }
                n += 1
            }
            self.init(high: hi, low: lo)
        default:
            return nil
        }
    }

    /// Parses dotted-quad IPv4 (`"203.0.113.7"`) or IPv6 text (`"2001:db8::1"`, `"::ffff:1.2.3.4"`).
    ///
    /// Returns nil for anything that is not exactly one address.
    public init?<S: StringProtocol>(_ text: S) {
        let parsed: ClientAddress?? = text.utf8.withContiguousStorageIfAvailable { Self.parse($0) }
        if let parsed {
            guard let parsed else { return nil }
            self = parsed
        } else {
            let bytes = Array(text.utf8)
            guard let parsed = bytes.withUnsafeBufferPointer({ Self.parse($0) }) else { return nil }
            self = parsed
        }
    }

    /// Whether this is an IPv4(-mapped) address.
    @inlinable
    public var isIPv4: Bool { high == 0 && low & 0xFFFF_FFFF_0000_0000 == Self.mappedPrefix }

    /// The IPv4 address in host order, or nil for a (non-mapped) IPv6 address.
    @inlinable
    public var ipv4: UInt32? { isIPv4 ? UInt32(truncatingIfNeeded: low) : nil }

    /// The 16 network-order bytes.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(16)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: high >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: low >> UInt64(shift))) }
        return out
    }

    /// Orders addresses numerically (IPv4-mapped addresses sort inside `::ffff:0:0/96`).
    public static func < (lhs: Self, rhs: Self) -> Bool {
        lhs.high != rhs.high ? lhs.high < rhs.high : lhs.low < rhs.low
    }

    /// Canonical text: dotted quad for IPv4(-mapped) addresses, RFC 5952 for the rest
    /// (lowercase, no leading zeros, the longest run of two or more zero groups as `::`).
    /// Whether this is a loopback address: 127.0.0.0/8 (also IPv4-mapped) or `::1`.
    public var isLoopback: Bool {
        if high == 0 && low == 1 { return true }
        return high == 0 && (low >> 32) == 0xFFFF && ((low >> 24) & 0xFF) == 127
    }

    public var description: String {
        if let v4 = ipv4 { return Self.formatIPv4(v4) }
        return ipv6Description
    }

    /// RFC 5952 text even for IPv4-mapped addresses, which get the §5 form `::ffff:203.0.113.7`.
    public var ipv6Description: String {
        var out = [UInt8]()
        out.reserveCapacity(41)
        if let v4 = ipv4 {
            out.append(contentsOf: "::ffff:".utf8)
            out.append(contentsOf: Self.formatIPv4(v4).utf8)
            return String(decoding: out, as: UTF8.self)
        }
        var groups = [UInt16](repeating: 0, count: 8)
        for i in 0..<4 {
            groups[i] = UInt16(truncatingIfNeeded: high >> UInt64(48 - 16 * i))
            groups[i + 4] = UInt16(truncatingIfNeeded: low >> UInt64(48 - 16 * i))
        }
        // The longest run of zero groups (length >= 2); the first one on a tie.
        var bestStart = -1, bestLength = 0, i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > bestLength { bestStart = i; bestLength = j - i }
                i = j
            } else {
                i += 1
            }
        }
        if bestLength < 2 { bestStart = -1; bestLength = 0 }
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        i = 0
        while i < 8 {
            if i == bestStart {
                out.append(UInt8(ascii: ":"))
                out.append(UInt8(ascii: ":"))
                i += bestLength
                continue
            }
            if i > 0 && i != bestStart + bestLength { out.append(UInt8(ascii: ":")) }
            let g = groups[i]
            var started = false
            for shift in stride(from: 12, through: 0, by: -4) {
                let nibble = Int((g >> UInt16(shift)) & 0xF)
                if nibble != 0 || started || shift == 0 {
                    out.append(hex[nibble])
                    started = true
                }
            }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Dotted-quad text, built in one buffer: this runs for every proxied request
    /// (`X-Forwarded-For`), where four integer descriptions and three concatenations cost about
    /// 1,600 instructions.
    static func formatIPv4(_ v: UInt32) -> String {
        String(unsafeUninitializedCapacity: 15) { out in
            var n = 0
            var shift: UInt32 = 24
            while true {
                let octet = Int((v >> shift) & 0xFF)
                if octet >= 100 { out[n] = UInt8(0x30 + octet / 100); n += 1 }
                if octet >= 10 { out[n] = UInt8(0x30 + octet / 10 % 10); n += 1 }
                out[n] = UInt8(0x30 + octet % 10)
                n += 1
                if shift == 0 { return n }
                out[n] = 0x2E
                n += 1
                shift -= 8
            }
        }
    }

    // MARK: Parsing

    /// Parses `text` as one address; nil unless the whole buffer is a valid address.
    static func parse(_ text: UnsafeBufferPointer<UInt8>) -> ClientAddress? {
        // 45 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".count
        guard !text.isEmpty, text.count <= 45 else { return nil }
        if text.contains(UInt8(ascii: ":")) { return parseIPv6(text) }
        guard let v4 = parseIPv4(text, from: 0) else { return nil }
        return ClientAddress(ipv4: v4)
    }

    /// Strict dotted quad from `start` to the end of `text`: four decimal octets of 1–3 digits,
    /// each <= 255, no leading zeros.
    static func parseIPv4(_ text: UnsafeBufferPointer<UInt8>, from start: Int) -> UInt32? {
        var result: UInt32 = 0
        var i = start
        for part in 0..<4 {
            if part > 0 {
                guard i < text.count, text[i] == UInt8(ascii: ".") else { return nil }
                i += 1
            }
            let first = i
            var value: UInt32 = 0
            while i < text.count, text[i] >= UInt8(ascii: "0"), text[i] <= UInt8(ascii: "9") {
                value = value * 10 + UInt32(text[i] - UInt8(ascii: "0"))
                i += 1
                if i - first > 3 { return nil }
            }
            let digits = i - first
            guard digits > 0, value <= 255 else { return nil }
            if digits > 1 && text[first] == UInt8(ascii: "0") { return nil }
            result = result << 8 | value
        }
        return i == text.count ? result : nil
    }

    @inline(__always)
    static func hexValue(_ c: UInt8) -> UInt16? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt16(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt16(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt16(c - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// RFC 4291 §2.2 text: eight 1–4 digit hex groups, at most one `::` standing for one or more
    /// zero groups, optionally ending in a dotted quad that fills the last two groups.
    static func parseIPv6(_ text: UnsafeBufferPointer<UInt8>) -> ClientAddress? {
        let colon = UInt8(ascii: ":")
        var parsed = InlineArray<8, UInt16>(repeating: 0)
        var count = 0
        var compressAt = -1
        var i = 0
        let n = text.count
        if text[0] == colon {
            guard n >= 2, text[1] == colon else { return nil }
            compressAt = 0
            i = 2
            if i == n { return ClientAddress(high: 0, low: 0) }
        }
        while true {
            guard i < n else { return nil }  // a separator with nothing after it
            let start = i
            var value: UInt16 = 0
            while i < n, let h = hexValue(text[i]) {
                guard i - start < 4 else { return nil }
                value = value << 4 | h
                i += 1
            }
            if i < n && text[i] == UInt8(ascii: ".") {
                // Embedded IPv4: must be the last two groups.
                guard count <= 6, let v4 = parseIPv4(text, from: start) else { return nil }
                parsed[count] = UInt16(truncatingIfNeeded: v4 >> 16)
                parsed[count + 1] = UInt16(truncatingIfNeeded: v4)
                count += 2
                break
            }
            guard i > start, count < 8 else { return nil }
            parsed[count] = value
            count += 1
            if i == n { break }
            guard text[i] == colon else { return nil }
            i += 1
            if i < n && text[i] == colon {
                guard compressAt < 0 else { return nil }
                compressAt = count
                i += 1
                if i == n { break }
            }
        }
        var full = InlineArray<8, UInt16>(repeating: 0)
        if compressAt >= 0 {
            guard count < 8 else { return nil }  // "::" must stand for at least one group
            for k in 0..<compressAt { full[k] = parsed[k] }
            let tail = count - compressAt
            for k in 0..<tail { full[8 - tail + k] = parsed[compressAt + k] }
        } else {
            guard count == 8 else { return nil }
            full = parsed
        }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for k in 0..<4 {
            hi = hi << 16 | UInt64(full[k])
            lo = lo << 16 | UInt64(full[k + 4])
        }
        return ClientAddress(high: hi, low: lo)
    }
}

