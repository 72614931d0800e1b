import Glibc
import LBKitPolicy

/// Turns a backend's host name into the addresses to balance over. The balancer calls it when
/// it starts, when a backend is added at run time, and every resolve interval, always off its
/// event loops (on a Dispatch thread once it runs), so an implementation may block.
/// ``SystemBackendResolver`` (getaddrinfo) is the default; tests inject their own to return
/// several addresses.
///
/// ```swift
/// struct FixedResolver: BackendResolver {
///     func resolve(host: String, port: Int) throws(BackendResolutionError) -> [IPSocketAddress] {
///         guard host == "api.test" else { throw BackendResolutionError("unknown host \(host)") }
///         return ["127.0.0.2", "127.0.0.3"].compactMap { IPSocketAddress(ipLiteral: $0, port: port) }
///     }
/// }
/// ```
public protocol BackendResolver: Sendable {
    /// The addresses of `host` (a name, never an IP literal) with `port`; throws when the name
    /// does not resolve. An empty answer counts as a failure (the last known addresses stay).
    func resolve(host: String, port: Int) throws(BackendResolutionError) -> [IPSocketAddress]
}

/// A name that did not resolve.
public struct BackendResolutionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Why (for log lines and admin answers).
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The system resolver (`getaddrinfo`: `/etc/hosts`, DNS, whatever nsswitch says). Blocking.
///
/// Family choice: every IPv4 address when the name has any, else every IPv6 address (the
/// "IPv4 preferred" rule of Envoy's `V4_PREFERRED` and of LBKit's single-address lookups), so
/// `localhost` becomes `127.0.0.1` alone rather than also `::1`, which a backend listening on
/// IPv4 only would refuse.
///
/// ```swift
/// let addresses = try SystemBackendResolver().resolve(host: "localhost", port: 8080)  // [127.0.0.1:8080]
/// ```
public struct SystemBackendResolver: BackendResolver {
    /// Creates the resolver.
    public init() {}

    /// The addresses of `host`: all IPv4 ones, or all IPv6 ones when it has no IPv4 address
    /// (blocking: getaddrinfo).
    public func resolve(host: String, port: Int) throws(BackendResolutionError) -> [IPSocketAddress] {
        guard (1...65535).contains(port) else { throw BackendResolutionError("invalid port \(port)") }
        let v4: [IPSocketAddress], v6: [IPSocketAddress]
        switch IPSocketAddress.lookUp(host: host, port: port) {
        case .success(let found): (v4, v6) = found
        case .failure(let failure): throw BackendResolutionError("cannot resolve \(host): \(failure.reason)")
        }
        let chosen = v4.isEmpty ? v6 : v4
        guard !chosen.isEmpty else { throw BackendResolutionError("cannot resolve \(host): no IPv4 or IPv6 address") }
        return chosen
    }
}

extension IPSocketAddress {
    /// An IPv4 or IPv6 literal (`10.0.0.5`, `::1`) with `port`, without any name lookup; nil for a
    /// host name or a port outside 0...65535.
    ///
    /// ```swift
    /// IPSocketAddress(ipLiteral: "10.0.0.5", port: 8080)     // 10.0.0.5:8080
    /// IPSocketAddress(ipLiteral: "api.internal", port: 8080) // nil: a name
    /// ```
    public init?(ipLiteral host: String, port: Int) {
        self.init(literal: host, port: port)
    }
}
