import LBKitPolicy
internal import CLBKitShim

/// Serves one client connection: read a request head, read its body, call the handler, write the
/// response; repeat while keep-alive holds. Requests are handled strictly one after another, so
/// pipelined requests are answered in order.
struct HTTP1ServerConnection {
    let socket: Socket
    let server: HTTP1Server
    let context: LBRequestContext

    private var config: HTTP1ServerConfiguration { server.configuration }

    /// Why the request loop stopped reading.
    enum Failure: Error {
        /// Send this response, then close.
        case respond(LBResponse)
        /// Close without a response (EOF, reset, idle timeout, shutdown).
        case close
    }

    func run() async {
        var buffer = InboundBuffer(capacity: 16 * 1024)
        var out: [UInt8] = []
        out.reserveCapacity(4096)
        var served = 0
        var backToBack = 0
        while true {
            let parsed: ParsedRequestHead
            let body: [UInt8]
            do {
                parsed = try await readHead(&buffer)
                body = try await readBody(parsed, &buffer)
            } catch {
                if case .respond(let response) = error {
                    if await write(response, headOnly: false, keepAlive: false, version: .http1_1, into: &out) {
                        await lingeringClose(&buffer)
                    }
                }
                return
            }
            served += 1
            let request = LBRequest(head: parsed.head, body: body)
            let response = await server.handler.handle(request, context: context)
            var keepAlive = parsed.keepAlive && !server.isDraining
            if config.maxRequestsPerConnection > 0 && served >= config.maxRequestsPerConnection { keepAlive = false }
            if let c = response.head.headers.first(name: "Connection"), HTTPConnectionHeader.hasToken(c, "close") {
                keepAlive = false
            }
            let ok = await write(response, headOnly: parsed.head.method == "HEAD", keepAlive: keepAlive,
                                 version: parsed.head.version, into: &out)
            if !ok { return }
            if !keepAlive {
                await lingeringClose(&buffer)
                return
            }
            // Fairness: a client pipelining many requests never makes this task suspend on a read,
            // so let the loop run other connections every 16 requests answered from the buffer.
            if buffer.isEmpty {
                backToBack = 0
            } else {
                backToBack += 1
                if backToBack >= 16 {
                    backToBack = 0
                    await Task.yield()
                }
            }
        }
    }

    /// After a final response: half-close, then read and discard what the client still sends (up
    /// to a short deadline) so that closing with unread bytes does not reset the connection before
    /// the client has read our response (RFC 9112 9.6).
    private func lingeringClose(_ buffer: inout InboundBuffer) async {
        socket.shutdownWrite()
        let until = deadline(after: .milliseconds(500))
        var discarded = 0
        while discarded < 1 << 20 {
            buffer.consume(buffer.readableCount)
            guard let n = try? await socket.read(into: &buffer, deadline: until), n > 0 else { return }
            discarded += n
        }
    }

    // MARK: Head

    private func readHead(_ buffer: inout InboundBuffer) async throws(Failure) -> ParsedRequestHead {
        let idleDeadline = deadline(after: config.idleTimeout)
        var headDeadline: UInt64 = .max
        var scanFrom = 0
        while true {
            if !buffer.isEmpty {
                let parsed: ParsedRequestHead?
                do throws(HTTPParseError) {
                    parsed = try buffer.parseRequestHead(limits: config.limits, scanFrom: scanFrom)
                } catch {
                    throw .respond(.jsonError(status: error.status, message: error.reason))
                }
                if let parsed { return parsed }
                scanFrom = buffer.readableCount
                if headDeadline == .max { headDeadline = deadline(after: config.headerTimeout) }
            } else if server.isDraining {
                throw .close
            }
            let waitingIdle = buffer.isEmpty
            do {
                let n = try await socket.read(into: &buffer, deadline: waitingIdle ? idleDeadline : headDeadline,
                                              idle: waitingIdle)
                if n == 0 { throw Failure.close }
            } catch let error as Failure {
                throw error
            } catch {
                if error as? SocketError == .timedOut && !waitingIdle {
                    throw .respond(.jsonError(status: 408, message: "request head not received in time"))
                }
                throw .close
            }
        }
    }

