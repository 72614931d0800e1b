/// A complete HTTP request as the server hands it to a handler: head plus the whole body
/// (de-chunked; at most the server's `maxBodyBytes`).
///
/// ```swift
/// let request = HTTPRequest(head: HTTPRequestHead(method: "GET", target: "/health",
///                                                 headers: ["Host": "localhost"]))
/// ```
public struct HTTPRequest: Sendable {
    /// Request line and header fields.
    public var head: HTTPRequestHead
    /// The body bytes (empty when the request has none).
    public var body: [UInt8]

    /// Creates a request.
    public init(head: HTTPRequestHead, body: [UInt8] = []) {
        self.head = head
        self.body = body
    }

    /// The method, e.g. `POST`.
    public var method: String { head.method }
    /// The request target, e.g. `/items?id=1`.
    public var target: String { head.target }
    /// The header fields.
    public var headers: HTTPHeaders { head.headers }
}

/// A complete HTTP response returned by a handler. The server sets `Content-Length` from `body`.
///
/// ```swift
/// let ok = HTTPResponse(status: 200, headers: ["Content-Type": "text/plain"], body: Array("hi".utf8))
/// let missing = HTTPResponse.jsonError(status: 404, message: "no such route")
/// ```
public struct HTTPResponse: Sendable {
    /// Status line and header fields.
    public var head: HTTPResponseHead
    /// The body bytes.
    public var body: [UInt8]

    /// Creates a response.
    public init(head: HTTPResponseHead, body: [UInt8] = []) {
        self.head = head
        self.body = body
    }

    /// Creates a response with `status`, `headers` and `body`.
    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.head = HTTPResponseHead(status: status, headers: headers)
        self.body = body
    }

    /// The status code.
    public var status: Int { head.status }

    /// A JSON response whose body is the already-encoded `json` text.
    public static func json(status: Int, _ json: String, headers: HTTPHeaders = HTTPHeaders()) -> HTTPResponse {
        var h = headers
        h.add(name: "Content-Type", value: "application/json")
        return HTTPResponse(status: status, headers: h, body: Array(json.utf8))
    }

    /// A JSON error response: `{"error":"<message>","status":<status>}`.
    public static func jsonError(status: Int, message: String, headers: HTTPHeaders = HTTPHeaders()) -> HTTPResponse {
        json(status: status, "{\"error\":\(JSON.quote(message)),\"status\":\(status)}", headers: headers)
    }
}

/// What a handler knows about the connection a request arrived on.
public struct RequestContext: Sendable {
    /// The TCP peer (the client, or the proxy in front of us).
    public var peer: SocketAddress?
    /// The local port the request arrived on.
    public var localPort: Int
    /// The event loop running this connection: pin outgoing connections to it.
    public var eventLoop: EventLoop

    /// Creates a context.
    public init(peer: SocketAddress?, localPort: Int, eventLoop: EventLoop) {
        self.peer = peer
        self.localPort = localPort
        self.eventLoop = eventLoop
    }
}

/// Handles one request and returns the response. Called by ``HTTPServer`` on the connection's
/// event loop; plain async/await code.
///
/// ```swift
/// struct Hello: HTTPHandler {
///     func handle(_ request: HTTPRequest, context: RequestContext) async -> HTTPResponse {
///         HTTPResponse(status: 200, body: Array("hello\n".utf8))
///     }
/// }
/// ```
public protocol HTTPHandler: Sendable {
    /// Produces the response for `request`.
    func handle(_ request: HTTPRequest, context: RequestContext) async -> HTTPResponse
}

/// An ``HTTPHandler`` made from a closure.
///
/// ```swift
/// let handler = ClosureHandler { request, _ in .json(status: 200, "{\"ok\":true}") }
/// ```
public struct ClosureHandler: HTTPHandler {
    let body: @Sendable (HTTPRequest, RequestContext) async -> HTTPResponse
    /// Wraps `body`.
    public init(_ body: @escaping @Sendable (HTTPRequest, RequestContext) async -> HTTPResponse) { self.body = body }
    /// Calls the closure.
    public func handle(_ request: HTTPRequest, context: RequestContext) async -> HTTPResponse { await body(request, context) }
}
