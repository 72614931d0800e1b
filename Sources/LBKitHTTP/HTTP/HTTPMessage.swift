import LBKitPolicy
internal import CLBKitShim

/// An HTTP request as the server hands it to a handler: the head, and the body either whole in
/// ``body`` (de-chunked, up to the server's buffering limit) or, beyond that limit, as
/// ``bodyStream`` to read part by part.
///
/// ```swift
/// let request = LBRequest(head: RequestHead(method: "GET", target: "/health",
///                                           headers: ["Host": "localhost"]))
/// ```
public struct LBRequest: Sendable {
    /// Request line and header fields.
    public var head: RequestHead
    /// The body bytes when the body was buffered (empty when the request has none or when it
    /// is streamed).
    public var body: [UInt8]
    /// The body, when it is streamed instead of buffered (``body`` is then empty).
    public var bodyStream: LBBodyStream?

    /// Creates a request with a buffered body.
    public init(head: RequestHead, body: [UInt8] = []) {
        self.head = head
        self.body = body
        self.bodyStream = nil
    }

    /// Creates a request whose body is streamed.
    public init(head: RequestHead, bodyStream: LBBodyStream) {
        self.head = head
        self.body = []
        self.bodyStream = bodyStream
    }

    /// The whole body, buffered or streamed, up to `limit` bytes.
    nonisolated(nonsending) public func collectBody(upTo limit: Int) async throws(BodyStreamError) -> [UInt8] {
        if let bodyStream { return try await bodyStream.collect(upTo: limit) }
        guard body.count <= limit else { throw BodyStreamError("body exceeds \(limit) bytes") }
        return body
    }

    /// The method, e.g. `POST`.
    public var method: String { head.method }
    /// The request target, e.g. `/items?id=1`.
    public var target: String { head.target }
    /// The header fields.
    public var headers: HeaderFields { head.headers }
}

/// An HTTP response returned by a handler: the head and a body, whole in ``body`` or streamed
/// in ``bodyStream``. The server frames it: `Content-Length` for a whole body or a stream of
/// known length, chunked otherwise (read-until-close for HTTP/1.0 clients).
///
/// ```swift
/// let ok = LBResponse(status: 200, headers: ["Content-Type": "text/plain"], body: Array("hi".utf8))
/// let missing = LBResponse.jsonError(status: 404, message: "no such route")
/// ```
public struct LBResponse: Sendable {
    /// Status line and header fields.
    public var head: ResponseHead
    /// The body bytes when the body is whole (empty when it is streamed).
    public var body: [UInt8]
    /// The body, when it is streamed (then ``body`` is empty).
    public var bodyStream: LBBodyStream?
    /// Which backend produced this response and after how many attempts (set by the balancer,
    /// read by its accounting; never sent on the wire).
    package var upstream: (backend: String?, attempts: Int) = (nil, 0)
    /// Transfer codings other than chunked that the body carries (e.g. `gzip`), in order: the
    /// server names them in `Transfer-Encoding` and adds chunked framing (RFC 9112 6.1).
    package var transferCodings: [String] = []
    /// After a `101 Switching Protocols`, the upstream connection to splice the client onto.
    package var tunnel: (any ConnectionTunnel)?

    /// Creates a response.
    public init(head: ResponseHead, body: [UInt8] = []) {
        self.head = head
        self.body = body
        self.bodyStream = nil
    }

    /// Creates a response whose body is streamed.
    public init(head: ResponseHead, bodyStream: LBBodyStream) {
        self.head = head
        self.body = []
        self.bodyStream = bodyStream
    }

    /// The whole body, buffered or streamed, up to `limit` bytes.
    nonisolated(nonsending) public func collectBody(upTo limit: Int) async throws(BodyStreamError) -> [UInt8] {
        if let bodyStream { return try await bodyStream.collect(upTo: limit) }
        guard body.count <= limit else { throw BodyStreamError("body exceeds \(limit) bytes") }
        return body
    }

