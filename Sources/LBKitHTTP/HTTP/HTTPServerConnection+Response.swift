// The response side of HTTP1ServerConnection: serializing a response head with the framing the
// server owns, writing a whole or streamed body (chunked or by length), and the 101 upgrade head.
// Separate from the request loop (HTTPServerConnection.swift) and request reading (+Request) so
// that each file holds one concern; moved as is.

import LBKitPolicy

extension HTTP1ServerConnection {
    // MARK: Response

    /// Serializes and writes `response`, streaming its body if it has a stream; returns false if
    /// the connection cannot go on (write failed, or a streamed body broke off).
    ///
    /// Framing (RFC 9112 6): no body for 1xx, 204, 304 and HEAD (HEAD keeps the `Content-Length`
    /// the handler set, RFC 9110 8.6); `Content-Length` for a whole body or a stream of known
    /// length; otherwise chunked, or read-until-close for an HTTP/1.0 client. Transfer codings
    /// other than chunked are named before `chunked` (RFC 9112 6.1).
    @discardableResult
    nonisolated(nonsending) func write(_ response: LBResponse, headOnly: Bool, keepAlive: Bool, version: HTTPWireVersion,
                       into out: inout [UInt8]) async -> Bool {
        switch startWrite(response, headOnly: headOnly, keepAlive: keepAlive, version: version, into: &out) {
        case .finished(let ok): return ok
        case .unfinished(let rest): return await finishWrite(rest, into: &out)
        }
    }

    /// What ``startWrite(_:headOnly:keepAlive:version:into:)`` left to do: the bytes of `out`
    /// the send buffer did not take, and a streamed body.
    struct UnfinishedWrite {
        var sent: Int
        var stream: LBBodyStream?
        var framing: ResponseFraming
        var sendsBody: Bool
        var keepAlive: Bool
    }

    /// How far the synchronous part of a response write got.
    enum WriteStart {
        /// All written (or failed): the result of ``write(_:headOnly:keepAlive:version:into:)``.
        case finished(Bool)
        /// ``finishWrite(_:into:)`` does the rest.
        case unfinished(UnfinishedWrite)
    }

    /// Serializes `response` into `out` and sends what the socket takes now, without waiting:
    /// a whole answer that fits the send buffer (the common case) is written with no async call
    /// (see ``Socket/sendNow(_:)``). `run` calls it directly, ``write(_:headOnly:keepAlive:version:into:)``
    /// for the other answers.
    @inline(__always)
    func startWrite(_ response: LBResponse, headOnly: Bool, keepAlive: Bool, version: HTTPWireVersion,
                    into out: inout [UInt8]) -> WriteStart {
        let head = response.head
        let status = head.status
        let bodyAllowed = !(status < 200 || status == 204 || status == 304)
        var keepAlive = keepAlive
        let stream = response.bodyStream
        var framing = ResponseFraming.none
        // The handler's fields minus the framing and connection fields the server owns, which
        // follow in this order: Transfer-Encoding or Content-Length, then Connection. Written
        // straight into `out`: the handler's field list is never copied or edited.
        var dropContentLength = false
        var transferEncoding: String? = nil
        var contentLength: Int? = nil
        if !bodyAllowed {
            if status < 200 || status == 204 { dropContentLength = true }
        } else if !response.transferCodings.isEmpty || (stream != nil && stream?.length == nil) {
            dropContentLength = true
            if version == .http1_0 {
                framing = .untilClose
                keepAlive = false
            } else {
                framing = .chunked
                transferEncoding = response.transferCodings.isEmpty
                    ? "chunked" : (response.transferCodings + ["chunked"]).joined(separator: ", ")
            }
        } else if let stream, let length = stream.length {
            framing = .length(length)
            dropContentLength = true
            contentLength = length
        } else {
            framing = .whole
            if !(headOnly && head.headers.contains(name: "Content-Length")) {
                dropContentLength = true
                contentLength = response.body.count
            }
        }
        out.removeAll(keepingCapacity: true)
        if out.capacity < 1024 { out.reserveCapacity(4096) }
        HTTPSerializer.appendStatusLine(status: status, reason: head.reason, to: &out)
        let headers = head.headers
        headers.appendWire(to: &out) { i in
            switch headers.nameLength(at: i) {
            case 10: headers.name(at: i, is: "Connection")
            case 14: dropContentLength && headers.name(at: i, is: "Content-Length")
            case 17: headers.name(at: i, is: "Transfer-Encoding")
            default: false
            }
        }
        if let transferEncoding { HTTPSerializer.appendField("Transfer-Encoding", transferEncoding, to: &out) }
        if let contentLength { HTTPSerializer.appendContentLength(contentLength, to: &out) }
        if !keepAlive {
            HTTPSerializer.appendField("Connection", "close", to: &out)
        } else if version == .http1_0 {
            HTTPSerializer.appendField("Connection", "keep-alive", to: &out)
        }
        HTTPSerializer.appendEndOfHead(to: &out)
        let sendsBody = bodyAllowed && !headOnly
        if sendsBody && stream == nil {
            switch framing {
            case .chunked: Self.appendChunk(response.body, last: true, to: &out)
            case .untilClose, .whole: out.append(contentsOf: response.body)
            case .none, .length: break
            }
        }
        let sent: Int
        do throws(SocketError) {
            sent = try socket.sendNow(out)
        } catch {
            stream?.abandon()
            return .finished(false)
        }
        if sent == out.count && stream == nil {
            if out.capacity > 256 * 1024 { out = [] }
            return .finished(true)
        }
        return .unfinished(UnfinishedWrite(sent: sent, stream: stream, framing: framing, sendsBody: sendsBody, keepAlive: keepAlive))
    }

