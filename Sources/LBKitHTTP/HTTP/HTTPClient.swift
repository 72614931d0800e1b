import LBKitPolicy
internal import CLBKitShim
import Synchronization

/// Settings of an ``UpstreamClient``.
public struct UpstreamClientConfiguration: Sendable {
    /// How long a TCP connect may take.
    public var connectTimeout: Duration = .seconds(1)
    /// Idle keep-alive connections kept per endpoint per event loop.
    public var maxIdlePerLoop = 128
    /// An idle pooled connection older than this is closed instead of reused.
    public var idleTimeout: Duration = .seconds(30)
    /// A request that must not be replayed (``UpstreamRequest/mayReplay`` false) only reuses a
    /// connection idle for less than this: the longer a connection sat idle, the likelier the
    /// backend is closing it just as we write, and such a request cannot be retried. Backends'
    /// keep-alive timeouts are commonly 2 to 75 s; one second stays clear of all of them.
    public var nonReplayableMaxIdle: Duration = .seconds(1)
    /// Response bodies up to this size are read whole (the connection goes straight back to the
    /// pool); larger ones, chunked ones not yet complete, and read-until-close ones are streamed
    /// (``UpstreamResponse/bodyStream``) with backpressure, so memory never grows with body size.
    public var maxBufferedResponseBytes = 64 * 1024
    /// How long a streamed body may stall (no new byte) before it fails. A stall timeout: a slow
    /// download that keeps progressing is never cut off.
    public var bodyStallTimeout: Duration = .seconds(30)
    /// Largest body ``UpstreamClient/execute(_:to:on:timeout:)`` collects for its caller (the
    /// balancer streams instead and has no such limit).
    public var maxCollectedResponseBytes = 64 * 1024 * 1024
    /// Parser limits for response heads.
    public var limits = HTTPParserLimits()

    /// Creates a configuration with defaults.
    public init() {}
}

/// A request to send upstream: head plus the whole body. The client sets `Content-Length`.
///
/// ```swift
/// let probe = UpstreamRequest(head: RequestHead(method: "GET", target: "/health"))
/// let order = UpstreamRequest(head: RequestHead(method: "POST", target: "/orders"),
///                             body: Array(#"{"item":7}"#.utf8))   // mayReplay == false
/// ```
public struct UpstreamRequest: Sendable {
    /// Method, target, version (sent as HTTP/1.1) and header fields.
    public var head: RequestHead
    /// The body bytes.
    public var body: [UInt8]
    /// A body to stream instead of ``body`` (sent with its `Content-Length` when known,
    /// chunked otherwise). A streamed body can be sent once only: such a request never replays.
    public var bodyStream: LBBodyStream?
    /// Whether the client may send this request a second time after a pooled connection broke
    /// (RFC 9110 9.2.2). Defaults to true for idempotent methods only.
    public var mayReplay: Bool

    /// Creates a request; `mayReplay` defaults to whether the method is idempotent.
    public init(head: RequestHead, body: [UInt8] = [], mayReplay: Bool? = nil) {
        self.head = head
        self.body = body
        self.bodyStream = nil
        self.mayReplay = mayReplay ?? ReplayPolicy.isIdempotent(head.method)
    }

    /// Creates a request whose body is streamed (never replayed).
    public init(head: RequestHead, bodyStream: LBBodyStream) {
        self.head = head
        self.body = []
        self.bodyStream = bodyStream
        self.mayReplay = false
    }

    /// Whether the request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
    public var asksUpgrade: Bool {
        let headers = head.headers
        var upgrade = false, connectionUpgrade = false
        for i in 0..<headers.count {
            switch headers.nameLength(at: i) {
            case 7: if headers.name(at: i, is: "Upgrade") { upgrade = true }
            case 10: if headers.name(at: i, is: "Connection") && headers.value(at: i, hasToken: "upgrade") { connectionUpgrade = true }
            default: break
            }
        }
        return upgrade && connectionUpgrade
    }
}

