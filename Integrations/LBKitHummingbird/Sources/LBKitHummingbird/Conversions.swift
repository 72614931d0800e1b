#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
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
        // One allocation for the field bytes (LBKit keeps the wire lines in one buffer).
        var bytes = request.head.authority.map { 4 + $0.utf8.count } ?? 0
        for field in request.head.headerFields { bytes += field.name.rawName.utf8.count + field.value.utf8.count }
        var headers = HeaderFields()
        headers.reserveCapacity(fields: request.head.headerFields.count + 1, bytes: bytes)
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
    /// about 1,900 instructions); names read from LBKit's bytes, common ones (and common status
    /// lines) as swift-http-types' constants instead of a string validated and lowercased again;
    /// a string made only for each value.
    func hummingbirdResponse(removingField removedName: String?) -> Response {
        var removedName = removedName ?? ""
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count + 1)
        var hasLength = false
        removedName.withUTF8 { removed in
            let removed = UnsafeRawBufferPointer(removed)
            head.headers.forEachField { name, value in
                // Names are read from LBKit's bytes: a string only for a name that is not a
                // swift-http-types constant.
                if name.count == removed.count && removed.count > 0 && Self.bytesEqualFoldingCase(name, removed) { return }
                guard let fieldName = KnownFieldName.lookUp(name)
                    ?? HTTPField.Name(String(decoding: name, as: UTF8.self)) else { return }
                if fieldName == .contentLength { hasLength = true }
                fields.append(HTTPField(name: fieldName, value: String(decoding: value, as: UTF8.self)))
            }
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

extension LBResponse {
    /// Whether two field names are equal, folding ASCII letters only (RFC 9110 5.1).
    static func bytesEqualFoldingCase(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i] != b[i] {
            let x = a[i] | 0x20
            guard x == b[i] | 0x20, x >= 0x61, x <= 0x7A else { return false }
        }
        return true
    }
}

/// Field names backends commonly send, spelled as swift-http-types spells them: a name spelled
/// exactly so becomes the library's constant (no validation, no lowercased copy); any other
/// spelling goes through `HTTPField.Name(_:)`.
enum KnownFieldName {
    /// The constant for `name` when it is spelled exactly like one, else nil.
    static func lookUp(_ name: String) -> HTTPField.Name? {
        var name = name
        return name.withUTF8 { lookUp(UnsafeRawBufferPointer($0)) }
    }

    /// The constant for the name in `bytes` when it is spelled exactly like one, else nil.
    static func lookUp(_ bytes: UnsafeRawBufferPointer) -> HTTPField.Name? {
        func isName(_ literal: StaticString) -> Bool {
            guard bytes.count == literal.utf8CodeUnitCount, let base = bytes.baseAddress else { return false }
            return memcmp(base, literal.utf8Start, bytes.count) == 0
        }
        switch bytes.count {
        case 4:
            if isName("Date") { return .date }
            if isName("ETag") { return .eTag }
            if isName("Vary") { return .vary }
        case 6:
            if isName("Server") { return .server }
        case 8:
            if isName("Location") { return .location }
        case 10:
            if isName("Set-Cookie") { return .setCookie }
        case 12:
            if isName("Content-Type") { return .contentType }
        case 13:
            if isName("Cache-Control") { return .cacheControl }
            if isName("Last-Modified") { return .lastModified }
            if isName("Accept-Ranges") { return .acceptRanges }
        case 14:
            if isName("Content-Length") { return .contentLength }
        case 16:
            if isName("Content-Encoding") { return .contentEncoding }
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
