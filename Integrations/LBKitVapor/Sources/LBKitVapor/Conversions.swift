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
        // One allocation for the field bytes (LBKit keeps the wire lines in one buffer).
        var bytes = 0
        for (name, value) in request.headers { bytes += name.utf8.count + value.utf8.count }
        var headers = HeaderFields()
        headers.reserveCapacity(fields: request.headers.count, bytes: bytes)
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
    /// Per-request hot path: names are compared as bytes, and with the removed ones only when
    /// the lengths match (three case-insensitive string comparisons per field before).
    func vaporResponse(removingField removedName: String?) -> Response {
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count)
        var removedName = removedName ?? ""
        removedName.withUTF8 { removed in
            let removed = UnsafeRawBufferPointer(removed)
            head.headers.forEachField { name, value in
                // Names are compared as LBKit's bytes; strings are made only for the fields kept.
                switch name.count {
                case 14 where Self.bytes(name, equalFoldingCase: "Content-Length"): return
                case 17 where Self.bytes(name, equalFoldingCase: "Transfer-Encoding"): return
                case removed.count where removed.count > 0 && Self.bytes(name, equalFoldingCase: removed): return
                default: break
                }
                headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
            }
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

extension LBResponse {
    /// Whether `bytes` spell `name`, folding ASCII letters only (field names, RFC 9110 5.1).
    static func bytes(_ bytes: UnsafeRawBufferPointer, equalFoldingCase name: StaticString) -> Bool {
        Self.bytes(bytes, equalFoldingCase: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
    }

    /// Whether two field names are equal, folding ASCII letters only.
    static func bytes(_ a: UnsafeRawBufferPointer, equalFoldingCase b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i] != b[i] {
            let x = a[i] | 0x20
            guard x == b[i] | 0x20, x >= 0x61, x <= 0x7A else { return false }
        }
        return true
    }
}