/// Why an upstream exchange failed, and whether the request may have reached the backend.
public struct UpstreamError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Sendable, Equatable {
        /// TCP connect was refused.
        case connectRefused
        /// TCP connect did not complete in time.
        case connectTimeout
        /// TCP connect failed otherwise.
        case connectFailed(String)
        /// The connection broke (reset or closed) before a complete response.
        case connectionReset
        /// The response did not arrive before the deadline.
        case timedOut
        /// The response was not valid HTTP/1.x.
        case malformedResponse(String)
        /// The request's streamed body failed (the client sending it went away or stalled).
        case requestBodyFailed(String)
        /// The exchange was given up through its ``ExchangeAbortHandle``.
        case aborted
    }

    /// What went wrong.
    public var kind: Kind
    /// False when the request provably never reached the backend (connect failures, a stale pooled
    /// connection): such a request is always safe to send elsewhere.
    public var requestSent: Bool

    /// Creates an error.
    public init(kind: Kind, requestSent: Bool) {
        self.kind = kind
        self.requestSent = requestSent
    }

    public var description: String {
        switch kind {
        case .connectRefused: "connection refused"
        case .connectTimeout: "connect timed out"
        case .connectFailed(let why): "connect failed: \(why)"
        case .connectionReset: "connection reset before a complete response"
        case .timedOut: "response timed out"
        case .malformedResponse(let why): "malformed response: \(why)"
        case .requestBodyFailed(let why): "request body failed: \(why)"
        case .aborted: "aborted"
        }
    }
}

/// A response read from upstream, with the whole body (de-chunked).
public struct UpstreamResponse: Sendable {
    /// Status line and header fields as received.
    public var head: ResponseHead
    /// The body, when streamed (then ``body`` is empty): read it to its end or abandon it, which
    /// returns or closes the connection.
    public var bodyStream: LBBodyStream?
    /// Transfer codings other than chunked applied to the body (e.g. `gzip`), in order.
    public var transferCodings: [String] = []
    /// After `101 Switching Protocols`: the upgraded connection.
    package var tunnel: UpstreamTunnel?
    /// The body bytes when whole.
    public var body: [UInt8]
    /// Whether the connection was reused from the pool.
    public var reusedConnection: Bool

    /// Creates a response with a whole body.
    public init(head: ResponseHead, body: [UInt8], reusedConnection: Bool) {
        self.head = head
        self.body = body
        self.reusedConnection = reusedConnection
    }
}

/// Our HTTP/1.1 client for talking to backends: keep-alive connection pools per endpoint and loop,
/// connect timeout, a deadline per exchange, chunked / Content-Length / read-to-close responses, and
/// one transparent retry on a fresh connection when a pooled connection turns out to be stale.
///
/// ```swift
/// func probe(_ group: LBEventLoopGroup) async throws {
///     let client = UpstreamClient()
///     let endpoint = UpstreamEndpoint(address: try IPSocketAddress(host: "127.0.0.1", port: 5001), group: group)
///     let response = try await client.execute(
///         UpstreamRequest(head: RequestHead(method: "GET", target: "/health")),
///         to: endpoint, timeout: .seconds(3))
///     print(response.head.status)
/// }
/// ```
public final class UpstreamClient: Sendable {
    /// The client's settings.
    public let configuration: UpstreamClientConfiguration

    /// Creates a client.
    public init(configuration: UpstreamClientConfiguration = UpstreamClientConfiguration()) {
        self.configuration = configuration
        idleTimeoutNs = UInt64(max(0, configuration.idleTimeout.nanosecondsClamped))
        nonReplayableMaxIdleNs = min(idleTimeoutNs, UInt64(max(0, configuration.nonReplayableMaxIdle.nanosecondsClamped)))
        connectTimeoutNs = UInt64(max(0, configuration.connectTimeout.nanosecondsClamped))
    }

