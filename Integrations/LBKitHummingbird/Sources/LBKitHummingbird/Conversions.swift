import HTTPTypes
import Hummingbird
import LBKit
import NIOCore

extension LBRequest {
    /// The LBKit request for a Hummingbird request whose body was already collected.
    ///
    /// `Host` is put back from `request.head.authority` (swift-http-types keeps it as the
    /// `:authority` pseudo-field, not as a header), so backends see the host the client asked
    /// for. Field names keep their spelling and order.
    ///
    /// - Parameters:
    ///   - request: the Hummingbird request.
    ///   - target: the request target to forward (default: the client's, e.g. `/api/items?id=1`).
    ///   - body: the collected body bytes.
    ///
    /// ```swift
    /// let head = HTTPRequest(method: .get, scheme: "http", authority: "example.com", path: "/items?id=1")
    /// let request = Request(head: head, body: RequestBody(buffer: ByteBuffer()))
    /// let lbRequest = LBRequest(request, body: [])
    /// // lbRequest.headers.first(name: "Host") == "example.com"
    /// ```
    public init(_ request: Request, target: String? = nil, body: [UInt8]) {
        var headers = HeaderFields()
        if let authority = request.head.authority {
            headers.add(name: "Host", value: authority)
        }
        for field in request.head.headerFields {
            headers.add(name: field.name.rawName, value: field.value)
        }
        let head = RequestHead(method: request.head.method.rawValue,
                               target: target ?? request.head.path ?? "/",
                               headers: headers)
        self.init(head: head, body: body)
    }
}

extension LBResponse {
    /// The Hummingbird response for this LBKit response: status and reason, header fields (names
    /// that are not valid field names are dropped), body.
    ///
    /// - Parameter exposeBackendHeader: keep LBKit's `X-Backend` field (which backend answered).
    ///   Off by default: it tells clients about your internal network.
    ///
    /// ```swift
    /// let response = LBResponse.json(status: 200, #"{"ok":true}"#).hummingbirdResponse()
    /// // response.status == .ok, response.headers[.contentType] == "application/json"
    /// ```
    public func hummingbirdResponse(exposeBackendHeader: Bool = false) -> Response {
        hummingbirdResponse(removingField: exposeBackendHeader ? nil : "X-Backend")
    }

    /// The Hummingbird response, without the field named `removedName` (LBKit's backend header,
    /// unless exposed).
    ///
    /// Per-request hot path: one allocation for the fields, with the `Content-Length` of a whole
    /// body added here (Hummingbird's look-up-and-replace of a missing `Content-Length` cost
    /// about 1,900 instructions); common field names and status lines are swift-http-types'
    /// constants instead of being validated and lowercased again; the removed name is compared
    /// only with names of its length.
    func hummingbirdResponse(removingField removedName: String?) -> Response {
        let removedLength = removedName?.utf8.count ?? -1
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count + 1)
        var hasLength = false
        for (name, value) in head.headers {
            if name.utf8.count == removedLength, let removedName, HeaderFields.namesEqual(name, removedName) { continue }
            guard let fieldName = KnownFieldName.lookUp(name) ?? HTTPField.Name(name) else { continue }
            if fieldName == .contentLength { hasLength = true }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        if bodyStream == nil && !hasLength {
            fields.append(HTTPField(name: .contentLength, value: String(body.count)))
        }
        let status = KnownStatus.lookUp(code: head.status, reason: head.reason)
            ?? ((100...999).contains(head.status)
                ? HTTPResponse.Status(code: head.status, reasonPhrase: head.reason)
                : .badGateway)
        guard let stream = bodyStream else {
            return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        // A streamed body (large, chunked, server-sent events) is relayed part by part with
        // backpressure: the next part is read when Hummingbird has written the previous one.
        let streamed = ResponseBody(contentLength: stream.length) { writer in
            do {
                while let chunk = try await stream.next() {
                    try await writer.write(ByteBuffer(bytes: chunk))
                }
            } catch {
                stream.abandon()
                throw error
            }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: fields, body: streamed)
    }
}

/// Field names backends commonly send, spelled as swift-http-types spells them: a name spelled
/// exactly so becomes the library's constant (no validation, no lowercased copy); any other
/// spelling goes through `HTTPField.Name(_:)`.
enum KnownFieldName {
    /// The constant for `name` when it is spelled exactly like one, else nil.
    static func lookUp(_ name: String) -> HTTPField.Name? {
        // Small strings (up to 15 UTF-8 bytes) compare as two machine words.
        switch name.utf8.count {
        case 4:
            if name == "Date" { return .date }
            if name == "ETag" { return .eTag }
            if name == "Vary" { return .vary }
        case 6:
            if name == "Server" { return .server }
        case 8:
            if name == "Location" { return .location }
        case 10:
            if name == "Set-Cookie" { return .setCookie }
        case 12:
            if name == "Content-Type" { return .contentType }
        case 13:
            if name == "Cache-Control" { return .cacheControl }
            if name == "Last-Modified" { return .lastModified }
            if name == "Accept-Ranges" { return .acceptRanges }
        case 14:
            if name == "Content-Length" { return .contentLength }
        case 16:
            if name == "Content-Encoding" { return .contentEncoding }
        default:
            break
        }
        return nil
    }
}

/// Status lines backends commonly send with their standard reason phrase: those become
/// swift-http-types' constants (no reason-phrase validation).
enum KnownStatus {
    /// The constant for `code` when `reason` is its standard phrase, else nil.
    static func lookUp(code: Int, reason: String) -> HTTPResponse.Status? {
        let status: HTTPResponse.Status
        switch code {
        case 200: status = .ok
        case 201: status = .created
        case 204: status = .noContent
        case 206: status = .partialContent
        case 301: status = .movedPermanently
        case 302: status = .found
        case 304: status = .notModified
        case 400: status = .badRequest
        case 401: status = .unauthorized
        case 403: status = .forbidden
        case 404: status = .notFound
        case 429: status = .tooManyRequests
        case 500: status = .internalServerError
        case 502: status = .badGateway
        case 503: status = .serviceUnavailable
        case 504: status = .gatewayTimeout
        default: return nil
        }
        return status.reasonPhrase == reason ? status : nil
    }
}
