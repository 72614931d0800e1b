import NIOCore
import Vapor

extension ClientAddress {
    /// The IP address of a NIO socket address (IPv4 or IPv6); nil for a Unix domain socket.
    ///
    /// Use it with `req.remoteAddress`, the TCP peer of the connection. Vapor's `req.peerAddress`
    /// believes a client-sent `X-Forwarded-For`, so it must not be used for throttling; LBKit
    /// applies `X-Forwarded-For` itself, only for peers in `trustedProxies`.
    ///
    /// ```swift
    /// func client(of req: Request) -> ClientAddress? {
    ///     req.remoteAddress.flatMap(ClientAddress.init(socketAddress:))
    /// }
    /// ```
    public init?(socketAddress: SocketAddress) {
        switch socketAddress {
        case .v4(let v4):
            self.init(ipv4: UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            var raw = v6.address.sin6_addr
            guard let address = withUnsafeBytes(of: &raw, { ClientAddress(bytes: $0) }) else { return nil }
            self = address
        case .unixDomainSocket:
            return nil
        }
    }
}

extension LBRequest {
    /// The LBKit form of a Vapor request: method, `target`, version, every header field in order
    /// (`Host` included) and `body`.
    ///
    /// ```swift
    /// func convert(_ req: Request) -> LBRequest {
    ///     LBRequest(vapor: req, target: req.url.string, body: [])
    /// }
    /// ```
    public init(vapor request: Request, target: String, body: [UInt8]) {
        var headers = HeaderFields()
        for (name, value) in request.headers { headers.add(name: name, value: value) }
        let head = RequestHead(method: request.method.rawValue, target: target,
                               version: HTTPWireVersion(major: request.version.major, minor: request.version.minor),
                               headers: headers)
        self.init(head: head, body: body)
    }
}

extension LBResponse {
    /// The Vapor form of this response: status and reason phrase, header fields in order, body
    /// (whole, or streamed when LBKit streams it).
    /// `Content-Length` and `Transfer-Encoding` are left to Vapor (it frames the body itself);
    /// `X-Backend` is kept only when `keepingBackendHeader` is true.
    ///
    /// ```swift
    /// func reply(_ response: LBResponse) -> Response {
    ///     response.vaporResponse()
    /// }
    /// ```
    public func vaporResponse(keepingBackendHeader: Bool = false) -> Response {
        vaporResponse(removingField: keepingBackendHeader ? nil : "X-Backend")
    }

    /// The Vapor response without `Content-Length`, `Transfer-Encoding` and the field named
    /// `removedName` (LBKit's backend header, unless exposed).
    ///
    /// Per-request hot path: a name is compared with the removed ones only when its length
    /// matches (three case-insensitive comparisons per field before).
    func vaporResponse(removingField removedName: String?) -> Response {
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count)
        let removedLength = removedName?.utf8.count ?? -1
        for (name, value) in head.headers {
            switch name.utf8.count {
            case 14 where HeaderFields.namesEqual(name, "Content-Length"): continue
            case 17 where HeaderFields.namesEqual(name, "Transfer-Encoding"): continue
            case removedLength where removedName.map { HeaderFields.namesEqual(name, $0) } ?? false: continue
            default: break
            }
            headers.add(name: name, value: value)
        }
        let status = HTTPResponseStatus(statusCode: head.status, reasonPhrase: head.reason)
        guard let stream = bodyStream else {
            return Response(status: status, headers: headers, body: .init(buffer: ByteBuffer(bytes: body)))
        }
        // A streamed body (large, chunked, server-sent events) is relayed part by part: Vapor
        // asks for the next part only when the client took the previous one.
        let streamed = Response.Body(asyncStream: { writer in
            do {
                while let chunk = try await stream.next() {
                    try await writer.write(.buffer(ByteBuffer(bytes: chunk)))
                }
                try await writer.write(.end)
            } catch {
                stream.abandon()
                try await writer.write(.error(error))
            }
        }, count: stream.length ?? -1)
        return Response(status: status, headers: headers, body: streamed)
    }
}
