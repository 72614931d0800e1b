import NIOCore
import Vapor

/// Balances the requests under a path prefix across an LBKit ``LoadBalancer``; every other
/// request goes on to the rest of the application.
///
/// Add it as a global middleware (`app.middleware.use`), so it sees requests that match no
/// route. For each request under ``pathPrefix`` it:
/// - takes the client address from `req.remoteAddress` (the TCP peer; never `req.peerAddress`,
///   which believes a client-sent `X-Forwarded-For`), so per-client throttling and
///   `X-Forwarded-For` are right; put proxies you trust in `configuration.trustedProxies`;
/// - collects the body up to `balancer.configuration.maxBodyBytes` (beyond: 413 JSON, as
///   `lbserve` answers);
/// - keeps every header field, `Host` included, and the target (minus the prefix when
///   ``stripPrefix`` is on);
/// - runs the balancer's standard chain (per-client throttle when `rateLimit` is set, then your
///   ``LBMiddleware``s, then the balancer) and converts the answer back;
/// - removes LBKit's backend header (`X-Backend`, or the balancer's `backendHeader`) unless
///   ``exposesBackendHeader`` is on.
///
/// The simplest way in is ``Vapor/Application/LoadBalancers/use(_:pathPrefix:stripPrefix:exposesBackendHeader:middlewares:drainTimeout:)``,
/// which also registers the balancer's lifecycle:
///
/// ```swift
/// func configure(_ app: Application) throws {
///     var config = LoadBalancerConfiguration()
///     config.backends = try ["http://10.0.0.1:8080", "http://10.0.0.2:8080"].map { try BackendURL(parsing: $0) }
///     config.rateLimit = 20
///     let balancer = try LoadBalancer(configuration: config, log: app.logger.loadBalancerLogSink)
///     app.loadBalancer.use(balancer, pathPrefix: "/api")
/// }
/// ```
///
/// By hand, bound to a lifecycle (so requests arriving during shutdown get 503 instead of
/// reaching a stopped balancer):
///
/// ```swift
/// func configure(_ app: Application, balancer: LoadBalancer) {
///     let lifecycle = LoadBalancerLifecycle(balancer: balancer)
///     app.lifecycle.use(lifecycle)
///     app.middleware.use(LoadBalancerMiddleware(lifecycle: lifecycle, pathPrefix: "/api", stripPrefix: true))
/// }
/// ```
public struct LoadBalancerMiddleware: AsyncMiddleware {
    /// The balancer requests are forwarded to.
    ///
    /// ```swift
    /// let health = middleware.balancer.healthJSON()
    /// ```
    public let balancer: LoadBalancer
    /// The path prefix handled, normalised to start with `/` and end without one (`"/"` = every
    /// request). `/api` matches `/api`, `/api/...` and `/api?...`, never `/apix`.
    ///
    /// ```swift
    /// LoadBalancerMiddleware(balancer: balancer, pathPrefix: "api/").pathPrefix   // "/api"
    /// ```
    public let pathPrefix: String
    /// Whether the prefix is removed from the target sent upstream (`/api/items?x=1` -> `/items?x=1`).
    ///
    /// ```swift
    /// app.middleware.use(LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api", stripPrefix: true))
    /// ```
    public let stripPrefix: Bool
    /// Whether LBKit's backend header (`X-Backend`, or the balancer's `backendHeader`: the
    /// backend that answered) reaches clients.
    ///
    /// ```swift
    /// app.middleware.use(LoadBalancerMiddleware(balancer: balancer, exposesBackendHeader: true))
    /// ```
    public let exposesBackendHeader: Bool
    /// The lifecycle that owns the balancer, when bound to one.
    ///
    /// ```swift
    /// let stopping = middleware.lifecycle?.state == .stopping
    /// ```
    public let lifecycle: LoadBalancerLifecycle?
    private let handler: any HTTPHandler
    /// The response field removed before the client sees it: the balancer's backend header
    /// (``LoadBalancerConfiguration/backendHeader``) unless exposed; nil = nothing to remove.
    private let removedField: String?

    /// A middleware for `balancer`, whose lifecycle you run yourself (`balancer.run()` /
    /// `balancer.shutdown()`); prefer ``init(lifecycle:pathPrefix:stripPrefix:exposesBackendHeader:middlewares:)``
    /// inside a Vapor application.
    ///
    /// - Parameters:
    ///   - balancer: where requests go.
    ///   - pathPrefix: the requests handled (default: all).
    ///   - stripPrefix: remove the prefix from the forwarded target.
    ///   - exposesBackendHeader: keep `X-Backend` in responses (default: removed).
    ///   - middlewares: your ``LBMiddleware``s, run after the throttle and before the balancer.
    ///
    /// ```swift
    /// let middleware = LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api", exposesBackendHeader: true)
    /// ```
    public init(balancer: LoadBalancer, pathPrefix: String = "/", stripPrefix: Bool = false,
                exposesBackendHeader: Bool = false, middlewares: [any LBMiddleware] = []) {
        self.init(balancer: balancer, lifecycle: nil, pathPrefix: pathPrefix, stripPrefix: stripPrefix,
                  exposesBackendHeader: exposesBackendHeader, middlewares: middlewares)
    }