    // The configuration's durations in nanoseconds, converted once (used on every exchange).
    private let idleTimeoutNs: UInt64
    private let nonReplayableMaxIdleNs: UInt64
    private let connectTimeoutNs: UInt64

    /// Sends `request` to `endpoint` and reads the whole response before `timeout` elapses.
    ///
    /// Runs on `loop` when given (the balancer pins exchanges to the caller's loop so they never
    /// cross threads), otherwise on a loop of the endpoint's group. Cancelling the calling task
    /// aborts the exchange and closes its connection.
    public func execute(_ request: UpstreamRequest, to endpoint: UpstreamEndpoint, on loop: LBEventLoop? = nil,
                        timeout: Duration) async throws(UpstreamError) -> UpstreamResponse {
        let deadline = Self.deadline(after: timeout)
        let loop = loop ?? endpoint.group.next()
        return try await collected(execute(request, to: endpoint, on: loop, deadline: deadline))
    }

    /// `response` with a streamed body read whole (for callers that asked for the complete
    /// response): at most ``UpstreamClientConfiguration/maxCollectedResponseBytes``.
    nonisolated(nonsending) private func collected(_ response: UpstreamResponse) async throws(UpstreamError) -> UpstreamResponse {
        guard let stream = response.bodyStream else { return response }
        var whole = response
        whole.bodyStream = nil
        do {
            whole.body = try await stream.collect(upTo: configuration.maxCollectedResponseBytes)
        } catch {
            throw UpstreamError(kind: error.message.contains("stalled") ? .timedOut : .connectionReset, requestSent: true)
        }
        return whole
    }

    /// Sends `request` and reads the response before `deadline` (monotonic ns, see
    /// ``deadline(after:)``).
    nonisolated(nonsending) package func execute(_ request: UpstreamRequest, to endpoint: UpstreamEndpoint, on loop: LBEventLoop,
                         deadline: UInt64) async throws(UpstreamError) -> UpstreamResponse {
        switch try await send(request, to: endpoint, on: loop, deadline: deadline, answerBy: .max) {
        case .complete(let response): return response
        case .pending(let pending): return try await finish(pending, deadline: deadline)
        }
    }

    /// Monotonic ns `timeout` from now (saturating).
    package static func deadline(after timeout: Duration) -> UInt64 {
        let (sum, overflow) = lbk_monotonic_ns().addingReportingOverflow(UInt64(max(0, timeout.nanosecondsClamped)))
        return overflow ? .max : sum
    }

    /// Sends `request`; returns the complete response, or ``ExchangeProgress/pending(_:)`` when no
    /// byte of the response has arrived by `answerBy` (monotonic ns) while `deadline` has not passed.
    /// A pending exchange keeps its connection: continue it with ``finish(_:deadline:)`` or give it
    /// up with its abort handle. This is how the balancer hedges slow requests without any cost on
    /// the fast path. Cancelling the calling task aborts the exchange.
    ///
    /// Replay safety (RFC 9112 9.3.1, RFC 9110 9.2.2): a pooled connection can be closed by the
    /// backend at the moment we reuse it. When that shows as EOF or reset before any response byte,
    /// a *replayable* request (``UpstreamRequest/mayReplay``) is sent again once on a fresh
    /// connection. A non-replayable one never is: the backend may have read it, so the failure is
    /// reported as sent. To keep that race rare, a non-replayable request only reuses connections
    /// idle for less than ``UpstreamClientConfiguration/nonReplayableMaxIdle``.
    nonisolated(nonsending) package func send(_ request: UpstreamRequest, to endpoint: UpstreamEndpoint, on loop: LBEventLoop,
                      deadline: UInt64, answerBy: UInt64,
                      abortHandle: ExchangeAbortHandle? = nil,
                      watchesCancellation: Bool = true) async throws(UpstreamError) -> ExchangeProgress {
        let handle = abortHandle ?? ExchangeAbortHandle()
        // A task nothing can cancel needs no cancellation handler (see
        // LBRequestContext.runsInUncancellableTask).
        guard watchesCancellation else {
            return try await sendUncancellable(request, to: endpoint, on: loop, deadline: deadline, answerBy: answerBy, handle: handle)
        }
        let result: Result<ExchangeProgress, UpstreamError> = await withTaskCancellationHandler {
            do throws(UpstreamError) {
                return .success(try await sendUncancellable(request, to: endpoint, on: loop, deadline: deadline,
                                                            answerBy: answerBy, handle: handle))
            } catch {
                return .failure(error)
            }
        } onCancel: {
            handle.abort()
        }
        return try result.get()
    }

