#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import LBKit
import NIOCore

extension ClientAddress {
    /// The IP address of a SwiftNIO socket address (a channel's `remoteAddress`), read from its
    /// raw bytes (no text round trip); nil for a Unix domain socket.
    ///
    /// ```swift
    /// let peer = try SocketAddress(ipAddress: "203.0.113.9", port: 50_000)
    /// ClientAddress(socketAddress: peer)?.description   // "203.0.113.9"
    /// ```
    public init?(socketAddress: SocketAddress) {
        switch socketAddress {
        case .v4(let v4):
            self.init(ipv4: UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            var raw = v6.address.sin6_addr
            guard let address = withUnsafeBytes(of: &raw, { ClientAddress(bytes: $0) }) else { return nil }
            self = address
        case .unixDomainSocket:
            return nil
        }
    }
}
