// HTTP1ServerConnection's request loop (read, handle, answer, keep alive or park, lingering close)
// and ConnectionInput, the connection's read side. Reading requests is in
// HTTPServerConnection+Request.swift, writing responses in HTTPServerConnection+Response.swift,
// the streamed request body in ServerBodyReader.swift.

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

    var config: HTTP1ServerConfiguration { server.configuration }

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
            // The steady keep-alive case in line, with no async call (a task allocation less per
            // request): wait quietly for the next request, read it and parse a head that came
            // whole. Anything else (a timeout, EOF, an error, a head in pieces) is left to
            // `readHead`, which starts over from the same instant and decides.
            var quickHead: ParsedRequestHead? = nil
            let waitStart = lbk_monotonic_ns()
            if resumedIdleDeadline == nil && input.buffer.isEmpty && !server.isDraining {
                do throws(SocketError) {
                    if !socket.mightBeReadable {
                        try await socket.waitReadable(holding: &input.buffer, deadline: quietDeadline(from: waitStart), idle: true)
                    }
                    if let n = try socket.readNow(into: &input.buffer), n > 0 {
                        quickHead = try? input.buffer.parseRequestHead(limits: config.limits, scanFrom: 0)
                    }
                } catch {
                    // readHead meets the same state and answers it.
                }
            }
            let parsed: ParsedRequestHead
            let body: ReadBody
            do throws(Failure) {
                if let quick = quickHead.take() {  // moved out, not copied
                    parsed = quick
                } else {
                    parsed = try await readHead(input, idleDeadline: resumedIdleDeadline, since: waitStart)
                }
                resumedIdleDeadline = nil
                if parsed.head.method.isMethod("CONNECT") {
                    // We are an origin-facing proxy, not a forward proxy: no CONNECT tunnels
                    // (RFC 9110 9.3.6). Refused before any byte could be taken as a tunnel.
                    throw Failure.respond(.jsonError(status: 501, message: "CONNECT is not supported"))
                }
                // A body already in the buffer (or none) is taken synchronously: no async call.
                if let ready = readBodyNow(parsed, input) {
                    body = ready
                } else {
                    body = try await readBody(parsed, input)
                }
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
            // request (`consume`: moved, not copied; every copy retains each stored reference).
            let isHEAD = parsed.head.method.isMethod("HEAD")
            let version = parsed.head.version
            let requestKeepAlive = parsed.keepAlive
            let request: LBRequest
            var reserved = 0
            var reader: ServerBodyReader?
            switch consume body {
            case .buffered(let bytes, let r):
                request = LBRequest(head: (consume parsed).head, body: bytes)
                reserved = r
            case .streamed(let r):
                request = LBRequest(head: (consume parsed).head, bodyStream: LBBodyStream(source: r, length: r.declaredLength))
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
            for i in 0..<answerHeaders.count where answerHeaders.nameLength(at: i) == 10 && answerHeaders.name(at: i, is: "Connection") {
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
            // The synchronous part in line; an answer the send buffer took whole needs no more.
            let ok: Bool
            switch startWrite(response, headOnly: isHEAD, keepAlive: keepAlive, version: version, into: &out) {
            case .finished(let done): ok = done
            case .unfinished(let rest): ok = await finishWrite(rest, into: &out)
            }
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
            guard let n = try? await socket.read(into: &input.buffer, deadline: until), n > 0 else { return }
            discarded += n
        }
    }
}
