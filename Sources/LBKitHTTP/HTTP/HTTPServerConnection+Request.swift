// The request side of HTTP1ServerConnection: reading a request head (with the keep-alive idle
// wait and parking) and its body (buffered, or handed over as a ServerBodyReader). Separate from
// the request loop (HTTPServerConnection.swift) and the response writer (+Response) so that each
// file holds one concern; moved as is.

import LBKitPolicy
internal import CLBKitShim

extension HTTP1ServerConnection {
    // MARK: Head

    /// Reads the next request head. Waiting for its first byte is the keep-alive idle wait (until
    /// `idleDeadline`, default idle timeout from now); quiet for ``quietPeriodNs`` -> ``Failure/park(idleDeadline:)``.
    @inline(__always)  // one caller (run), and its reads are in line: no async call per request
    /// `since`: when the wait began (the caller may have waited in line already, until the same
    /// quiet deadline).
    nonisolated(nonsending) func readHead(_ input: ConnectionInput, idleDeadline resumed: UInt64?,
                                          since start: UInt64? = nil) async throws(Failure) -> ParsedRequestHead {
        let now = start ?? lbk_monotonic_ns()
        let idleDeadline = resumed ?? self.idleDeadline(from: now)
        let quietDeadline = min(idleDeadline, now &+ Self.quietPeriodNs)
        var headDeadline: UInt64 = .max
        var scanFrom = 0
        while true {
            if !input.buffer.isEmpty {
                let parsed: ParsedRequestHead?
                do throws(HTTPParseError) {
                    parsed = try input.buffer.parseRequestHead(limits: config.limits, scanFrom: scanFrom)
                } catch {
                    throw .respond(.jsonError(status: error.status, message: error.reason))
                }
                if let parsed { return parsed }
                scanFrom = input.buffer.readableCount
                if headDeadline == .max { headDeadline = deadlineNs(afterNs: server.timeoutsNs.header) }
            } else if server.isDraining {
                throw .close
            }
            let waitingIdle = input.buffer.isEmpty
            do {
                // A busy keep-alive client sends its next request within moments: it keeps its
                // task and buffers. One that stays quiet until `quietDeadline` is parked.
                // readNow and waitReadable in line: no async call of their own per request.
                if waitingIdle && !socket.mightBeReadable {
                    try await socket.waitReadable(holding: &input.buffer, deadline: quietDeadline, idle: true)
                }
                var n: Int
                while true {
                    if let ready = try socket.readNow(into: &input.buffer) {
                        n = ready
                        break
                    }
                    try await socket.waitReadable(holding: &input.buffer, deadline: waitingIdle ? quietDeadline : headDeadline,
                                                  idle: waitingIdle)
                }
                if n == 0 { throw Failure.close }
            } catch let error as Failure {
                throw error
            } catch {
                if error as? SocketError == .timedOut {
                    if !waitingIdle { throw .respond(.jsonError(status: 408, message: "request head not received in time")) }
                    if quietDeadline < idleDeadline { throw .park(idleDeadline: idleDeadline) }
                }
                throw .close
            }
        }
    }

    /// The keep-alive idle deadline for a wait that begins at `now`.
    @inline(__always)
    func idleDeadline(from now: UInt64) -> UInt64 {
        let (sum, overflow) = now.addingReportingOverflow(server.timeoutsNs.idle)
        return overflow ? .max : sum
    }

    /// When a keep-alive connection waiting since `now` is parked (see ``readHead(_:idleDeadline:since:)``).
    @inline(__always)
    func quietDeadline(from now: UInt64) -> UInt64 {
        min(idleDeadline(from: now), now &+ Self.quietPeriodNs)
    }

    // MARK: Body

    /// The body when no read is needed: none, or a buffered-size `Content-Length` body already
    /// in the buffer (the common small request). Nil when ``readBody(_:_:)`` has to decide
    /// (reading, streaming, 100-continue, limits); then nothing was consumed.
    @inline(__always)
    func readBodyNow(_ parsed: ParsedRequestHead, _ input: ConnectionInput) -> ReadBody? {
        switch parsed.framing {
        case .none, .untilClose:
            return .buffered([], reserved: 0)
        case .contentLength(let length)
            where length <= config.maxBodyBytes && length <= config.maxBufferedBodyBytes && input.buffer.readableCount >= length:
            return .buffered(length == 0 ? [] : input.buffer.take(length), reserved: 0)
        default:
            return nil
        }
    }

