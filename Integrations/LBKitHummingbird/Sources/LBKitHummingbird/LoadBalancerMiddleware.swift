import HTTPTypes
import Hummingbird
import LBKit
import NIOCore

/// A Hummingbird router middleware that sends requests to a ``LoadBalancer`` instead of the
/// routes behind it.
///
/// It balances every request that reaches it, or, with `pathPrefix`, those whose path is the
/// prefix or lies under it (`/api`, `/api/...`; not `/apix`); anything else goes on to `next`.
/// Added to a `Router`, it also sees requests no route matches, so `/api/...` needs no routes
/// of its own.
///
/// On the way: the Hummingbird request becomes an ``LBRequest`` (`Host` restored from the
/// `:authority`, the body collected up to the balancer's `maxBodyBytes`, 413 JSON beyond), goes
/// through the balancer's chain (per-client throttle when `rateLimit` is set, optional `/_lb/*`
/// admin endpoints, your ``LBMiddleware``s, the balancer) and the ``LBResponse`` comes back as a
/// Hummingbird `Response`. LBKit's backend header (`X-Backend`, or the balancer's
/// `backendHeader`) is removed unless `exposeBackendHeader` is true.
///
/// The client is the connection's peer, taken from a `RemoteAddressRequestContext` (use
/// ``BalancerRequestContext``) or from your own `clientAddress` closure. `X-Forwarded-For` is
/// believed only when the peer is in the balancer's `trustedProxies`.
///
/// ```swift
/// func buildRouter(balancer: LoadBalancer) -> Router<BalancerRequestContext> {
///     let router = Router(context: BalancerRequestContext.self)
///     router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api", stripPathPrefix: true))
///     router.get("/hello") { _, _ in "served by Hummingbird\n" }   // not balanced
///     return router
/// }
/// ```
public struct LoadBalancerMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The balancer requests are sent to.
    ///
    /// ```swift
    /// router.get("/healthz") { _, _ in middleware.balancer.healthResponse() }
    /// ```
    public let balancer: LoadBalancer
    /// Only paths equal to it or under it are balanced (nil: every request reaching the middleware).
    ///
    /// ```swift
    /// LoadBalancerMiddleware<BalancerRequestContext>(balancer: balancer, pathPrefix: "/api").pathPrefix   // "/api"
    /// ```
    public let pathPrefix: String?
    /// Whether `pathPrefix` is removed from the target before forwarding (`/api/x` -> `/x`).
    ///
    /// ```swift
    /// let m = LoadBalancerMiddleware<BalancerRequestContext>(balancer: balancer, pathPrefix: "/api", stripPathPrefix: true)
    /// // GET /api/items?id=1 reaches the backend as GET /items?id=1
    /// ```
    public let stripsPathPrefix: Bool
    /// Whether LBKit's backend header (`X-Backend`, or the balancer's `backendHeader`) reaches
    /// the client (default false: removed).
    ///
    /// ```swift
    /// let debugging = LoadBalancerMiddleware<BalancerRequestContext>(balancer: balancer, exposeBackendHeader: true)
    /// // responses carry X-Backend: http://127.0.0.1:5102
    /// ```
    public let exposesBackendHeader: Bool

    private let prefix: String?
    /// The response field removed before the client sees it: the balancer's backend header
    /// (``LoadBalancerConfiguration/backendHeader``) unless exposed; nil = nothing to remove.
    private let removedField: String?
    private let responder: any HTTPHandler
    private let clientAddress: @Sendable (Request, Context) -> ClientAddress?

    /// A middleware whose client is the context's `remoteAddress` (the TCP peer).
    ///
    /// - Parameters:
    ///   - balancer: where requests go.
    ///   - pathPrefix: balance only this path and those under it (nil: everything reaching it).
    ///   - stripPathPrefix: remove `pathPrefix` from the target sent to backends.
    ///   - exposeBackendHeader: keep LBKit's `X-Backend` response field (default: removed).
    ///   - admin: also answer LBKit's `/_lb/*` admin endpoints (after the prefix is stripped) for admin
    ///     clients (loopback, or `LoadBalancerConfiguration.adminAllow`); others' requests are proxied.
    ///   - middlewares: your LBKit middlewares, run after the throttle, before the balancer.
    ///
    /// ```swift
    /// let router = Router(context: BalancerRequestContext.self)
    /// router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api"))
    /// ```
    public init(balancer: LoadBalancer, pathPrefix: String? = nil, stripPathPrefix: Bool = false,
                exposeBackendHeader: Bool = false, admin: Bool = false, middlewares: [any LBMiddleware] = [])
    where Context: RemoteAddressRequestContext {
        self.init(balancer: balancer, pathPrefix: pathPrefix, stripPathPrefix: stripPathPrefix,
                  exposeBackendHeader: exposeBackendHeader, admin: admin, middlewares: middlewares,
                  clientAddress: { _, context in context.remoteAddress.flatMap { ClientAddress(socketAddress: $0) } })
    }

    /// A middleware for any context: `clientAddress` says who sent a request (return the TCP
    /// peer; nil = unknown, and per-client throttling lets the request through, logged once).
    ///
    /// ```swift
    /// // A context of your own that stores the peer under another name:
    /// let middleware = LoadBalancerMiddleware<MyContext>(balancer: balancer, pathPrefix: "/api",
    ///     clientAddress: { _, context in context.peer.flatMap { ClientAddress(socketAddress: $0) } })
    /// ```
    public init(balancer: LoadBalancer, pathPrefix: String? = nil, stripPathPrefix: Bool = false,
                exposeBackendHeader: Bool = false, admin: Bool = false, middlewares: [any LBMiddleware] = [],
                clientAddress: @escaping @Sendable (Request, Context) -> ClientAddress?) {
        self.balancer = balancer
        self.pathPrefix = pathPrefix
        self.stripsPathPrefix = stripPathPrefix
        self.exposesBackendHeader = exposeBackendHeader
        self.prefix = pathPrefix.flatMap(Self.normalize)
        self.removedField = exposeBackendHeader ? nil : balancer.configuration.backendHeader
        self.responder = balancer.responder(admin: admin, middlewares: middlewares)
        self.clientAddress = clientAddress
    }

    /// Balances `request` when its path is under `pathPrefix`, otherwise passes it to `next`.
    /// Hummingbird calls it; you normally do not.
    ///
    /// ```swift
    /// // POST /api/x {"msg":"hi"}  ->  200 {"msg":"hi","handled_by":5101}   (balanced)
    /// // GET /hello                ->  whatever your /hello route answers  (next)
    /// ```
    public func handle(_ request: Request, context: Context,
                       next: (Request, Context) async throws -> Response) async throws -> Response {
        let original = request.head.path ?? "/"
        let target: String
        if let prefix {
            guard let rest = Self.remainder(of: original, under: prefix) else {
                return try await next(request, context)
            }
            target = stripsPathPrefix ? rest : original
        } else {
            target = original
        }
        guard let body = try await collectBody(request) else {
            let limit = balancer.configuration.maxBodyBytes
            var response = LBResponse.jsonError(status: 413, message: "request body larger than \(limit) bytes")
                .hummingbirdResponse()
            response.headers[.connection] = "close"   // do not read the rest of an oversized body
            return response
        }
        let lbRequest = LBRequest(request, target: target, body: body)
        let lbContext = LBRequestContext(client: clientAddress(request, context))
        let response = await responder.handle(lbRequest, context: lbContext)
        return response.hummingbirdResponse(removingField: removedField)
    }

    /// The whole body, or nil when it is larger than the balancer's `maxBodyBytes`.
    /// `nonisolated(nonsending)`: runs on the executor of the request's task, so collecting even
    /// an empty body costs no task switch to the global executor and back.
    nonisolated(nonsending) private func collectBody(_ request: Request) async throws -> [UInt8]? {
        let limit = balancer.configuration.maxBodyBytes
        let fields = request.head.headerFields
        // Neither Content-Length nor Transfer-Encoding: no body (RFC 9112 6.3), nothing to wait
        // for; Hummingbird reads the request's end itself after the response.
        if fields[.contentLength] == nil && fields[.transferEncoding] == nil { return [] }
        var bytes: [UInt8] = []
        if let declared = fields[.contentLength].flatMap({ Int($0) }) {
            guard declared <= limit else { return nil }
            bytes.reserveCapacity(declared)
        }
        for try await chunk in request.body {
            guard chunk.readableBytes <= limit - bytes.count else { return nil }
            bytes.append(contentsOf: chunk.readableBytesView)
        }
        return bytes
    }

    /// `/api/` -> `/api`; `/` and `` -> nil (everything).
    static func normalize(_ prefix: String) -> String? {
        var p = Substring(prefix)
        while p.hasSuffix("/") { p = p.dropLast() }
        if p.isEmpty { return nil }
        return p.hasPrefix("/") ? String(p) : "/" + p
    }

    /// The target with `prefix` removed when the path is `prefix` or under it (`/api/x?q` ->
    /// `/x?q`, `/api?q` -> `/?q`), nil when it is not.
    static func remainder(of target: String, under prefix: String) -> String? {
        LBPathPrefix.remainder(of: target, under: prefix)
    }
}
