// UpstreamClient and the control flow of an exchange: send (with the stale-connection retry),
// pending and finish, completing a response (whole, streamed or tunnel). Its value types are in
// UpstreamTypes.swift, the pool in HTTPClient+Pool.swift, the connection I/O in HTTPClient+IO.swift.

import LBKitPolicy
internal import CLBKitShim
import Synchronization

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
    let connectTimeoutNs: UInt64

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
        deadline(afterNanoseconds: UInt64(max(0, timeout.nanosecondsClamped)))
    }

    /// ``deadline(after:)`` for a timeout already in nanoseconds.
    @inline(__always)
    package static func deadline(afterNanoseconds ns: UInt64) -> UInt64 {
        let (sum, overflow) = lbk_monotonic_ns().addingReportingOverflow(ns)
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
        // A task nothing can cancel needs no cancellation handler (see
        // LBRequestContext.runsInUncancellableTask), nor a handle unless the caller has one.
        guard watchesCancellation else {
            return try await sendUncancellable(request, to: endpoint, on: loop, deadline: deadline, answerBy: answerBy, abortHandle: abortHandle)
        }
        let handle = abortHandle ?? ExchangeAbortHandle()
        let result: Result<ExchangeProgress, UpstreamError> = await withTaskCancellationHandler {
            do throws(UpstreamError) {
                return .success(try await sendUncancellable(request, to: endpoint, on: loop, deadline: deadline,
                                                            answerBy: answerBy, abortHandle: handle))
            } catch {
                return .failure(error)
            }
        } onCancel: {
            handle.abort()
        }
        return try result.get()
    }

    /// ``send(_:to:on:deadline:answerBy:abortHandle:watchesCancellation:)`` without a
    /// cancellation handler, for a caller whose task nothing can cancel (see
    /// `LBRequestContext.runsInUncancellableTask`): called directly, it saves the wrapper's
    /// async call (a task allocation) on every request.
    nonisolated(nonsending) package func sendUncancellable(_ request: UpstreamRequest, to endpoint: UpstreamEndpoint, on loop: LBEventLoop,
                                   deadline: UInt64, answerBy: UInt64,
                                   abortHandle: ExchangeAbortHandle? = nil) async throws(UpstreamError) -> ExchangeProgress {
        // Nobody else can abort an exchange that was given no handle until it becomes pending:
        // it runs without one, and gets one then (`attachedHandle`).
        let handle: ExchangeAbortHandle? = abortHandle
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
        } else if !request.body.isEmpty || head.method.isMethod("POST") || head.method.isMethod("PUT") || head.method.isMethod("PATCH") {
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
            HTTPSerializer.appendContentLength(contentLength, to: &wire)
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
            if handle?.isAborted == true { throw UpstreamError(kind: .aborted, requestSent: triedStale) }
            // A warm pool's connection is taken synchronously (no async call); a new one is connected.
            let now = lbk_monotonic_ns()
            let connection: PooledConnection
            let reused: Bool
            if !triedStale, let idle = takeIdle(endpoint, loop: loop, now: now,
                                                maxIdleNs: request.mayReplay ? idleTimeoutNs : nonReplayableMaxIdleNs) {
                (connection, reused) = (idle, true)
            } else {
                (connection, reused) = (try await connect(endpoint, loop: loop, deadline: deadline, now: now), false)
            }
            if let handle, !handle.attach(connection.socket) {
                connection.socket.close()
                throw UpstreamError(kind: .aborted, requestSent: triedStale)
            }
            do throws(ExchangeFailure) {
                // Usually the whole request fits the send buffer: written without an async call.
                do throws(SocketError) {
                    let sent = try connection.socket.sendNow(wire)
                    if sent < wire.count { try await connection.socket.write(wire, from: sent, deadline: deadline) }
                } catch {
                    throw writeFailure(error)
                }
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
                                                  method: head.method, reused: reused,
                                                  abortHandle: handle ?? Self.attachedHandle(connection),
                                                  upgrade: upgrade)
                    return .pending(pending)
                }
                // A body already in the buffer (the common small answer) completes synchronously.
                if let done = completeNow(parsed, connection, endpoint: endpoint, loop: loop, reused: reused, handle: handle) {
                    return .complete(done)
                }
                return .complete(try await complete(parsed, connection, endpoint: endpoint, loop: loop, deadline: deadline,
                                                    reused: reused, handle: handle))
            } catch {
                connection.socket.close()
                if handle?.isAborted == true { throw UpstreamError(kind: .aborted, requestSent: true) }
                if reused && allowStaleRetry && error.isStaleConnectionSymptom {
                    // The backend closed this pooled connection around the time we reused it
                    // (RFC 9112 9.3.1). The request is replayable: send it once more, fresh.
                    allowStaleRetry = false
                    triedStale = true
                    _ = handle?.detach()
                    continue
                }
                var failure = error.clientError
                // Once any attempt wrote bytes, the backend may have the request.
                if triedStale { failure.requestSent = true }
                throw failure
            }
        }
    }

    /// A new abort handle attached to `connection`: an exchange given none gets one only when it
    /// becomes pending, the first moment anyone else could abort it (an allocation and a lock
    /// less for every replayable request answered before its hedge point).
    private static func attachedHandle(_ connection: PooledConnection) -> ExchangeAbortHandle {
        let handle = ExchangeAbortHandle()
        _ = handle.attach(connection.socket)   // a new handle is not aborted: attaching succeeds
        return handle
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
    /// The response when its whole body is already in the buffer (or it has none): no async
    /// call for the common small answer. Nil when ``complete(_:_:endpoint:loop:deadline:reused:handle:)``
    /// has to read or stream the body (then nothing was consumed).
    @inline(__always)
    private func completeNow(_ parsed: ParsedResponseHead, _ connection: PooledConnection, endpoint: UpstreamEndpoint,
                             loop: LBEventLoop, reused: Bool, handle: ExchangeAbortHandle?) -> UpstreamResponse? {
        guard parsed.head.status != 101 else { return nil }
        let body: [UInt8]
        switch parsed.framing {
        case .none:
            body = []
        case .contentLength(let length) where connection.buffer.readableCount >= length:
            body = connection.buffer.take(length)
        default:
            return nil
        }
        connection.exchanges += 1
        // Content-Length framing means no Transfer-Encoding field (the parser's rule): no codings.
        let codings = parsed.framing == .none ? Self.transferCodings(parsed.head.headers) : []
        finishExchange(connection, endpoint: endpoint, loop: loop, keepAlive: parsed.keepAlive, handle: handle)
        var r = UpstreamResponse(head: parsed.head, body: body, reusedConnection: reused)
        r.transferCodings = codings
        return r
    }

    nonisolated(nonsending) private func complete(_ parsed: ParsedResponseHead, _ connection: PooledConnection, endpoint: UpstreamEndpoint,
                          loop: LBEventLoop, deadline: UInt64, reused: Bool,
                          handle: ExchangeAbortHandle?) async throws(ExchangeFailure) -> UpstreamResponse {
        if let done = completeNow(parsed, connection, endpoint: endpoint, loop: loop, reused: reused, handle: handle) { return done }
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
}
