import Hummingbird
import NIOCore

/// A Hummingbird request context that knows the TCP peer of the connection, so
/// ``LoadBalancerMiddleware`` can throttle per client and add the real client to
/// `X-Forwarded-For`.
///
/// Hummingbird's `BasicRequestContext` has no remote address: with it every request would look
/// like it came from nowhere. Use this context (or any context of yours that conforms to
/// `RemoteAddressRequestContext`) for a router that balances.
///
/// The address is the socket peer, never a header: `X-Forwarded-For` is believed only when the
/// peer is one of the balancer's `trustedProxies` (LBKit decides that, given the peer).
///
/// ```swift
/// let router = Router(context: BalancerRequestContext.self)
/// router.get("/whoami") { _, context in context.remoteAddress?.ipAddress ?? "unknown" }
/// ```
public struct BalancerRequestContext: RequestContext, RemoteAddressRequestContext {
    /// Hummingbird's per-request storage (logger, parameters, endpoint path).
    ///
    /// ```swift
    /// router.get("/user/:id") { _, context in context.parameters.get("id") ?? "" }   // reads coreContext
    /// ```
    public var coreContext: CoreRequestContextStorage
    /// The connection's peer (nil when the channel has none, e.g. in `.router` tests).
    ///
    /// Read from the channel when asked (SwiftNIO keeps it cached there), not copied into every
    /// request's context: routes that never ask do not pay for the channel's lock and the copy.
    ///
    /// ```swift
    /// router.get("/ip") { _, context in context.remoteAddress?.ipAddress ?? "unknown" }
    /// ```
    public var remoteAddress: SocketAddress? { channel.remoteAddress }

    /// The request's connection.
    private let channel: any Channel

    /// Creates the context for a request arriving on `source.channel`.
    ///
    /// ```swift
    /// // Hummingbird calls this for every request; tests can too:
    /// // let context = BalancerRequestContext(source: .init(channel: channel, logger: logger))
    /// ```
    public init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        channel = source.channel
    }
}