    nonisolated(nonsending) private func sendUncancellable(_ request: UpstreamRequest, to endpoint: UpstreamEndpoint, on loop: LBEventLoop,
                                   deadline: UInt64, answerBy: UInt64,
                                   handle: ExchangeAbortHandle) async throws(UpstreamError) -> ExchangeProgress {
        var wire: [UInt8] = []
        wire.reserveCapacity(512 + request.body.count)
        // The caller's head, written straight into the wire buffer with the framing fields this
        // client owns (RFC 9112 6): `Content-Length` and `Transfer-Encoding` as given are
        // dropped, `Host` added when missing, then this body's own framing. Same bytes as editing
        // a copy of the head, without copying its field list.
        let head = request.head
        let stream = request.bodyStream
        var chunkedBody = false
        var contentLength: Int? = nil
        if let stream {
            if let length = stream.length { contentLength = length } else { chunkedBody = true }
        } else if !request.body.isEmpty || head.method == "POST" || head.method == "PUT" || head.method == "PATCH" {
            contentLength = request.body.count
        }
        HTTPSerializer.appendRequestLine(method: head.method, target: head.target, to: &wire)
        var hasHost = false
        var hasUpgrade = false, connectionUpgrade = false   // asksUpgrade, found on the way
        let headers = head.headers
        headers.appendWire(to: &wire) { i in
            switch headers.nameLength(at: i) {
            case 4: if headers.name(at: i, is: "Host") { hasHost = true }
            case 7: if headers.name(at: i, is: "Upgrade") { hasUpgrade = true }
            case 10:
                if headers.name(at: i, is: "Connection") && headers.value(at: i, hasToken: "upgrade") {
                    connectionUpgrade = true
                }
            case 14: return headers.name(at: i, is: "Content-Length")
            case 17: return headers.name(at: i, is: "Transfer-Encoding")
            default: break
            }
            return false
        }
        if !hasHost { HTTPSerializer.appendField("Host", endpoint.authority, to: &wire) }
        if let contentLength {
            HTTPSerializer.appendField("Content-Length", decimal: contentLength, to: &wire)
        } else if chunkedBody {
            HTTPSerializer.appendField("Transfer-Encoding", "chunked", to: &wire)
        }
        HTTPSerializer.appendEndOfHead(to: &wire)
        wire.append(contentsOf: request.body)
        let upgrade = hasUpgrade && connectionUpgrade
        let startNs = lbk_monotonic_ns()
        let attemptSpan = deadline > startNs ? deadline - startNs : 0

        // A stale pooled connection may be retried once, and only for a replayable request.
        var allowStaleRetry = request.mayReplay && stream == nil
        var triedStale = false
        while true {
            if handle.isAborted { throw UpstreamError(kind: .aborted, requestSent: triedStale) }
            let (connection, reused) = try await acquire(endpoint, loop: loop, deadline: deadline, fresh: triedStale,
                                                         maxIdleNs: request.mayReplay ? idleTimeoutNs : nonReplayableMaxIdleNs)
            if !handle.attach(connection.socket) {
                connection.socket.close()
                throw UpstreamError(kind: .aborted, requestSent: triedStale)
            }
            connection.socket.loop.readBuffers.lend(to: &connection.buffer)
            do throws(ExchangeFailure) {
                try await write(wire, on: connection, deadline: deadline)
                var deadline = deadline
                if let stream {
                    // A streamed body takes as long as the client takes to send it (each part
                    // under the stall timeout); the backend then gets the full attempt time to
                    // answer, as if the body had been there at once.
                    try await writeBody(stream, chunked: chunkedBody, on: connection)
                    deadline = max(deadline, Self.deadline(after: .nanoseconds(Int64(clamping: attemptSpan))))
                }
                var started = false
                let parsed = try await readHead(connection, method: head.method, deadline: deadline,
                                                answerBy: answerBy, upgrade: upgrade, started: &started)
                guard let parsed else {
                    let pending = PendingExchange(connection: connection, endpoint: endpoint, loop: loop,
                                                  method: head.method, reused: reused, abortHandle: handle, upgrade: upgrade)
                    return .pending(pending)
                }
                return .complete(try await complete(parsed, connection, endpoint: endpoint, loop: loop, deadline: deadline,
                                                    reused: reused, handle: handle))
            } catch {
                connection.socket.close()
                if handle.isAborted { throw UpstreamError(kind: .aborted, requestSent: true) }
                if reused && allowStaleRetry && error.isStaleConnectionSymptom {
                    // The backend closed this pooled connection around the time we reused it
                    // (RFC 9112 9.3.1). The request is replayable: send it once more, fresh.
                    allowStaleRetry = false
                    triedStale = true
                    _ = handle.detach()
                    continue
                }
                var failure = error.clientError
                // Once any attempt wrote bytes, the backend may have the request.
                if triedStale { failure.requestSent = true }
                throw failure
            }
        }
    }

