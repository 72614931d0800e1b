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
    /// Request bodies up to this size are read whole before the handler runs (so a balancer can
    /// send them again elsewhere after a failure); larger ones reach the handler as a stream
    /// (``LBRequest/bodyStream``), read with backpressure, never held whole in memory.
    public var maxBufferedBodyBytes = 1024 * 1024
    /// All connections together buffer at most this many request-body bytes; a request whose
    /// buffering would exceed it is answered `503` with `Retry-After: 1` (memory stays bounded
    /// under many concurrent uploads).
    public var bufferedBodyBudget = 256 * 1024 * 1024
    /// An upgraded connection (WebSocket) is closed after this long without a byte either way.
    public var tunnelIdleTimeout: Duration = .seconds(60)
    /// How long a keep-alive connection may wait for its next request before being closed.
    public var idleTimeout: Duration = .seconds(60)
    /// How long a client may take to send a complete request head once it started one (408).
    public var headerTimeout: Duration = .seconds(10)
    /// How long a request body may stall (no new byte) before the server gives up (408). A stall
    /// timeout, not a limit on the whole transfer: a slow upload that keeps progressing is fine.
    public var bodyTimeout: Duration = .seconds(30)
    /// How long a response write may stall (no byte accepted by the client) before the
    /// connection is dropped; each part of a streamed response gets its own.
    public var writeTimeout: Duration = .seconds(30)
    /// At most this many requests on one connection, then `Connection: close` (0 = unlimited).
    public var maxRequestsPerConnection = 0

    /// Creates a configuration.
    public init(host: String = "127.0.0.1", port: Int = 0) {
        self.host = host
        self.port = port
    }
}
