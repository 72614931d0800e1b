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

/// What a ``SynchronousMiddleware`` decides before the rest of the chain runs.
package enum MiddlewareVerdict {
    /// Answer with this response; the rest of the chain does not run.
    case answer(LBResponse)
    /// Go on; `mark` comes back to ``SynchronousMiddleware/after(_:request:context:mark:)``.
    case pass(mark: UInt64)
    /// Answer with what ``SynchronousMiddleware/answer(_:context:)`` produces (the rare answer
    /// that needs to wait, e.g. for a request body); the rest of the chain does not run.
    case answerAsynchronously
}

/// A middleware of this package whose work is synchronous: a decision before the rest of the
/// chain and, when it passed, a look at the response after. The chain runs a row of them in one
/// loop around a single call of what follows, instead of one async call per middleware (each
/// such call costs a task-allocator frame and a task switch, on every request). The behaviour
/// is that of nesting their ``LBMiddleware/handle(_:context:next:)`` calls.
package protocol SynchronousMiddleware: LBMiddleware {
    /// Before what follows.
    func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict
    /// After what follows answered `response` (only when ``before(_:context:)`` passed).
    func after(_ response: LBResponse, request: LBRequest, context: LBRequestContext, mark: UInt64)
    /// The answer when ``before(_:context:)`` said ``MiddlewareVerdict/answerAsynchronously``.
    nonisolated(nonsending) func answer(_ request: LBRequest, context: LBRequestContext) async -> LBResponse
}

extension SynchronousMiddleware {
    package func after(_ response: LBResponse, request: LBRequest, context: LBRequestContext, mark: UInt64) {}

    /// Only called after ``MiddlewareVerdict/answerAsynchronously``, which this middleware never says.
    nonisolated(nonsending) package func answer(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        .jsonError(status: 500, message: "middleware has no asynchronous answer")
    }
}

/// Middlewares in order in front of a terminal responder; itself an ``HTTPHandler``, so it can be
/// handed to ``HTTP1Server`` or called from any other server.
///
/// ```swift
/// func makeHandler(balancer: LoadBalancer, throttle: ThrottleMiddleware) -> any HTTPHandler {
///     LBMiddlewareChain([throttle], responder: balancer)
/// }
/// ```
public struct LBMiddlewareChain: HTTPHandler, InlineHTTPHandler {
    private let entry: any HTTPHandler
    private let inlineEntry: (any InlineHTTPHandler & AnyObject)?
    /// The entry when it is a row of synchronous middlewares (lbserve's chain): called directly.
    private let rowEntry: SynchronousMiddlewareRow?

    /// Runs `middlewares` first to last, then `responder`.
    public init(_ middlewares: [any LBMiddleware], responder: any HTTPHandler) {
        var handler = responder
        var row: [any SynchronousMiddleware] = []   // consecutive synchronous ones, in order
        for middleware in middlewares.reversed() {
            if let synchronous = middleware as? any SynchronousMiddleware, row.count < SynchronousMiddlewareRow.capacity {
                row.insert(synchronous, at: 0)
                continue
            }
            if !row.isEmpty {
                handler = SynchronousMiddlewareRow(row, next: handler)
                row = []
            }
            if let synchronous = middleware as? any SynchronousMiddleware {
                row = [synchronous]
            } else {
                handler = MiddlewareStep(middleware: middleware, next: handler)
            }
        }
        if !row.isEmpty { handler = SynchronousMiddlewareRow(row, next: handler) }
        entry = handler
        inlineEntry = handler.inlineObject
        rowEntry = handler as? SynchronousMiddlewareRow
    }

    /// Passes `request` through the chain.
    public func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await handleInline(request, context: context)
    }

    @inline(__always)  // into its protocol witness: one async frame less per request
    nonisolated(nonsending) package func handleInline(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        if let rowEntry { return await rowEntry.handleInline(request, context: context) }
        if let inlineEntry { return await inlineEntry.handleInline(request, context: context) }
        return await entry.handle(request, context: context)
    }

    /// True when every step is one of this package's synchronous middlewares or inline handlers.
    package var staysOnCallerExecutor: Bool {
        rowEntry?.staysOnCallerExecutor ?? inlineEntry?.staysOnCallerExecutor ?? false
    }

    /// The chain's first step (a class instance), called directly by a server holding the chain.
    package var inlineObject: (any InlineHTTPHandler & AnyObject)? { inlineEntry }
}