    /// Continues a ``ExchangeProgress/pending(_:)`` exchange until its response is complete.
    /// Cancelling the calling task aborts it.
    nonisolated(nonsending) package func finish(_ pending: PendingExchange, deadline: UInt64) async throws(UpstreamError) -> UpstreamResponse {
        let result: Result<UpstreamResponse, UpstreamError> = await withTaskCancellationHandler {
            do throws(UpstreamError) {
                return .success(try await finishUncancellable(pending, deadline: deadline))
            } catch {
                return .failure(error)
            }
        } onCancel: {
            pending.abortHandle.abort()
        }
        return try result.get()
    }

    nonisolated(nonsending) private func finishUncancellable(_ pending: PendingExchange, deadline: UInt64) async throws(UpstreamError) -> UpstreamResponse {
        let connection = pending.connection
        do throws(ExchangeFailure) {
            var started = false
            guard let parsed = try await readHead(connection, method: pending.method, deadline: deadline,
                                                  answerBy: .max, upgrade: pending.upgrade, started: &started) else {
                throw failure(.timedOut)
            }
            return try await complete(parsed, connection, endpoint: pending.endpoint, loop: pending.loop,
                                      deadline: deadline, reused: pending.reused, handle: pending.abortHandle)
        } catch {
            connection.socket.close()
            if pending.abortHandle.isAborted { throw UpstreamError(kind: .aborted, requestSent: true) }
            throw error.clientError
        }
    }