    // MARK: Body

    private func readBody(_ parsed: ParsedRequestHead, _ buffer: inout InboundBuffer) async throws(Failure) -> [UInt8] {
        switch parsed.framing {
        case .none, .untilClose:
            return []
        case .contentLength(let length):
            if length > config.maxBodyBytes {
                throw .respond(.jsonError(status: 413, message: "request body of \(length) bytes exceeds the limit of \(config.maxBodyBytes) bytes"))
            }
            if length == 0 { return [] }
            if buffer.readableCount >= length { return buffer.take(length) }
            if parsed.expectsContinue && buffer.isEmpty { try await sendContinue() }
            var body: [UInt8] = []
            body.reserveCapacity(length)
            body.append(contentsOf: buffer.take(length))
            let bodyDeadline = deadline(after: config.bodyTimeout)
            while body.count < length {
                try await readMore(&buffer, deadline: bodyDeadline)
                body.append(contentsOf: buffer.take(length - body.count))
            }
            return body
        case .chunked:
            if parsed.expectsContinue && buffer.isEmpty { try await sendContinue() }
            var decoder = ChunkedDecoder(limits: config.limits)
            var body: [UInt8] = []
            let bodyDeadline = deadline(after: config.bodyTimeout)
            while true {
                if !buffer.isEmpty {
                    do throws(HTTPParseError) {
                        try buffer.decodeChunked(&decoder, into: &body)
                    } catch {
                        throw .respond(.jsonError(status: error.status, message: error.reason))
                    }
                    if body.count > config.maxBodyBytes {
                        throw .respond(.jsonError(status: 413, message: "request body exceeds the limit of \(config.maxBodyBytes) bytes"))
                    }
                    if decoder.isComplete { return body }
                }
                try await readMore(&buffer, deadline: bodyDeadline)
            }
        }
    }

    private func readMore(_ buffer: inout InboundBuffer, deadline: UInt64) async throws(Failure) {
        do {
            let n = try await socket.read(into: &buffer, deadline: deadline)
            if n == 0 { throw Failure.close }
        } catch let error as Failure {
            throw error
        } catch {
            if error as? SocketError == .timedOut {
                throw .respond(.jsonError(status: 408, message: "request body not received in time"))
            }
            throw .close
        }
    }

    private func sendContinue() async throws(Failure) {
        do {
            try await socket.write(HTTP1ServerConnection.continueBytes, deadline: deadline(after: config.writeTimeout))
        } catch {
            throw .close
        }
    }

    static let continueBytes: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    // MARK: Response

    /// Serializes and writes `response`; returns false if the write failed.
    @discardableResult
    private func write(_ response: LBResponse, headOnly: Bool, keepAlive: Bool, version: HTTPWireVersion,
                       into out: inout [UInt8]) async -> Bool {
        var head = response.head
        let status = head.status
        let bodyAllowed = !(status < 200 || status == 204 || status == 304)
        if bodyAllowed && !(headOnly && head.headers.contains(name: "Content-Length")) {
            head.headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        }
        head.headers.remove(name: "Transfer-Encoding")
        head.headers.remove(name: "Connection")
        if !keepAlive {
            head.headers.add(name: "Connection", value: "close")
        } else if version == .http1_0 {
            head.headers.add(name: "Connection", value: "keep-alive")
        }
        head.version = .http1_1
        out.removeAll(keepingCapacity: true)
        HTTPSerializer.appendResponseHead(head, to: &out)
        if bodyAllowed && !headOnly { out.append(contentsOf: response.body) }
        do {
            try await socket.write(out, deadline: deadline(after: config.writeTimeout))
        } catch {
            return false
        }
        if out.capacity > 256 * 1024 { out = [] }
        return true
    }

    @inline(__always)
    private func deadline(after duration: Duration) -> UInt64 {
        lbk_monotonic_ns() &+ UInt64(max(0, duration.nanosecondsClamped))
    }
}