    /// A middleware for the balancer owned by `lifecycle`: once the lifecycle is stopping, new
    /// requests get 503 and shutdown waits for those already inside.
    ///
    /// ```swift
    /// app.middleware.use(LoadBalancerMiddleware(lifecycle: lifecycle, pathPrefix: "/api"))
    /// ```
    public init(lifecycle: LoadBalancerLifecycle, pathPrefix: String = "/", stripPrefix: Bool = false,
                exposesBackendHeader: Bool = false, middlewares: [any LBMiddleware] = []) {
        self.init(balancer: lifecycle.balancer, lifecycle: lifecycle, pathPrefix: pathPrefix, stripPrefix: stripPrefix,
                  exposesBackendHeader: exposesBackendHeader, middlewares: middlewares)
    }

    private init(balancer: LoadBalancer, lifecycle: LoadBalancerLifecycle?, pathPrefix: String, stripPrefix: Bool,
                 exposesBackendHeader: Bool, middlewares: [any LBMiddleware]) {
        self.balancer = balancer
        self.lifecycle = lifecycle
        self.pathPrefix = Self.normalise(pathPrefix)
        self.stripPrefix = stripPrefix
        self.exposesBackendHeader = exposesBackendHeader
        handler = balancer.responder(admin: false, middlewares: middlewares)
        removedField = exposesBackendHeader ? nil : balancer.configuration.backendHeader
    }

    /// Forwards requests under ``pathPrefix``; passes the others to `next`. Vapor calls it for
    /// every request once the middleware is registered:
    ///
    /// ```swift
    /// app.middleware.use(LoadBalancerMiddleware(lifecycle: lifecycle, pathPrefix: "/api"))
    /// ```
    public func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
        guard let target = forwardedTarget(request.url.string) else {
            return try await next.respond(to: request)
        }
        let limit = balancer.configuration.maxBodyBytes
        if let declared = request.headers.first(name: .contentLength).flatMap({ Int($0) }), declared > limit {
            return LBResponse.jsonError(status: 413, message: "request body of \(declared) bytes exceeds the limit of \(limit) bytes")
                .vaporResponse()
        }
        let body: [UInt8]
        if !request.headers.contains(name: .contentLength) && !request.headers.contains(name: .transferEncoding) {
            // No body (RFC 9112 6.3): nothing to collect, and no wait for a future completed on
            // the connection's event loop.
            body = []
        } else {
            do {
                // Vapor refuses a body that reaches `max`, so allow one byte more than the limit.
                let buffer = try await request.body.collect(max: limit == Int.max ? limit : limit + 1).get()
                body = buffer.map { Array($0.readableBytesView) } ?? []
            } catch let error as Abort where error.status == .payloadTooLarge {
                return Self.tooLarge(limit).vaporResponse()
            }
        }
        guard body.count <= limit else { return Self.tooLarge(limit).vaporResponse() }

        let lbRequest = LBRequest(vapor: request, target: target, body: body)
        let context = LBRequestContext(client: request.remoteAddress.flatMap(ClientAddress.init(socketAddress:)))
        if let gate = lifecycle?.gate {
            guard gate.enter() else {
                return LBResponse.jsonError(status: 503, message: "load balancer is shutting down").vaporResponse()
            }
            defer { gate.leave() }
            return await handler.handle(lbRequest, context: context).vaporResponse(removingField: removedField)
        }
        return await handler.handle(lbRequest, context: context).vaporResponse(removingField: removedField)
    }

    /// The target to forward for `target`, or nil when it is not under the prefix.
    func forwardedTarget(_ target: String) -> String? {
        if pathPrefix == "/" { return target.isEmpty ? "/" : target }
        guard let rest = LBPathPrefix.remainder(of: target, under: pathPrefix) else { return nil }
        return stripPrefix ? rest : target
    }

    static func normalise(_ prefix: String) -> String {
        var p = prefix.hasPrefix("/") ? prefix : "/" + prefix
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }

    private static func tooLarge(_ limit: Int) -> LBResponse {
        .jsonError(status: 413, message: "request body exceeds the limit of \(limit) bytes")
    }
}