    /// After a final response head: reads a small or already-arrived body whole and returns the
    /// connection to the pool; streams anything else (the stream returns the connection when it
    /// reaches the end); hands an upgraded connection over as a tunnel.
    nonisolated(nonsending) private func complete(_ parsed: ParsedResponseHead, _ connection: PooledConnection, endpoint: UpstreamEndpoint,
                          loop: LBEventLoop, deadline: UInt64, reused: Bool,
                          handle: ExchangeAbortHandle?) async throws(ExchangeFailure) -> UpstreamResponse {
        connection.exchanges += 1
        if parsed.head.status == 101 {
            // readHead accepts a 101 only for a request that asked to upgrade.
            _ = handle?.detach()
            var response = UpstreamResponse(head: parsed.head, body: [], reusedConnection: reused)
            response.tunnel = UpstreamTunnel(connection: connection, loop: loop)
            return response
        }
        let codings = Self.transferCodings(parsed.head.headers)
        let keepAlive = parsed.keepAlive && parsed.framing != .untilClose
        var prefix: [UInt8] = []
        var decoder: ChunkedDecoder? = nil
        switch parsed.framing {
        case .none:
            finishExchange(connection, endpoint: endpoint, loop: loop, keepAlive: keepAlive, handle: handle)
            var r = UpstreamResponse(head: parsed.head, body: [], reusedConnection: reused)
            r.transferCodings = codings
            return r
        case .contentLength(let length):
            if length <= configuration.maxBufferedResponseBytes || connection.buffer.readableCount >= length {
                let body = try await readBody(connection, framing: parsed.framing, deadline: deadline)
                finishExchange(connection, endpoint: endpoint, loop: loop, keepAlive: keepAlive, handle: handle)
                var r = UpstreamResponse(head: parsed.head, body: body, reusedConnection: reused)
                r.transferCodings = codings
                return r
            }
        case .chunked:
            var d = ChunkedDecoder(limits: configuration.limits)
            if !connection.buffer.isEmpty {
                do throws(HTTPParseError) {
                    try connection.buffer.decodeChunked(&d, into: &prefix)
                } catch {
                    throw failure(.malformedResponse(error.reason))
                }
                if d.isComplete {
                    finishExchange(connection, endpoint: endpoint, loop: loop, keepAlive: keepAlive, handle: handle)
                    var r = UpstreamResponse(head: parsed.head, body: prefix, reusedConnection: reused)
                    r.transferCodings = codings
                    return r
                }
            }
            decoder = d
        case .untilClose:
            break
        }
        let reader = UpstreamBodyReader(client: self, connection: connection, endpoint: endpoint, loop: loop,
                                        framing: parsed.framing, decoder: decoder, prefix: prefix,
                                        keepAlive: keepAlive, handle: handle, stall: configuration.bodyStallTimeout)
        var length: Int? = nil
        if case .contentLength(let n) = parsed.framing { length = n }
        var r = UpstreamResponse(head: parsed.head, body: [], reusedConnection: reused)
        r.bodyStream = LBBodyStream(source: reader, length: length)
        r.transferCodings = codings
        return r
    }

    /// The connection is done with its exchange: back to the pool when it can carry another.
    func finishExchange(_ connection: PooledConnection, endpoint: UpstreamEndpoint, loop: LBEventLoop,
                        keepAlive: Bool, handle: ExchangeAbortHandle?) {
        // Detach from the abort handle first: once pooled, the connection belongs to the pool.
        let stillOurs = handle?.detach() ?? true
        if stillOurs && keepAlive {
            release(connection, to: endpoint, loop: loop)
        } else {
            connection.socket.close()
        }
    }

    /// The codings of `Transfer-Encoding` other than `chunked`, in order (RFC 9112 6.1).
    static func transferCodings(_ headers: HeaderFields) -> [String] {
        var codings: [String] = []
        for value in headers["Transfer-Encoding"] {
            for token in value.split(separator: ",") {
                let t = token.trimmingASCIIWhitespace()
                if !t.isEmpty && !HeaderFields.namesEqual(String(t), "chunked") { codings.append(String(t)) }
            }
        }
        return codings
    }

