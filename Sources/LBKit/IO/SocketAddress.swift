import Glibc

/// An IPv4 or IPv6 socket address (address + port).
///
/// ```swift
/// let address = try SocketAddress(host: "127.0.0.1", port: 8000)
/// print(address)  // 127.0.0.1:8000
/// ```
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    enum Storage: Hashable, Sendable {
        case v4(sockaddr_in)
        case v6(sockaddr_in6)
    }
    let storage: Storage

    /// Resolves `host` (an IP literal or a name such as `localhost`) and `port` with getaddrinfo,
    /// preferring IPv4. Blocking: call at configuration time, not per request.
    public init(host: String, port: Int) throws(SocketAddressError) {
        guard (0...65535).contains(port) else { throw .invalidPort(port) }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else { throw .unresolvable(host) }
        defer { freeaddrinfo(result) }
        var chosen: Storage?
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let current = node {
            if let addr = current.pointee.ai_addr {
                if current.pointee.ai_family == AF_INET {
                    chosen = .v4(UnsafeRawPointer(addr).loadUnaligned(as: sockaddr_in.self))
                    break
                } else if current.pointee.ai_family == AF_INET6, chosen == nil {
                    chosen = .v6(UnsafeRawPointer(addr).loadUnaligned(as: sockaddr_in6.self))
                }
            }
            node = current.pointee.ai_next
        }
        guard let chosen else { throw .unresolvable(host) }
        storage = chosen
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
public enum SocketAddressError: Error, Equatable, Sendable, CustomStringConvertible {
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

extension sockaddr_in: @retroactive Equatable, @retroactive Hashable {
    public static func == (a: sockaddr_in, b: sockaddr_in) -> Bool {
        a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr
    }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(sin_port)
        hasher.combine(sin_addr.s_addr)
    }
}

extension sockaddr_in6: @retroactive Equatable, @retroactive Hashable {
    public static func == (a: sockaddr_in6, b: sockaddr_in6) -> Bool {
        var x = a, y = b
        return a.sin6_port == b.sin6_port
            && withUnsafeBytes(of: &x.sin6_addr) { xb in withUnsafeBytes(of: &y.sin6_addr) { yb in xb.elementsEqual(yb) } }
    }
    public func hash(into hasher: inout Hasher) {
        var x = self
        hasher.combine(sin6_port)
        withUnsafeBytes(of: &x.sin6_addr) { hasher.combine(bytes: $0) }
    }
}