    /// Creates a response with `status`, `headers` and `body`.
    public init(status: Int, headers: HeaderFields = HeaderFields(), body: [UInt8] = []) {
        self.head = ResponseHead(status: status, headers: headers)
        self.body = body
    }

    /// The status code.
    public var status: Int { head.status }

    /// A JSON response whose body is the already-encoded `json` text.
    public static func json(status: Int, _ json: String, headers: HeaderFields = HeaderFields()) -> LBResponse {
        var h = headers
        h.add(name: "Content-Type", value: "application/json")
        return LBResponse(status: status, headers: h, body: Array(json.utf8))
    }

    /// A JSON error response: `{"error":"<message>","status":<status>}`.
    public static func jsonError(status: Int, message: String, headers: HeaderFields = HeaderFields()) -> LBResponse {
        json(status: status, "{\"error\":\(JSON.quote(message)),\"status\":\(status)}", headers: headers)
    }
}

/// What a handler knows about where a request came from.
///
/// ``HTTP1Server`` fills it from the accepted connection. An embedder calling a balancer from
/// another server fills in what it knows; only the client address matters for throttling and
/// `X-Forwarded-For`, and it can be given in any common form:
///
/// ```swift
/// let fromText = LBRequestContext(client: ClientAddress("203.0.113.9"))
/// let fromBytes = LBRequestContext(client: ClientAddress(bytes: [203, 0, 113, 9]))
/// let unknown = LBRequestContext(client: nil)   // throttling skips it (logged once)
/// ```
public struct LBRequestContext: Sendable {
    /// The TCP peer with its port, when the request arrived on one of our own listeners.
    public var peer: IPSocketAddress?
    /// The client's IP address as seen on the connection (the TCP peer, or the proxy in front
    /// of us); `X-Forwarded-For` from trusted proxies is applied on top of it by the balancer.
    public var clientAddress: ClientAddress?
    /// The local port the request arrived on (0 when unknown).
    public var localPort: Int
    /// The event loop running this connection, when it is one of ours: upstream connections are
    /// pinned to it so the exchange never crosses threads. nil = the balancer picks one.
    public var eventLoop: LBEventLoop?
    /// A mark of the task that serves this context's connection, set only when nothing can
    /// cancel that task: an ``HTTP1Server`` connection task is started unstructured and its
    /// handle is dropped. See ``runsInUncancellableTask``.
    package var uncancellableTask: Int?

    /// This context, marked as served by the calling task, which nothing can cancel (the
    /// caller vouches for that).
    package func markedAsServedByUncancellableTask() -> LBRequestContext {
        var marked = self
        marked.uncancellableTask = Self.currentTaskMark()
        return marked
    }

    /// Whether the calling task is the uncancellable task that serves this context: then an
    /// upstream exchange needs no cancellation handler (its stdlib wrapper costs four task
    /// switches and two status-record updates per request). A middleware that calls the rest
    /// of the chain from a task of its own (a child task, which can be cancelled) is another
    /// task, so its exchanges keep the handler. The mark is the task's address; a false match
    /// needs this context kept past its connection and used from a new task that reuses the old
    /// task's memory: then a cancelled exchange is not aborted at once, and still ends by its
    /// deadline.
    package var runsInUncancellableTask: Bool {
        guard let uncancellableTask else { return false }
        return Self.currentTaskMark() == uncancellableTask
    }

    /// The current task's address as an integer: `UnsafeCurrentTask` is one task reference, so
    /// its bits are the address (hashing it instead ran SipHash, ~500 instructions per request).
    /// Should its layout ever differ, the hash is used.
    @inline(__always)
    static func currentTaskMark() -> Int? {
        // The runtime's own answer, read directly: withUnsafeCurrentTask's generic closure cost
        // ~300 instructions per request. Same value (the task reference's bits).
        let address = lbk_current_task_address()
        if address != 0 && MemoryLayout<UnsafeCurrentTask>.size == MemoryLayout<Int>.size {
            return Int(bitPattern: UInt(address))
        }
        return withUnsafeCurrentTask { task -> Int? in
            guard let task else { return nil }
            if MemoryLayout<UnsafeCurrentTask>.size == MemoryLayout<Int>.size {
                return unsafeBitCast(task, to: Int.self)
            }
            return task.hashValue
        }
    }