    /// Streams a request body after its head: each part is written before the next is read.
    nonisolated(nonsending) private func writeBody(_ stream: LBBodyStream, chunked: Bool, on connection: PooledConnection) async throws(ExchangeFailure) {
        var sent = 0
        while true {
            let chunk: [UInt8]?
            do {
                chunk = try await stream.next()
            } catch {
                throw ExchangeFailure(clientError: UpstreamError(kind: .requestBodyFailed(error.message), requestSent: true),
                                      isStaleConnectionSymptom: false)
            }
            let deadline = Self.deadline(after: configuration.bodyStallTimeout)
            guard let chunk else {
                if chunked { try await write(Array("0\r\n\r\n".utf8), on: connection, deadline: deadline) }
                if let length = stream.length, sent != length {
                    throw ExchangeFailure(clientError: UpstreamError(kind: .requestBodyFailed("body ended after \(sent) of \(length) bytes"), requestSent: true),
                                          isStaleConnectionSymptom: false)
                }
                return
            }
            if chunk.isEmpty { continue }
            sent += chunk.count
            if chunked {
                var framed: [UInt8] = []
                framed.reserveCapacity(chunk.count + 16)
                framed.append(contentsOf: String(chunk.count, radix: 16).utf8)
                framed.append(13); framed.append(10)
                framed.append(contentsOf: chunk)
                framed.append(13); framed.append(10)
                try await write(framed, on: connection, deadline: deadline)
            } else {
                try await write(chunk, on: connection, deadline: deadline)
            }
        }
    }

    // MARK: Pool

    nonisolated(nonsending) private func acquire(_ endpoint: UpstreamEndpoint, loop: LBEventLoop, deadline: UInt64, fresh: Bool,
                         maxIdleNs idleLimit: UInt64) async throws(UpstreamError) -> (PooledConnection, Bool) {
        let now = lbk_monotonic_ns()
        if !fresh {
            let pool = endpoint.pools[loop.index % endpoint.pools.count]
            while let candidate = pool.idle.withLock({ $0.popLast() }) {
                // Readable while idle means EOF or unsolicited bytes: the backend is done with it.
                if candidate.socket.hasPendingReadEvent || now &- candidate.lastUsed > idleLimit || candidate.socket.loop !== loop {
                    candidate.socket.close()
                    continue
                }
                return (candidate, true)
            }
        }
        let connectDeadline = min(deadline, now &+ connectTimeoutNs)
        do {
            let socket = try await Socket.connect(to: endpoint.address, loop: loop, deadline: connectDeadline)
            return (PooledConnection(socket: socket, endpoint: endpoint, now: now), false)
        } catch {
            switch error {
            case .connectionRefused: throw UpstreamError(kind: .connectRefused, requestSent: false)
            case .timedOut: throw UpstreamError(kind: .connectTimeout, requestSent: false)
            default: throw UpstreamError(kind: .connectFailed(error.description), requestSent: false)
            }
        }
    }

    func release(_ connection: PooledConnection, to endpoint: UpstreamEndpoint, loop: LBEventLoop) {
        guard connection.buffer.isEmpty else {
            // Bytes after a complete response: the backend is out of sync; do not reuse.
            connection.socket.close()
            return
        }
        connection.lastUsed = lbk_monotonic_ns()
        // An idle pooled connection holds no read buffer; the next exchange borrows one.
        connection.socket.loop.readBuffers.reclaim(&connection.buffer)
        let pool = endpoint.pools[loop.index % endpoint.pools.count]
        let max = configuration.maxIdlePerLoop
        let kept = pool.idle.withLock { p -> Bool in
            guard p.count < max else { return false }
            p.append(connection)
            return true
        }
        if !kept { connection.socket.close() }
    }

    // MARK: Exchange

    struct ExchangeFailure: Error {
        var clientError: UpstreamError
        /// No response byte arrived and the connection broke (EOF/reset) — the stale-pool shape.
        var isStaleConnectionSymptom: Bool
    }

    nonisolated(nonsending) private func write(_ wire: [UInt8], on connection: PooledConnection, deadline: UInt64) async throws(ExchangeFailure) {
        do {
            try await connection.socket.write(wire, deadline: deadline)
        } catch {
            let stale = error == .connectionReset || error == .closed
            throw ExchangeFailure(clientError: mapIO(error, sent: true), isStaleConnectionSymptom: stale)
        }
    }

