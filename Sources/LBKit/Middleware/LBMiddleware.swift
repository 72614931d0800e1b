/// A step between the server and the balancer: look at the request, answer it yourself, or pass
/// it on with `next` (and look at the response on the way back). The shape of Hummingbird's
/// `MiddlewareProtocol`, with LBKit's message types.
///
/// ```swift
/// struct RequireAPIKey: LBMiddleware {
///     func handle(_ request: LBRequest, context: LBRequestContext,
///                 next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
///         guard request.headers.contains(name: "X-API-Key") else {
///             return .jsonError(status: 401, message: "missing X-API-Key")
///         }
///         return await next(request, context)
///     }
/// }
/// ```
public protocol LBMiddleware: Sendable {
    /// Handles `request`, calling `next` to pass it on.
    func handle(_ request: LBRequest, context: LBRequestContext,
                next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse
}

/// Middlewares in order in front of a terminal responder; itself an ``HTTPHandler``, so it can be
/// handed to ``HTTP1Server`` or called from any other server.
///
/// ```swift
/// func makeHandler(balancer: LoadBalancer, throttle: ThrottleMiddleware) -> any HTTPHandler {
///     LBMiddlewareChain([throttle], responder: balancer)
/// }
/// ```
public struct LBMiddlewareChain: HTTPHandler {
    private let entry: any HTTPHandler

    /// Runs `middlewares` first to last, then `responder`.
    public init(_ middlewares: [any LBMiddleware], responder: any HTTPHandler) {
        var handler = responder
        for middleware in middlewares.reversed() {
            handler = MiddlewareStep(middleware: middleware, next: handler)
        }
        entry = handler
    }

    /// Passes `request` through the chain.
    public func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await entry.handle(request, context: context)
    }
}

/// One middleware bound to what follows it (built once, so a request allocates no closures).
struct MiddlewareStep: HTTPHandler {
    let middleware: any LBMiddleware
    let next: any HTTPHandler

    func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await middleware.handle(request, context: context) { request, context in
            await next.handle(request, context: context)
        }
    }
}