    /// A context for a request accepted by one of our listeners.
    public init(peer: IPSocketAddress?, localPort: Int = 0, eventLoop: LBEventLoop? = nil) {
        self.peer = peer
        self.clientAddress = peer?.clientAddress
        self.localPort = localPort
        self.eventLoop = eventLoop
    }

    /// A context for a request that reached the caller from `client` (nil when unknown).
    public init(client: ClientAddress?, localPort: Int = 0) {
        self.peer = nil
        self.clientAddress = client
        self.localPort = localPort
        self.eventLoop = nil
    }
}

/// Handles one request and returns the response. Called by ``HTTP1Server`` on the connection's
/// event loop; plain async/await code.
///
/// ```swift
/// struct Hello: HTTPHandler {
///     func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
///         LBResponse(status: 200, body: Array("hello\n".utf8))
///     }
/// }
/// ```
public protocol HTTPHandler: Sendable {
    /// Produces the response for `request`.
    func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse
}

/// A handler of this package that runs on its caller's executor: ``HTTP1Server`` and the
/// middleware chain call ``handleInline(_:context:)`` directly, without the task switch a call
/// to the (concurrent) public ``HTTPHandler/handle(_:context:)`` costs on every request. The
/// public requirement keeps its signature and semantics for embedders' handlers.
package protocol InlineHTTPHandler: HTTPHandler {
    /// Same as ``HTTPHandler/handle(_:context:)``, on the caller's executor.
    nonisolated(nonsending) func handleInline(_ request: LBRequest, context: LBRequestContext) async -> LBResponse

    /// Whether ``handleInline(_:context:)`` never calls a concurrent (plain `nonisolated async`)
    /// function, so that it never leaves the thread it is called on by itself: then
    /// ``HTTP1Server`` may run its connections without a task-executor preference (see
    /// ``LBEventLoop/keepGlobalJobsOnLoopThreads()``). False when any step is an embedder's
    /// handler or middleware.
    var staysOnCallerExecutor: Bool { get }

    /// The object to keep and call for this handler on every request: `self` when it is a class
    /// instance, what a wrapper struct calls otherwise (``LBMiddlewareChain`` gives its first
    /// step). Callers store it as a class-bound existential, which is copied with one retain;
    /// an opaque one holding a struct is copied through the generic value witnesses (over 100
    /// instructions each time a request reads it).
    var inlineObject: (any InlineHTTPHandler & AnyObject)? { get }
}

extension InlineHTTPHandler where Self: AnyObject {
    /// `self`.
    package var inlineObject: (any InlineHTTPHandler & AnyObject)? { self }
}

extension HTTPHandler {
    /// The object to call inline for this handler, if it is one of ours (see
    /// ``InlineHTTPHandler/inlineObject``).
    package var inlineObject: (any InlineHTTPHandler & AnyObject)? {
        (self as? any InlineHTTPHandler)?.inlineObject
    }
}

/// An ``HTTPHandler`` made from a closure.
///
/// ```swift
/// let handler = ClosureHandler { request, _ in .json(status: 200, "{\"ok\":true}") }
/// ```
public struct ClosureHandler: HTTPHandler {
    let body: @Sendable (LBRequest, LBRequestContext) async -> LBResponse
    /// Wraps `body`.
    public init(_ body: @escaping @Sendable (LBRequest, LBRequestContext) async -> LBResponse) { self.body = body }
    /// Calls the closure.
    public func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse { await body(request, context) }
}