    /// Reads the final response head (interim 1xx responses are skipped). Returns nil when no byte
    /// arrived by `answerBy` (the exchange stays usable); throws on errors and at `deadline`.
    nonisolated(nonsending) private func readHead(_ connection: PooledConnection, method: String, deadline: UInt64, answerBy: UInt64,
                          upgrade: Bool, started: inout Bool) async throws(ExchangeFailure) -> ParsedResponseHead? {
        var scanFrom = 0
        let limits = configuration.limits
        while true {
            if !connection.buffer.isEmpty {
                started = true
                let parsed: ParsedResponseHead?
                do throws(HTTPParseError) {
                    parsed = try connection.buffer.parseResponseHead(method: method, limits: limits, scanFrom: scanFrom)
                } catch {
                    throw failure(.malformedResponse(error.reason))
                }
                if let parsed {
                    if parsed.head.status == 101 {
                        // Final, never interim (RFC 9110 15.2.2): the connection now speaks
                        // another protocol. Only acceptable when we asked for it.
                        guard upgrade else { throw failure(.malformedResponse("101 Switching Protocols to a request that did not ask to upgrade")) }
                        return parsed
                    }
                    if parsed.head.status >= 100 && parsed.head.status < 200 {
                        scanFrom = 0
                        continue  // 100 Continue / 103 Early Hints: skip interim responses
                    }
                    return parsed
                }
                scanFrom = connection.buffer.readableCount
            }
            let soft = !started && answerBy < deadline
            let n: Int
            do {
                n = try await connection.socket.read(into: &connection.buffer, deadline: soft ? answerBy : deadline)
            } catch {
                if soft && error == .timedOut { return nil }
                throw ExchangeFailure(clientError: mapIO(error, sent: true),
                                      isStaleConnectionSymptom: !started && error == .connectionReset)
            }
            if n == 0 {
                throw ExchangeFailure(clientError: UpstreamError(kind: .connectionReset, requestSent: true),
                                      isStaleConnectionSymptom: !started)
            }
        }
    }

    /// Reads a whole `Content-Length` body (small, or already in the buffer).
    nonisolated(nonsending) private func readBody(_ connection: PooledConnection, framing: HTTPBodyFraming,
                          deadline: UInt64) async throws(ExchangeFailure) -> [UInt8] {
        guard case .contentLength(let length) = framing else { return [] }
        if connection.buffer.readableCount >= length { return connection.buffer.take(length) }
        var body: [UInt8] = []
        body.append(contentsOf: connection.buffer.take(length))
        while body.count < length {
            try await readMore(connection, deadline: deadline, eofIsError: true)
            body.append(contentsOf: connection.buffer.take(length - body.count))
        }
        return body
    }

    /// Reads more bytes; returns false at EOF when `eofIsError` is false.
    @discardableResult
    nonisolated(nonsending) private func readMore(_ connection: PooledConnection, deadline: UInt64, eofIsError: Bool) async throws(ExchangeFailure) -> Bool {
        let n: Int
        do {
            n = try await connection.socket.read(into: &connection.buffer, deadline: deadline)
        } catch {
            throw ExchangeFailure(clientError: mapIO(error, sent: true), isStaleConnectionSymptom: false)
        }
        if n == 0 {
            if eofIsError { throw failure(.connectionReset) }
            return false
        }
        return true
    }

    private func failure(_ kind: UpstreamError.Kind) -> ExchangeFailure {
        ExchangeFailure(clientError: UpstreamError(kind: kind, requestSent: true), isStaleConnectionSymptom: false)
    }

    private func mapIO(_ error: SocketError, sent: Bool) -> UpstreamError {
        switch error {
        case .timedOut: UpstreamError(kind: .timedOut, requestSent: sent)
        default: UpstreamError(kind: .connectionReset, requestSent: sent)
        }
    }
}
