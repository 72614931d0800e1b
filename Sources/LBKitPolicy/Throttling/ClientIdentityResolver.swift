/// Decides which address a request is attributed to (for throttling and logs): the TCP peer, or,
/// behind trusted reverse proxies, the client those proxies recorded in `X-Forwarded-For`.
///
/// `X-Forwarded-For` is client-controlled text: anyone can send `X-Forwarded-For: 1.2.3.4`. Only
/// hops appended by a proxy we trust are believable, and each proxy appends the address it saw
/// at the right-hand end. So the resolver:
///
/// 1. returns the peer unless the peer is in `trustedProxies` (with the default empty list,
///    `X-Forwarded-For` is never consulted);
/// 2. otherwise walks the combined list (all fields in order, each a comma-separated list) from
///    the right and returns the first address that is not a trusted proxy;
/// 3. if every entry is trusted, returns the leftmost one;
/// 4. stops at an entry that is not a valid address (`unknown`, `garbage`, a host name, a port
///    suffix) and returns the last trusted hop before it (the peer if it is the rightmost
///    entry): garbage is never returned, and nothing to its left is believed.
///
/// Empty list elements (`"a, , b"`) and optional whitespace around entries are ignored.
///
/// ```swift
/// // From configuration; invalid entries should be reported at start-up.
/// let resolver = ClientIdentityResolver(trustedProxies: ["10.0.0.0/8", "::1"].compactMap(CIDRRange.init))
/// // peer = ClientAddress(acceptedSockaddr), from the listening socket
/// let client = resolver.resolve(
///     peer: peer,                                          // 10.0.0.5
///     forwardedFor: request.headers["X-Forwarded-For"])    // ["6.6.6.6, 198.51.100.9, 10.0.0.7"]
/// // client == 198.51.100.9
/// ```
public struct ClientIdentityResolver: Sendable {
    /// The proxies whose `X-Forwarded-For` entries are believed.
    public let trustedProxies: [CIDRRange]

    /// Creates a resolver trusting `trustedProxies` (default: nobody, so the peer is always used).
    public init(trustedProxies: [CIDRRange] = []) {
        self.trustedProxies = trustedProxies
    }

    /// Whether `address` is one of the trusted proxies.
    public func isTrusted(_ address: ClientAddress) -> Bool {
        for range in trustedProxies where range.contains(address) { return true }
        return false
    }

    /// The client address for a request from `peer` carrying the `X-Forwarded-For` field values
    /// `forwardedFor` (every such field, in wire order; pass `[]` when there are none).
    public func resolve(peer: ClientAddress, forwardedFor: [String]) -> ClientAddress {
        guard !trustedProxies.isEmpty, isTrusted(peer) else { return peer }
        var lastTrusted = peer
        for field in forwardedFor.reversed() {
            var field = field
            let found: ClientAddress? = field.withUTF8 { walk($0, lastTrusted: &lastTrusted) }
            if let found { return found }
        }
        return lastTrusted
    }

    /// Walks one field's entries right to left. Returns the answer if the walk ends in this field,
    /// nil to continue with the field to the left (`lastTrusted` updated).
    private func walk(_ text: UnsafeBufferPointer<UInt8>, lastTrusted: inout ClientAddress) -> ClientAddress? {
        if text.isEmpty { return nil }
        var end = text.count
        while true {
            var start = end
            while start > 0 && text[start - 1] != UInt8(ascii: ",") { start -= 1 }
            // Trim optional whitespace.
            var s = start, e = end
            while s < e && (text[s] == UInt8(ascii: " ") || text[s] == UInt8(ascii: "\t")) { s += 1 }
            while e > s && (text[e - 1] == UInt8(ascii: " ") || text[e - 1] == UInt8(ascii: "\t")) { e -= 1 }
            if s < e {
                guard let address = ClientAddress.parse(UnsafeBufferPointer(rebasing: text[s..<e])) else {
                    return lastTrusted
                }
                if !isTrusted(address) { return address }
                lastTrusted = address
            }
            if start == 0 { break }
            end = start - 1  // skip the comma
        }
        return nil
    }
}
