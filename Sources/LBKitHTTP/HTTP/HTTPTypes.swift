/// An HTTP/1.x protocol version.
public struct HTTPWireVersion: Hashable, Sendable, CustomStringConvertible {
    /// The major version (1).
    public var major: Int
    /// The minor version (0 or 1).
    public var minor: Int

    /// Creates a version.
    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// HTTP/1.0.
    public static let http1_0 = HTTPWireVersion(major: 1, minor: 0)
    /// HTTP/1.1.
    public static let http1_1 = HTTPWireVersion(major: 1, minor: 1)

    /// `HTTP/1.1`.
    public var description: String { "HTTP/\(major).\(minor)" }
}

/// A request method as a typed value (the shape of swift-http-types' `HTTPRequest.Method`).
/// ``RequestHead/method`` stays the token as received; ``RequestHead/requestMethod`` gives
/// this view.
///
/// ```swift
/// let method: RequestMethod = .post
/// method.isIdempotent                   // false (RFC 9110 9.2.2)
/// RequestMethod(rawValue: "PUT").isIdempotent   // true
/// ```
public struct RequestMethod: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The method token, e.g. `GET`.
    public var rawValue: String

    /// A method from its token.
    public init(rawValue: String) { self.rawValue = rawValue }

    /// `GET`.
    public static let get = RequestMethod(rawValue: "GET")
    /// `HEAD`.
    public static let head = RequestMethod(rawValue: "HEAD")
    /// `POST`.
    public static let post = RequestMethod(rawValue: "POST")
    /// `PUT`.
    public static let put = RequestMethod(rawValue: "PUT")
    /// `DELETE`.
    public static let delete = RequestMethod(rawValue: "DELETE")
    /// `OPTIONS`.
    public static let options = RequestMethod(rawValue: "OPTIONS")
    /// `PATCH`.
    public static let patch = RequestMethod(rawValue: "PATCH")
    /// `TRACE`.
    public static let trace = RequestMethod(rawValue: "TRACE")
    /// `CONNECT`.
    public static let connect = RequestMethod(rawValue: "CONNECT")

    /// Whether RFC 9110 9.2.2 defines the method as idempotent (safe to send again).
    public var isIdempotent: Bool {
        switch rawValue {
        case "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE": true
        default: false
        }
    }

    public var description: String { rawValue }
}

/// The request line and header fields of an HTTP/1.x request.
public struct RequestHead: Sendable {
    /// The method token as received, e.g. `GET`.
    public var method: String
    /// The request target as received, e.g. `/users?id=7` (origin-form) or an absolute URI.
    public var target: String
    /// The protocol version.
    public var version: HTTPWireVersion
    /// The header fields.
    public var headers: HeaderFields

    /// Creates a request head.
    public init(method: String, target: String, version: HTTPWireVersion = .http1_1, headers: HeaderFields = HeaderFields()) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
    }

    /// The method as a typed value.
    public var requestMethod: RequestMethod {
        get { RequestMethod(rawValue: method) }
        set { method = newValue.rawValue }
    }

    /// The path part of the target (before `?`).
    public var path: Substring {
        if let q = target.firstIndex(of: "?") { return target[..<q] }
        return target[...]
    }

    /// The query part of the target (after `?`), or nil.
    public var query: Substring? {
        guard let q = target.firstIndex(of: "?") else { return nil }
        return target[target.index(after: q)...]
    }
}

/// The status line and header fields of an HTTP/1.x response.
public struct ResponseHead: Sendable {
    /// The status code, e.g. 200.
    public var status: Int
    /// The reason phrase, e.g. `OK` (may be empty).
    public var reason: String
    /// The protocol version.
    public var version: HTTPWireVersion
    /// The header fields.
    public var headers: HeaderFields

    /// Creates a response head; `reason` defaults to the standard phrase for `status`.
    public init(status: Int, reason: String? = nil, version: HTTPWireVersion = .http1_1, headers: HeaderFields = HeaderFields()) {
        self.status = status
        self.reason = reason ?? ResponseStatus.reasonPhrase(status)
        self.version = version
        self.headers = headers
    }

    /// The status as a typed value (code and reason phrase).
    public var responseStatus: ResponseStatus {
        get { ResponseStatus(code: status, reasonPhrase: reason) }
        set {
            status = newValue.code
            reason = newValue.reasonPhrase
        }
    }
}

/// How the body of a message is delimited on the wire (RFC 9112 section 6).
public enum HTTPBodyFraming: Sendable, Equatable {
    /// No body follows the head.
    case none
    /// Exactly this many bytes follow.
    case contentLength(Int)
    /// A chunked body follows.
    case chunked
    /// The body runs until the peer closes the connection (responses only).
    case untilClose
}

/// A response status as a typed value (the shape of swift-http-types' `HTTPResponse.Status`):
/// a code, its reason phrase, and its class. ``ResponseHead/status`` stays the plain code for
/// cheap comparisons; ``ResponseHead/responseStatus`` gives this view.
///
/// ```swift
/// let status: ResponseStatus = .tooManyRequests
/// status.code          // 429
/// status.kind          // .clientError
/// ResponseStatus(code: 502).reasonPhrase   // "Bad Gateway"
/// ```
public struct ResponseStatus: Hashable, Sendable, CustomStringConvertible {
    /// The three-digit code.
    public var code: Int
    /// The reason phrase (the RFC 9110 one unless given).
    public var reasonPhrase: String

    /// A status with `code` and its standard reason phrase unless `reasonPhrase` is given.
    public init(code: Int, reasonPhrase: String? = nil) {
        self.code = code
        self.reasonPhrase = reasonPhrase ?? Self.reasonPhrase(code)
    }

    /// The class of a status (RFC 9110 15).
    public enum Kind: Sendable, Hashable {
        case informational, successful, redirection, clientError, serverError, invalid
    }

    /// This status' class.
    public var kind: Kind {
        switch code {
        case 100..<200: .informational
        case 200..<300: .successful
        case 300..<400: .redirection
        case 400..<500: .clientError
        case 500..<600: .serverError
        default: .invalid
        }
    }

    public var description: String { "\(code) \(reasonPhrase)" }

    /// `200`.
    public static let ok = ResponseStatus(code: 200)
    /// `204`.
    public static let noContent = ResponseStatus(code: 204)
    /// `101`.
    public static let switchingProtocols = ResponseStatus(code: 101)
    /// `400`.
    public static let badRequest = ResponseStatus(code: 400)
    /// `403`.
    public static let forbidden = ResponseStatus(code: 403)
    /// `404`.
    public static let notFound = ResponseStatus(code: 404)
    /// `413`.
    public static let contentTooLarge = ResponseStatus(code: 413)
    /// `429`.
    public static let tooManyRequests = ResponseStatus(code: 429)
    /// `502`.
    public static let badGateway = ResponseStatus(code: 502)
    /// `503`.
    public static let serviceUnavailable = ResponseStatus(code: 503)
    /// `504`.
    public static let gatewayTimeout = ResponseStatus(code: 504)

    /// The RFC 9110 reason phrase for `status` ("Unknown" for codes it does not name).
    public static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 100: "Continue"
        case 101: "Switching Protocols"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 206: "Partial Content"
        case 301: "Moved Permanently"
        case 302: "Found"
        case 304: "Not Modified"
        case 307: "Temporary Redirect"
        case 308: "Permanent Redirect"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 415: "Unsupported Media Type"
        case 417: "Expectation Failed"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        default: "Unknown"
        }
    }
}