    nonisolated(nonsending) func readBody(_ parsed: ParsedRequestHead, _ input: ConnectionInput) async throws(Failure) -> ReadBody {
        // RFC 9110 10.1.1: an HTTP/1.0 client cannot understand 100 Continue; ignore its Expect.
        let wantsContinue = parsed.expectsContinue && parsed.head.version != .http1_0
        switch parsed.framing {
        case .none, .untilClose:
            return .buffered([], reserved: 0)
        case .contentLength(let length):
            if length > config.maxBodyBytes {
                throw .respond(.jsonError(status: 413, message: "request body of \(length) bytes exceeds the limit of \(config.maxBodyBytes) bytes"))
            }
            if length == 0 { return .buffered([], reserved: 0) }
            if length > config.maxBufferedBodyBytes {
                return .streamed(ServerBodyReader(input: input, mode: .length(remaining: length), prefix: [],
                                                  declaredLength: length, configuration: config, sendContinue: wantsContinue))
            }
            if input.buffer.readableCount >= length { return .buffered(input.buffer.take(length), reserved: 0) }
            guard server.reserveBodyBudget(length) else { throw .respond(Self.overBudget) }
            if wantsContinue && input.buffer.isEmpty { try await sendContinue() }
            // Grown as bytes arrive, never reserved from the announced length.
            var body: [UInt8] = []
            body.append(contentsOf: input.buffer.take(length))
            do throws(Failure) {
                while body.count < length {
                    try await readMore(input)
                    body.append(contentsOf: input.buffer.take(length - body.count))
                }
            } catch {
                server.releaseBodyBudget(length)
                throw error
            }
            return .buffered(body, reserved: length)
        case .chunked:
            if wantsContinue && input.buffer.isEmpty { try await sendContinue() }
            var decoder = ChunkedDecoder(limits: config.limits)
            var body: [UInt8] = []
            var reserved = 0
            let step = 64 * 1024
            do throws(Failure) {
                while true {
                    if !input.buffer.isEmpty {
                        do throws(HTTPParseError) {
                            try input.buffer.decodeChunked(&decoder, into: &body)
                        } catch {
                            throw .respond(.jsonError(status: error.status, message: error.reason))
                        }
                        if body.count > config.maxBodyBytes {
                            throw .respond(.jsonError(status: 413, message: "request body exceeds the limit of \(config.maxBodyBytes) bytes"))
                        }
                        if decoder.isComplete { return .buffered(body, reserved: reserved) }
                        if body.count > config.maxBufferedBodyBytes {
                            // Too large to hold: the handler reads it as a stream, starting with
                            // what was decoded so far.
                            let prefix = body
                            body = []
                            if reserved > 0 { server.releaseBodyBudget(reserved) }
                            reserved = 0
                            return .streamed(ServerBodyReader(input: input, mode: .chunked(decoder, total: prefix.count),
                                                              prefix: prefix, declaredLength: nil, configuration: config,
                                                              sendContinue: false))
                        }
                        while body.count > reserved {
                            guard server.reserveBodyBudget(step) else { throw Failure.respond(Self.overBudget) }
                            reserved += step
                        }
                    }
                    try await readMore(input)
                }
            } catch {
                if reserved > 0 { server.releaseBodyBudget(reserved) }
                throw error
            }
        }
    }

    static var overBudget: LBResponse {
        .jsonError(status: 503, message: "the server is buffering too many request bodies; retry shortly",
                   headers: ["Retry-After": "1"])
    }

    nonisolated(nonsending) private func readMore(_ input: ConnectionInput) async throws(Failure) {
        do {
            let n = try await input.readMore(stall: config.bodyTimeout)
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

    nonisolated(nonsending) private func sendContinue() async throws(Failure) {
        do {
            try await socket.write(HTTP1ServerConnection.continueBytes, deadline: deadlineNs(afterNs: server.timeoutsNs.write))
        } catch {
            throw .close
        }
    }

    static let continueBytes: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
}