/// Up to ``capacity`` synchronous middlewares bound to what follows them: their `before`s in
/// order until one answers, what follows (unless one answered), then the `after`s of those
/// that passed, in reverse order.
///
/// A final class, not a struct: the chain holds it as an optional and reads it on every request;
/// copying a struct of three references out of an optional went through the generic value
/// witnesses (about 130 instructions a copy), a class reference is one retain.
final class SynchronousMiddlewareRow: HTTPHandler, InlineHTTPHandler {
    static let capacity = 8
    /// The middlewares, each opened once into a ``SynchronousMiddlewareBox``: a method called on
    /// an existential (`any SynchronousMiddleware`, in an array or any other storage) copies it
    /// out first, through its value witnesses, and destroys the copy afterwards, before and after
    /// every request, per middleware (about 110 instructions each time). A box is a class
    /// reference whose method calls its middleware statically.
    let middlewares: [SynchronousMiddlewareBox]
    let next: any HTTPHandler
    let inlineNext: (any InlineHTTPHandler & AnyObject)?
    /// `next` when it is the balancer itself (lbserve's chain: admin and throttle, then the
    /// balancer): called statically, its forwarding is inlined here, an async frame (a task
    /// allocation and a protocol witness) less per request than through `inlineNext`.
    let balancerNext: LoadBalancer?

    init(_ middlewares: [any SynchronousMiddleware], next: any HTTPHandler) {
        precondition(middlewares.count <= Self.capacity)
        self.middlewares = middlewares.map { SynchronousMiddlewareBox.opening($0) }
        self.next = next
        self.inlineNext = next.inlineObject
        self.balancerNext = next as? LoadBalancer
    }

    func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await handleInline(request, context: context)
    }

    @inline(__always)  // into the chain's entry: one async frame less per request
    nonisolated(nonsending) func handleInline(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        var marks = InlineArray<8, UInt64>(repeating: 0)
        var passed = 0
        var answer: LBResponse? = nil
        var answersLater = false
        while passed < middlewares.count {
            switch middlewares[passed].before(request, context: context) {
            case .answer(let response):
                answer = response
            case .answerAsynchronously:
                answersLater = true
            case .pass(let mark):
                marks[passed] = mark
                passed += 1
                continue
            }
            break
        }
        let response: LBResponse
        if let answer = consume answer {  // consumed, not copied out of the optional
            response = answer
        } else if answersLater {
            response = await middlewares[passed].answer(request, context: context)
        } else if let balancerNext {
            response = await balancerNext.handleInline(request, context: context)
        } else if let inlineNext {
            response = await inlineNext.handleInline(request, context: context)
        } else {
            response = await next.handle(request, context: context)
        }
        while passed > 0 {
            passed -= 1
            middlewares[passed].after(response, request: request, context: context, mark: marks[passed])
        }
        return response
    }

    /// The row's own work is synchronous (or `nonisolated(nonsending)`): it depends on what follows.
    var staysOnCallerExecutor: Bool { inlineNext?.staysOnCallerExecutor ?? false }
}

/// A ``SynchronousMiddleware`` behind a class reference, its type known to the subclass: the row
/// calls it without copying an existential.
class SynchronousMiddlewareBox: @unchecked Sendable {
    // `@unchecked Sendable`, proof: the base class has no state; its only subclass,
    // `OpenedSynchronousMiddleware`, holds one `let` of a `Sendable` type.

    /// A box for `middleware`, its dynamic type opened.
    static func opening(_ middleware: any SynchronousMiddleware) -> SynchronousMiddlewareBox {
        boxing(middleware)  // the existential opened as the generic parameter
    }

    private static func boxing<M: SynchronousMiddleware>(_ middleware: M) -> SynchronousMiddlewareBox {
        OpenedSynchronousMiddleware(middleware)
    }

    func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
        preconditionFailure("overridden")
    }

    func after(_ response: LBResponse, request: LBRequest, context: LBRequestContext, mark: UInt64) {
        preconditionFailure("overridden")
    }

    nonisolated(nonsending) func answer(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        preconditionFailure("overridden")
    }
}

private final class OpenedSynchronousMiddleware<M: SynchronousMiddleware>: SynchronousMiddlewareBox, @unchecked Sendable {
    let middleware: M

    init(_ middleware: M) { self.middleware = middleware }

    override func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
        middleware.before(request, context: context)
    }

    override func after(_ response: LBResponse, request: LBRequest, context: LBRequestContext, mark: UInt64) {
        middleware.after(response, request: request, context: context, mark: mark)
    }

    nonisolated(nonsending) override func answer(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await middleware.answer(request, context: context)
    }
}

/// One middleware bound to what follows it (built once, so a request allocates no closures).
/// What follows is called inline when it is one of ours; an embedder's middleware through its
/// public (concurrent) requirement, exactly as before.
final class MiddlewareStep: HTTPHandler, InlineHTTPHandler {
    let middleware: any LBMiddleware
    let next: any HTTPHandler
    let inlineNext: (any InlineHTTPHandler & AnyObject)?

    init(middleware: any LBMiddleware, next: any HTTPHandler) {
        self.middleware = middleware
        self.next = next
        self.inlineNext = next.inlineObject
    }

    func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await handleInline(request, context: context)
    }

    nonisolated(nonsending) func handleInline(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await middleware.handle(request, context: context) { request, context in
            if let inlineNext { return await inlineNext.handleInline(request, context: context) }
            return await next.handle(request, context: context)
        }
    }

    /// An embedder's middleware: its `handle` is a concurrent function.
    var staysOnCallerExecutor: Bool { false }
}
