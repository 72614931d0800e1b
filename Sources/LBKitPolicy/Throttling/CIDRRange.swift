/// A block of addresses written in CIDR notation: `"10.0.0.0/8"`, `"2001:db8::/32"`, `"::1/128"`.
///
/// A bare address is a single-host range (`/32` for IPv4, `/128` for IPv6). IPv4 ranges live in
/// the IPv4-mapped part of the 128-bit space, exactly like ``ClientAddress``, so
/// `"10.0.0.0/8"` contains both `10.1.2.3` and `::ffff:10.1.2.3`. Host bits below the prefix are
/// cleared (`"10.1.2.3/8"` is `10.0.0.0/8`), as most routers and Go's `ParseCIDR` do.
///
/// ```swift
/// if let lan = CIDRRange("10.0.0.0/8"), let client = ClientAddress("10.20.30.40") {
///     lan.contains(client)                       // true
/// }
/// CIDRRange("10.0.0.0/33")                       // nil
/// ```
public struct CIDRRange: Hashable, Sendable, CustomStringConvertible {
    /// The first address of the range (host bits cleared).
    public let network: ClientAddress
    /// The prefix length in the 128-bit space (an IPv4 `/8` is 104 here).
    public let prefixLength128: Int

    /// Creates the range of addresses that share the first `prefixLength` bits with `address`.
    ///
    /// For an IPv4 `address` the prefix is an IPv4 prefix (0–32), otherwise 0–128; nil when out of
    /// range.
    public init?(address: ClientAddress, prefixLength: Int) {
        let bits = address.isIPv4 ? prefixLength + 96 : prefixLength
        guard prefixLength >= 0, bits <= 128 else { return nil }
        self.init(network: address, bits: bits)
    }

    private init(network: ClientAddress, bits: Int) {
        let (mh, ml) = Self.masks(bits)
        self.network = ClientAddress(high: network.high & mh, low: network.low & ml)
        self.prefixLength128 = bits
    }

    /// Parses `"a.b.c.d/n"` (n in 0–32), `"v6/n"` (n in 0–128) or a bare address; nil otherwise.
    ///
    /// The prefix is plain decimal without sign or leading zeros.
    public init?<S: StringProtocol>(_ text: S) {
        guard let slash = text.firstIndex(of: "/") else {
            guard let address = ClientAddress(text) else { return nil }
            self.init(network: address, bits: 128)
            return
        }
        let addressText = text[..<slash]
        let prefixText = text[text.index(after: slash)...]
        guard let address = ClientAddress(addressText),
              !prefixText.isEmpty, prefixText.utf8.count <= 3,
              prefixText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              prefixText.utf8.count == 1 || prefixText.utf8.first != UInt8(ascii: "0"),
              let prefix = Int(prefixText)
        else { return nil }
        // The prefix counts IPv4 bits when the address was written as a dotted quad.
        let writtenAsIPv4 = !addressText.contains(":")
        if writtenAsIPv4 {
            guard prefix <= 32 else { return nil }
            self.init(network: address, bits: prefix + 96)
        } else {
            guard prefix <= 128 else { return nil }
            self.init(network: address, bits: prefix)
        }
    }

    /// Whether this is an IPv4 range (it lies within `::ffff:0:0/96`).
    public var isIPv4: Bool { prefixLength128 >= 96 && network.isIPv4 }

    /// The prefix length as usually written: 0–32 for IPv4 ranges, 0–128 otherwise.
    public var prefixLength: Int { isIPv4 ? prefixLength128 - 96 : prefixLength128 }

    /// Whether `address` lies within the range.
    @inlinable
    public func contains(_ address: ClientAddress) -> Bool {
        let (mh, ml) = Self.masks(prefixLength128)
        return address.high & mh == network.high && address.low & ml == network.low
    }

    /// `"10.0.0.0/8"`, `"2001:db8::/32"`.
    public var description: String {
        isIPv4 ? "\(network)/\(prefixLength)" : "\(network.ipv6Description)/\(prefixLength128)"
    }

    /// The network masks of the high and low halves for a 128-bit prefix length.
    @usableFromInline
    static func masks(_ bits: Int) -> (UInt64, UInt64) {
        if bits <= 0 { return (0, 0) }
        if bits >= 128 { return (.max, .max) }
        if bits <= 64 { return (UInt64.max << UInt64(64 - bits), 0) }
        return (.max, UInt64.max << UInt64(128 - bits))
    }
}
