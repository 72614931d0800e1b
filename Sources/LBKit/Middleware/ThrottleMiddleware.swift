import Synchronization

/// Per-client rate limiting in front of any handler, with or without a balancer: over its limit a
/// client gets `429 Too Many Requests` with `Retry-After` and `RateLimit-*` headers.
///
/// The client is the context's ``LBRequestContext/clientAddress``, or, when that address is a
/// trusted proxy, the client that proxy recorded in `X-Forwarded-For`
/// (``ClientIdentityResolver``). A request with no client address cannot be attributed to a
/// client: like nginx's `limit_req` with an empty key, it is **not** counted (sharing one bucket
/// would let one client throttle all the others). The first such request is logged once at
/// `warning`, and ``unidentifiedRequests`` counts them.
///
/// With a ``RedisThrottleStore`` (`sharedStore`), several instances enforce one limit per client:
/// each decision is still made here, at once, by the local table; the store shares the state in
/// the background (see its documentation for the accuracy bound and the fallback rule).
///
/// ```swift
/// let throttle = ThrottleMiddleware(
///     table: ThrottleTable(configuration: ThrottleConfiguration(rate: 10, burst: 20), clock: SystemClock()),
///     identity: ClientIdentityResolver(trustedProxies: []))
/// let handler = LBMiddlewareChain([throttle], responder: ClosureHandler { _, _ in LBResponse(status: 200) })
/// ```
public struct ThrottleMiddleware: SynchronousMiddleware {
    /// The per-client state.
    public let table: ThrottleTable
    /// Who the client is behind trusted proxies.
    public let identity: ClientIdentityResolver
    /// The store that shares `table`'s state with other instances, if any (it never delays a
    /// request: each decision is the table's, and the store synchronises in the background).
    public let sharedStore: RedisThrottleStore?
    private let shared: Shared
    private let log: LogSink

    final class Shared: Sendable {
        let throttled = Atomic<Int>(0)
        let unidentified = Atomic<Int>(0)
    }

    /// Creates the middleware; `log` receives the one-time warning about unidentified clients
    /// and the table's penalty events go wherever the table was told.
    public init(table: ThrottleTable, identity: ClientIdentityResolver, sharedStore: RedisThrottleStore? = nil,
                log: @escaping LogSink = { _ in }) {
        self.table = table
        self.identity = identity
        self.sharedStore = sharedStore
        self.shared = Shared()
        self.log = log
    }

    /// Requests answered 429 so far.
    public var throttledRequests: Int { shared.throttled.load(ordering: .relaxed) }
    /// Requests passed through unthrottled because they had no client address.
    public var unidentifiedRequests: Int { shared.unidentified.load(ordering: .relaxed) }

    /// The client `request` is attributed to (nil when the context has no address).
    public func client(of request: LBRequest, context: LBRequestContext) -> ClientAddress? {
        guard let peer = context.clientAddress else { return nil }
        if identity.trustedProxies.isEmpty { return peer }
        return identity.resolve(peer: peer, forwardedFor: request.headers["X-Forwarded-For"])
    }

    /// The 429 response for `request`, or nil when it may pass.
    public func rejection(for request: LBRequest, context: LBRequestContext) -> LBResponse? {
        guard let key = client(of: request, context: context) else {
            if shared.unidentified.add(1, ordering: .relaxed).oldValue == 0 {
                log(LBLogEvent(level: .warning, category: .throttle,
                             message: "request without a client address: per-client throttling cannot apply and lets it through (pass the peer address in LBRequestContext)"))
            }
            return nil
        }
        let decision: ThrottleDecision
        if let sharedStore {
            let charge = table.checkCharging(key)
            sharedStore.record(key, charge)
            decision = charge.decision
        } else {
            decision = table.check(key)
        }
        guard !decision.isAllowed else { return nil }
        shared.throttled.add(1, ordering: .relaxed)
        var headers = HeaderFields()
        for (name, value) in decision.responseHeaders() { headers.add(name: name, value: value) }
        return .jsonError(status: 429, message: "too many requests from \(key)", headers: headers)
    }

    /// Answers 429 over the limit, passes the request on otherwise.
    public func handle(_ request: LBRequest, context: LBRequestContext,
                       next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
        if let rejection = rejection(for: request, context: context) { return rejection }
        return await next(request, context)
    }

    package func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
        if let rejection = rejection(for: request, context: context) { return .answer(rejection) }
        return .pass(mark: 0)
    }
}
