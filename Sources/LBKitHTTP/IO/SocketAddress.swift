import Glibc
import LBKitPolicy

/// An IPv4 or IPv6 socket address (address + port).
///
/// ```swift
/// let address = try IPSocketAddress(host: "127.0.0.1", port: 8000)
/// print(address)  // 127.0.0.1:8000
/// ```
public struct IPSocketAddress: Sendable, Hashable, CustomStringConvertible {
    package enum Storage: Sendable {
        case v4(sockaddr_in)
        case v6(sockaddr_in6)
    }
    package let storage: Storage

    /// Equal when family, address bytes and port are equal.
    public static func == (a: IPSocketAddress, b: IPSocketAddress) -> Bool {
        a.port == b.port && a.clientAddress == b.clientAddress && a.family == b.family
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(port)
        hasher.combine(family)
        hasher.combine(clientAddress)
    }

    /// The IP address alone, as the key LBKit throttles and identifies clients by
    /// (an IPv4-mapped IPv6 address becomes the plain IPv4 address).
    public var clientAddress: ClientAddress {
        switch storage {
        case .v4(let a): return ClientAddress(ipv4: UInt32(bigEndian: a.sin_addr.s_addr))
        case .v6(var a): return withUnsafeBytes(of: &a.sin6_addr) { ClientAddress(bytes: $0) } ?? ClientAddress(ipv4: 0)
        }
    }

    /// Resolves `host` (an IP literal or a name such as `localhost`) and `port` with getaddrinfo,
    /// preferring IPv4. Blocking: call at configuration time, not per request.
    public init(host: String, port: Int) throws(IPSocketAddressError) {
        guard (0...65535).contains(port) else { throw .invalidPort(port) }
        guard case .success(let found) = Self.lookUp(host: host, port: port),
              let chosen = found.v4.first ?? found.v6.first else { throw .unresolvable(host) }
        self = chosen
    }

    /// Every TCP address getaddrinfo gives for `host`:`port`, IPv4 and IPv6 apart, each in the
    /// resolver's order without repeats; the failure is getaddrinfo's message. Blocking.
    static func lookUp(host: String, port: Int) -> Result<(v4: [IPSocketAddress], v6: [IPSocketAddress]), AddressLookupFailure> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            return .failure(AddressLookupFailure(reason: rc == 0 ? "no addresses" : String(cString: gai_strerror(rc))))
        }
        defer { freeaddrinfo(result) }
        var v4: [IPSocketAddress] = []
        var v6: [IPSocketAddress] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let current = node {
            if let addr = current.pointee.ai_addr {
                if current.pointee.ai_family == AF_INET {
                    let a = IPSocketAddress(storage: .v4(UnsafeRawPointer(addr).loadUnaligned(as: sockaddr_in.self)))
                    if !v4.contains(a) { v4.append(a) }
                } else if current.pointee.ai_family == AF_INET6 {
                    let a = IPSocketAddress(storage: .v6(UnsafeRawPointer(addr).loadUnaligned(as: sockaddr_in6.self)))
                    if !v6.contains(a) { v6.append(a) }
                }
            }
            node = current.pointee.ai_next
        }
        return .success((v4, v6))
    }

    init(storage: Storage) { self.storage = storage }

    /// Builds an address from a `sockaddr_storage` filled by accept/getsockname (nil for other families).
    init?(raw: UnsafeRawPointer) {
        let family = raw.loadUnaligned(as: sockaddr.self).sa_family
        switch Int32(family) {
        case AF_INET: storage = .v4(raw.loadUnaligned(as: sockaddr_in.self))
        case AF_INET6: storage = .v6(raw.loadUnaligned(as: sockaddr_in6.self))
        default: return nil
        }
    }

    /// The port number.
    public var port: Int {
        switch storage {
        case .v4(let a): Int(UInt16(bigEndian: a.sin_port))
        case .v6(let a): Int(UInt16(bigEndian: a.sin6_port))
        }
    }

    /// The address family (AF_INET or AF_INET6).
    public var family: Int32 {
        switch storage {
        case .v4: AF_INET
        case .v6: AF_INET6
        }
    }

    /// The IP address as text, e.g. `127.0.0.1` or `::1`.
    public var ipAddress: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch storage {
        case .v4(var a):
            _ = inet_ntop(AF_INET, &a.sin_addr, &buffer, socklen_t(buffer.count))
        case .v6(var a):
            _ = inet_ntop(AF_INET6, &a.sin6_addr, &buffer, socklen_t(buffer.count))
        }
        return buffer.withUnsafeBufferPointer { ptr in
            String(decoding: ptr.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    /// Whether this is a loopback address (127.0.0.0/8 or ::1).
    public var isLoopback: Bool {
        switch storage {
        case .v4(let a): return (UInt32(bigEndian: a.sin_addr.s_addr) >> 24) == 127
        case .v6(var a):
            return withUnsafeBytes(of: &a.sin6_addr) { bytes in
                bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1
                    || (bytes.prefix(10).allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF && bytes[12] == 127)
            }
        }
    }

    /// `host:port`, with brackets for IPv6.
    public var description: String {
        switch storage {
        case .v4: "\(ipAddress):\(port)"
        case .v6: "[\(ipAddress)]:\(port)"
        }
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch storage {
        case .v4(var a):
            return withUnsafePointer(to: &a) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6(var a):
            return withUnsafePointer(to: &a) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }
}

/// An address that could not be used.
public enum IPSocketAddressError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The port is outside 0...65535.
    case invalidPort(Int)
    /// The host name did not resolve to an IPv4 or IPv6 address.
    case unresolvable(String)

    public var description: String {
        switch self {
        case .invalidPort(let p): "invalid port \(p)"
        case .unresolvable(let h): "cannot resolve host '\(h)'"
        }
    }
}


extension ClientAddress {
    /// The address of an `AF_INET` or `AF_INET6` socket address (e.g. from `accept`); nil for
    /// other families. An IPv4-mapped IPv6 peer becomes the same key as the plain IPv4 peer.
    public init?(_ storage: sockaddr_storage) {
        var storage = storage
        let family = Int32(storage.ss_family)
        let result: ClientAddress? = withUnsafeBytes(of: &storage) { raw in
            if family == AF_INET {
                let sin = raw.loadUnaligned(as: sockaddr_in.self)
                return ClientAddress(ipv4: UInt32(bigEndian: sin.sin_addr.s_addr))
            }
            if family == AF_INET6 {
                let sin6 = raw.loadUnaligned(as: sockaddr_in6.self)
                return withUnsafeBytes(of: sin6.sin6_addr) { ClientAddress(bytes: $0) }
            }
            return nil
        }
        guard let result else { return nil }
        self = result
    }
}

/// Why getaddrinfo found nothing (its own message).
struct AddressLookupFailure: Error {
    let reason: String
}
