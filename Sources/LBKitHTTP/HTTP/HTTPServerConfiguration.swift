import LBKitPolicy
/// Settings of an ``HTTP1Server``: where it listens and the limits and timeouts it enforces.
///
/// ```swift
/// var config = HTTP1ServerConfiguration(host: "127.0.0.1", port: 0)   // 0: any free port
/// config.maxBodyBytes = 1 << 20
/// ```
public struct HTTP1ServerConfiguration: Sendable {
    /// Address to bind (an IP literal or a resolvable name).
    public var host: String
    /// Port to bind; 0 picks a free ephemeral port (see ``HTTP1Server/localAddress``).
    public var port: Int
    /// Parser limits (head size 16 KiB -> 431 by default).
    public var limits = HTTPParserLimits()
    /// Largest accepted request body; larger -> 413.
    public var maxBodyBytes = 8 * 1024 * 1024
    /// How long a keep-alive connection may wait for its next request before being closed.
    public var idleTimeout: Duration = .seconds(60)
    /// How long a client may take to send a complete request head once it started one (408).
    public var headerTimeout: Duration = .seconds(10)
    /// How long the server waits for more body bytes before giving up (408).
    public var bodyTimeout: Duration = .seconds(30)
    /// How long a response write may stall before the connection is dropped.
    public var writeTimeout: Duration = .seconds(30)
    /// At most this many requests on one connection, then `Connection: close` (0 = unlimited).
    public var maxRequestsPerConnection = 0

    /// Creates a configuration.
    public init(host: String = "127.0.0.1", port: Int = 0) {
        self.host = host
        self.port = port
    }
}
