import LBKitPolicy
import Synchronization
internal import CLBKitShim

/// The read side of a client connection: its socket and the bytes read but not yet parsed.
/// The buffer is lent by the loop's ``ReadBufferPool`` for each read and given back once every
/// byte read is consumed (before the handler runs, and when the connection parks).
///
/// `@unchecked Sendable`: one user at a time. The connection task reads heads through it; while
/// a handler consumes a streamed request body, the body reader (called from that same handler
/// task) reads through it; the connection resumes only after the handler returned.
final class ConnectionInput: @unchecked Sendable {
    let socket: Socket
    /// `@exclusivity(unchecked)`: its one user at a time (above) never holds an access across
    /// another, so the runtime's dynamic check (two calls per access, several per request) is
    /// dropped.
    @exclusivity(unchecked) var buffer = InboundBuffer(capacity: 0)

    init(socket: Socket) { self.socket = socket }

    /// Reads more bytes with a deadline `stall` from now. EOF and errors map to `failure`.
    nonisolated(nonsending) func readMore(stall: Duration) async throws(SocketError) -> Int {
        socket.loop.readBuffers.lend(to: &buffer)
        return try await socket.read(into: &buffer, deadline: deadlineNs(after: stall))
    }

    /// Gives the buffer back to the loop if it holds no unread byte.
    func reclaimBuffer() {
        socket.loop.readBuffers.reclaim(&buffer)
    }
}

extension HTTP1ServerConnection {
    /// `base` plus `duration` in monotonic ns, saturating.
    @inline(__always)
    static func adding(_ duration: Duration, to base: UInt64) -> UInt64 {
        let (sum, overflow) = base.addingReportingOverflow(UInt64(max(0, duration.nanosecondsClamped)))
        return overflow ? .max : sum
    }
}

@inline(__always)
func deadlineNs(after duration: Duration) -> UInt64 {
    deadlineNs(afterNs: UInt64(max(0, duration.nanosecondsClamped)))
}

/// Monotonic ns `ns` from now (saturating).
@inline(__always)
func deadlineNs(afterNs ns: UInt64) -> UInt64 {
    let (sum, overflow) = lbk_monotonic_ns().addingReportingOverflow(ns)
    return overflow ? .max : sum
}

