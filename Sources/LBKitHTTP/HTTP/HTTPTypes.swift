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

/// An ordered list of header fields with case-insensitive name look-up.
///
/// Field order and name spelling are preserved, so a proxy forwards headers as it received them.
///
/// ```swift
/// var headers = HeaderFields()
/// headers.add(name: "Content-Type", value: "application/json")
/// headers.first(name: "content-type")  // "application/json"
/// ```
public struct HeaderFields: Sendable, Sequence, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    /// The fields in wire order.
    public private(set) var fields: [(name: String, value: String)]

    /// An empty header list.
    public init() { fields = [] }

    /// An empty header list with room for `capacity` fields (the parsers: one allocation per
    /// head instead of one per doubling).
    package init(reservingCapacity capacity: Int) {
        fields = []
        fields.reserveCapacity(capacity)
    }

    /// A header list holding `fields` in order.
    public init(_ fields: [(String, String)]) { self.fields = fields.map { (name: $0.0, value: $0.1) } }

    /// A header list from a literal, e.g. `["Content-Type": "text/plain"]`.
    public init(dictionaryLiteral elements: (String, String)...) { self.init(elements) }

    /// The number of fields.
    public var count: Int { fields.count }

    /// Appends a field.
    public mutating func add(name: String, value: String) { fields.append((name: name, value: value)) }

    /// Removes every field named `name` and appends one with `value`.
    public mutating func replaceOrAdd(name: String, value: String) {
        remove(name: name)
        add(name: name, value: value)
    }

    /// Removes every field named `name` (case-insensitive).
    public mutating func remove(name: String) {
        removeAll { n, _ in Self.namesEqual(n, name) }
    }

    /// Removes the fields for which `shouldRemove` returns true (called once per field, in
    /// order).
    ///
    /// Hot path: the list is only written to when a field goes, so removing a field that is not
    /// there costs no copy of a list shared with another value (copy-on-write).
    public mutating func removeAll(where shouldRemove: (_ name: String, _ value: String) -> Bool) {
        var i = 0
        let n = fields.count
        while i < n && !shouldRemove(fields[i].name, fields[i].value) { i += 1 }
        if i == n { return }
        var kept = i
        i += 1
        while i < n {
            if !shouldRemove(fields[i].name, fields[i].value) {
                fields.swapAt(kept, i)
                kept += 1
            }
            i += 1
        }
        fields.removeSubrange(kept..<n)
    }

    /// The value of the first field named `name`, or nil.
    public func first(name: String) -> String? {
        for field in fields where Self.namesEqual(field.name, name) { return field.value }
        return nil
    }

    /// The values of every field named `name`, in order.
    public subscript(name: String) -> [String] {
        fields.compactMap { Self.namesEqual($0.name, name) ? $0.value : nil }
    }

    /// Whether a field named `name` is present.
    public func contains(name: String) -> Bool {
        for field in fields where Self.namesEqual(field.name, name) { return true }
        return false
    }

    /// Iterates the fields in wire order.
    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }

    public var description: String { fields.map { "\($0.name): \($0.value)" }.joined(separator: "\n") }

    /// ASCII case-insensitive comparison of two field names.
    ///
    /// Hot path (header rewriting runs it several times per header): compares lengths first (O(1)
    /// for native strings), then bytes, folding only ASCII letters.
    /// Compares the contiguous UTF-8 of both strings directly (native and small strings have
    /// it; the generic `elementsEqual` walk over two `UTF8View`s cost about 300 instructions a
    /// call, the header path's largest single cost).
    @inlinable
    public static func namesEqual(_ a: String, _ b: String) -> Bool {
        let au = a.utf8, bu = b.utf8
        guard au.count == bu.count else { return false }
        let fast: Bool?? = au.withContiguousStorageIfAvailable { pa in
            bu.withContiguousStorageIfAvailable { pb in
                // Names are mostly compared with their canonical spelling: skip equal 8-byte
                // words first, then fold case byte by byte.
                let n = pa.count
                var k = 0
                if let ra = UnsafeRawPointer(pa.baseAddress), let rb = UnsafeRawPointer(pb.baseAddress) {
                    while n - k >= 8 && ra.loadUnaligned(fromByteOffset: k, as: UInt64.self)
                        == rb.loadUnaligned(fromByteOffset: k, as: UInt64.self) { k += 8 }
                }
                while k < n {
                    if !asciiCaseInsensitiveEqual(pa[k], pb[k]) { return false }
                    k += 1
                }
                return true
            }
        }
        if let fast, let fast { return fast }
        return au.elementsEqual(bu) { x, y in asciiCaseInsensitiveEqual(x, y) }
    }

    /// Whether two bytes are equal, folding ASCII letters only.
    @inlinable @inline(__always)
    static func asciiCaseInsensitiveEqual(_ x: UInt8, _ y: UInt8) -> Bool {
        x == y || (x | 0x20 == y | 0x20 && (x | 0x20) >= 0x61 && (x | 0x20) <= 0x7A)
    }
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