    /// The rest of a response write: the bytes the send buffer did not take, then a streamed body.
    nonisolated(nonsending) func finishWrite(_ rest: UnfinishedWrite, into out: inout [UInt8]) async -> Bool {
        if rest.sent < out.count {
            do {
                try await socket.write(out, from: rest.sent, deadline: deadlineNs(afterNs: server.timeoutsNs.write))
            } catch {
                rest.stream?.abandon()
                return false
            }
        }
        if out.capacity > 256 * 1024 { out = [] }
        guard let stream = rest.stream else { return true }
        guard rest.sendsBody else {
            stream.abandon()
            return true
        }
        return await pump(stream, framing: rest.framing, into: &out) && rest.keepAlive
    }

    /// Copies a streamed body to the client, one part at a time: the next part is read only when
    /// the client has taken the previous one (backpressure end to end).
    nonisolated(nonsending) private func pump(_ stream: LBBodyStream, framing: ResponseFraming, into out: inout [UInt8]) async -> Bool {
        let chunked = framing == .chunked
        var sent = 0
        while true {
            let chunk: [UInt8]?
            do {
                chunk = try await stream.next()
            } catch {
                // The body broke off mid-way: the client can only learn it from the connection
                // ending before the framing says the body is complete.
                return false
            }
            out.removeAll(keepingCapacity: true)
            if let chunk {
                if chunk.isEmpty { continue }
                sent += chunk.count
                do {
                    if chunked {
                        Self.appendChunk(chunk, last: false, to: &out)
                        try await socket.write(out, deadline: deadlineNs(afterNs: server.timeoutsNs.write))
                    } else {
                        try await socket.write(chunk, deadline: deadlineNs(afterNs: server.timeoutsNs.write))
                    }
                } catch {
                    stream.abandon()
                    return false
                }
            } else {
                if chunked {
                    out.append(contentsOf: Self.lastChunk)
                    do { try await socket.write(out, deadline: deadlineNs(afterNs: server.timeoutsNs.write)) } catch { return false }
                }
                if let length = stream.length, sent != length { return false }
                if out.capacity > 256 * 1024 { out = [] }
                return true
            }
        }
    }

    static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)

    /// Appends `bytes` as one chunk (and the last-chunk marker when `last`).
    static func appendChunk(_ bytes: [UInt8], last: Bool, to out: inout [UInt8]) {
        if !bytes.isEmpty {
            out.append(contentsOf: String(bytes.count, radix: 16).utf8)
            out.append(13); out.append(10)
            out.append(contentsOf: bytes)
            out.append(13); out.append(10)
        }
        if last { out.append(contentsOf: lastChunk) }
    }

    /// Writes a `101 Switching Protocols` head as the handler built it (its `Connection` and
    /// `Upgrade` fields are the upgrade itself, RFC 9110 7.8).
    nonisolated(nonsending) func writeUpgrade(_ head: ResponseHead, into out: inout [UInt8]) async -> Bool {
        var head = head
        head.version = .http1_1
        out.removeAll(keepingCapacity: true)
        HTTPSerializer.appendResponseHead(head, to: &out)
        do {
            try await socket.write(out, deadline: deadlineNs(afterNs: server.timeoutsNs.write))
            return true
        } catch {
            return false
        }
    }
}