/// Serves one client connection: read a request head, read (or stream) its body, call the
/// handler, write (or stream) the response; repeat while keep-alive holds. Requests are handled
/// strictly one after another, so pipelined requests are answered in order.
///
/// Memory per connection is bounded by buffer sizes, never by body sizes: bodies up to
/// `maxBufferedBodyBytes` are buffered (within the server-wide `bufferedBodyBudget`), larger
/// ones stream; responses stream. A keep-alive connection that stays quiet for a second is
/// *parked*: its task ends (freeing its async frames and its read and write buffers), its socket
/// object is retired, and its loop keeps just an entry in its fd table until the next request
/// arrives, which starts a fresh task (``LBEventLoop/park(_:until:owner:token:)``,
/// ``HTTP1Server/parkedSocketReady(_:deadline:token:)``). An idle connection then holds no heap
/// object at all: 10,000 of them cost about 200 bytes of RSS each, where scattered small objects
/// (a task, a socket) kept a heap page resident per connection.
struct HTTP1ServerConnection: Sendable {
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
        /// Quiet for a while between requests: park until the next one (or `idleDeadline`).
        case park(idleDeadline: UInt64)
    }

    /// How ``run(resuming:)`` ended.
    enum Ending: Equatable {
        /// The connection is done: close it.
        case closed
        /// Parked while idle in its loop: the server continues it in a new task when bytes
        /// arrive, or the loop closes it (idle deadline, shutdown).
        case parked
    }

    /// What a parked connection carries over to the task that continues it.
    struct Resumption: Sendable {
        /// Requests answered on the connection so far (for `maxRequestsPerConnection`).
        var served: Int
        /// When the keep-alive wait that was parked ends.
        var idleDeadline: UInt64
    }

    /// How long a keep-alive connection may wait for its next request before it is parked.
    /// A busy client sends its next request within moments and keeps its task and buffers.
    static let quietPeriodNs: UInt64 = 1_000_000_000

    /// How a response body is delimited on the wire.
    enum ResponseFraming: Equatable {
        case none, whole, length(Int), chunked, untilClose
    }

    /// A request body as read before the handler runs.
    enum ReadBody {
        /// Whole, holding `reserved` bytes of the server's buffering budget.
        case buffered([UInt8], reserved: Int)
        /// To be read by the handler.
        case streamed(ServerBodyReader)
    }

    /// Serves requests until the connection ends or parks (`resuming`: the state of a parked
    /// connection whose next request has arrived).
    nonisolated(nonsending) func run(resuming: Resumption? = nil) async -> Ending {
        // This runs in the connection's own task, which HTTP1Server starts unstructured and
        // never cancels (see LBRequestContext.runsInUncancellableTask).
        let context = self.context.markedAsServedByUncancellableTask()
        let input = ConnectionInput(socket: socket)
        // However the connection ends or parks, an empty read buffer goes back to the loop.
        defer { input.reclaimBuffer() }
        var out: [UInt8] = []
        var served = resuming?.served ?? 0
        var resumedIdleDeadline = resuming?.idleDeadline
        var backToBack = 0
        while true {
            let parsed: ParsedRequestHead
            let body: ReadBody
            do throws(Failure) {
                parsed = try await readHead(input, idleDeadline: resumedIdleDeadline)
                resumedIdleDeadline = nil
                if parsed.head.method == "CONNECT" {
                    // We are an origin-facing proxy, not a forward proxy: no CONNECT tunnels
                    // (RFC 9110 9.3.6). Refused before any byte could be taken as a tunnel.
                    throw Failure.respond(.jsonError(status: 501, message: "CONNECT is not supported"))
                }
                body = try await readBody(parsed, input)
            } catch {
                switch error {
                case .respond(let response):
                    if await write(response, headOnly: false, keepAlive: false, version: .http1_1, into: &out) {
                        await lingeringClose(input)
                    }
                case .park(let idleDeadline):
                    input.reclaimBuffer()
                    if server.park(socket, served: served, idleDeadline: idleDeadline) { return .parked }
                    // Not parked: bytes arrived meanwhile (read them), or the server is draining.
                    if server.isDraining { return .closed }
                    resumedIdleDeadline = idleDeadline
                    continue
                case .close:
                    break
                }
                return .closed
            }
            served += 1
            // The request is read: the handler runs without holding a read buffer (unless
            // pipelined bytes wait in it).
            input.reclaimBuffer()
            // What the answer needs from the request head, taken before the head moves into the
            // request (so it is moved, not copied: every copy retains each stored reference).
            let isHEAD = parsed.head.method == "HEAD"
            let version = parsed.head.version
            let requestKeepAlive = parsed.keepAlive
            let request: LBRequest
            var reserved = 0
            var reader: ServerBodyReader?
            switch consume body {
            case .buffered(let bytes, let r):
                request = LBRequest(head: parsed.head, body: bytes)
                reserved = r
            case .streamed(let r):
                request = LBRequest(head: parsed.head, bodyStream: LBBodyStream(source: r, length: r.declaredLength))
                reader = r
            }
            // The request (and its body) ends with the handler's call, before the answer is written.
            let response: LBResponse
            if let inline = server.inlineHandler {
                response = await inline.handleInline(consume request, context: context)
            } else {
                response = await server.handler.handle(consume request, context: context)
            }
            if reserved > 0 { server.releaseBodyBudget(reserved) }
            var keepAlive = requestKeepAlive && !server.isDraining
            if config.maxRequestsPerConnection > 0 && served >= config.maxRequestsPerConnection { keepAlive = false }
            let answerHeaders = response.head.headers
            for i in 0..<answerHeaders.count where answerHeaders.name(at: i, is: "Connection") {
                if answerHeaders.value(at: i, hasToken: "close") { keepAlive = false }
                break  // the first Connection field decides, as before
            }
            if let reader, !reader.isComplete {
                // The handler did not read the whole body: the rest cannot be told apart from
                // the next request without reading it, so the connection ends after this answer.
                reader.abandon()
                keepAlive = false
            }
            if let tunnel = response.tunnel {
                guard response.head.status == 101 else {
                    tunnel.cancel()
                    return .closed
                }
                guard await writeUpgrade(response.head, into: &out) else {
                    tunnel.cancel()
                    return .closed
                }
                let pending = input.buffer.take(input.buffer.readableCount)
                await tunnel.run(client: socket, pending: pending, idleTimeout: config.tunnelIdleTimeout)
                return .closed
            }
            let ok = await write(response, headOnly: isHEAD, keepAlive: keepAlive,
                                 version: version, into: &out)
            if !ok { return .closed }
            if !keepAlive {
                await lingeringClose(input)
                return .closed
            }
            // Fairness: a client pipelining many requests never makes this task suspend on a read,
            // so let the loop run other connections every 16 requests answered from the buffer.
            if input.buffer.isEmpty {
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
    nonisolated(nonsending) private func lingeringClose(_ input: ConnectionInput) async {
        socket.shutdownWrite()
        let until = deadlineNs(after: .milliseconds(500))
        var discarded = 0
        while discarded < 1 << 20 {
            input.buffer.consume(input.buffer.readableCount)
            socket.loop.readBuffers.lend(to: &input.buffer)
            guard let n = try? await socket.read(into: &input.buffer, deadline: until), n > 0 else { return }
            discarded += n
        }
    }

    // MARK: Head

    /// Reads the next request head. Waiting for its first byte is the keep-alive idle wait (until
    /// `idleDeadline`, default idle timeout from now); quiet for ``quietPeriodNs`` -> ``Failure/park(idleDeadline:)``.
    nonisolated(nonsending) private func readHead(_ input: ConnectionInput, idleDeadline resumed: UInt64?) async throws(Failure) -> ParsedRequestHead {
        let now = lbk_monotonic_ns()
        let idleDeadline = resumed ?? {
            let (sum, overflow) = now.addingReportingOverflow(server.timeoutsNs.idle)
            return overflow ? .max : sum
        }()
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
                if waitingIdle && !socket.mightBeReadable {
                    try await socket.waitUntilReadable(deadline: quietDeadline, idle: true)
                }
                socket.loop.readBuffers.lend(to: &input.buffer)
                let n = try await socket.read(into: &input.buffer, deadline: waitingIdle ? quietDeadline : headDeadline,
                                              idle: waitingIdle)
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

    // MARK: Body

    nonisolated(nonsending) private func readBody(_ parsed: ParsedRequestHead, _ input: ConnectionInput) async throws(Failure) -> ReadBody {
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

    // MARK: Response

    /// Serializes and writes `response`, streaming its body if it has a stream; returns false if
    /// the connection cannot go on (write failed, or a streamed body broke off).
    ///
    /// Framing (RFC 9112 6): no body for 1xx, 204, 304 and HEAD (HEAD keeps the `Content-Length`
    /// the handler set, RFC 9110 8.6); `Content-Length` for a whole body or a stream of known
    /// length; otherwise chunked, or read-until-close for an HTTP/1.0 client. Transfer codings
    /// other than chunked are named before `chunked` (RFC 9112 6.1).
    @discardableResult
    nonisolated(nonsending) private func write(_ response: LBResponse, headOnly: Bool, keepAlive: Bool, version: HTTPWireVersion,
                       into out: inout [UInt8]) async -> Bool {
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
        if let contentLength { HTTPSerializer.appendField("Content-Length", decimal: contentLength, to: &out) }
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
        do {
            try await socket.write(out, deadline: deadlineNs(afterNs: server.timeoutsNs.write))
        } catch {
            stream?.abandon()
            return false
        }
        if out.capacity > 256 * 1024 { out = [] }
        guard let stream else { return true }
        guard sendsBody else {
            stream.abandon()
            return true
        }
        return await pump(stream, framing: framing, into: &out) && keepAlive
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
    nonisolated(nonsending) private func writeUpgrade(_ head: ResponseHead, into out: inout [UInt8]) async -> Bool {
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

/// A request body streamed from the client connection (beyond the server's buffering limit):
/// read only as the handler asks, each read with a stall timeout, de-chunked, limited to
/// `maxBodyBytes` in total.
///
/// `@unchecked Sendable`: single consumer (``BodySource``); its state is touched only by the
/// handler task reading it and, after the handler returned, by the connection task.
final class ServerBodyReader: BodySource, @unchecked Sendable {
    enum Mode {
        case length(remaining: Int)
        case chunked(ChunkedDecoder, total: Int)
    }

    private let input: ConnectionInput
    private var mode: Mode
    private var prefix: [UInt8]
    let declaredLength: Int?
    private let stall: Duration
    private let writeTimeout: Duration
    private let maxBodyBytes: Int
    private var sendContinue: Bool
    private var finished = false
    private var started = false
    private var failed = false

    init(input: ConnectionInput, mode: Mode, prefix: [UInt8], declaredLength: Int?,
         configuration: HTTP1ServerConfiguration, sendContinue: Bool) {
        self.input = input
        self.mode = mode
        self.prefix = prefix
        self.declaredLength = declaredLength
        self.stall = configuration.bodyTimeout
        self.writeTimeout = configuration.writeTimeout
        self.maxBodyBytes = configuration.maxBodyBytes
        self.sendContinue = sendContinue
    }

    /// Whether the whole body was read (the connection can go on to the next request).
    var isComplete: Bool { finished && !failed }
    var hasStarted: Bool { started }

    func abandon() {
        if !finished {
            finished = true
            failed = true
        }
    }

    nonisolated(nonsending) func nextChunk() async throws(BodyStreamError) -> [UInt8]? {
        if !prefix.isEmpty {
            started = true
            defer { prefix = [] }
            return prefix
        }
        if finished {
            if failed { throw BodyStreamError("request body no longer available") }
            return nil
        }
        if sendContinue {
            sendContinue = false
            if input.buffer.isEmpty {
                do {
                    try await input.socket.write(HTTP1ServerConnection.continueBytes, deadline: deadlineNs(after: writeTimeout))
                } catch {
                    fail()
                    throw BodyStreamError("client connection closed")
                }
            }
        }
        started = true
        while true {
            switch mode {
            case .length(let remaining):
                if remaining == 0 {
                    finished = true
                    return nil
                }
                if !input.buffer.isEmpty {
                    let chunk = input.buffer.take(min(remaining, 64 * 1024))
                    mode = .length(remaining: remaining - chunk.count)
                    if remaining - chunk.count == 0 { finished = true }
                    return chunk
                }
            case .chunked(var decoder, let total):
                if !input.buffer.isEmpty {
                    var out: [UInt8] = []
                    do throws(HTTPParseError) {
                        try input.buffer.decodeChunked(&decoder, into: &out)
                    } catch {
                        fail()
                        throw BodyStreamError("invalid chunked request body: \(error.reason)")
                    }
                    let newTotal = total + out.count
                    mode = .chunked(decoder, total: newTotal)
                    if newTotal > maxBodyBytes {
                        fail()
                        throw BodyStreamError("request body exceeds the limit of \(maxBodyBytes) bytes")
                    }
                    if decoder.isComplete { finished = true }
                    if !out.isEmpty { return out }
                    if finished { return nil }
                }
            }
            let n: Int
            do {
                n = try await input.readMore(stall: stall)
            } catch {
                fail()
                throw BodyStreamError(error == .timedOut ? "request body stalled" : "client connection failed: \(error)")
            }
            if n == 0 {
                fail()
                throw BodyStreamError("client closed the connection before the end of the request body")
            }
        }
    }

    private func fail() {
        finished = true
        failed = true
    }
}
