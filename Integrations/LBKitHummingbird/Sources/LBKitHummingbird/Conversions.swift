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
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count)
        for (name, value) in head.headers {
            if !exposeBackendHeader && HeaderFields.namesEqual(name, "X-Backend") { continue }
            guard let fieldName = HTTPField.Name(name) else { continue }
            fields.append(HTTPField(name: fieldName, value: value))
        }
        let status: HTTPResponse.Status = (100...999).contains(head.status)
            ? HTTPResponse.Status(code: head.status, reasonPhrase: head.reason)
            : .badGateway
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
