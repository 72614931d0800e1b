import LBKitPolicy
import Synchronization
internal import CLBKitShim

/// A response body streamed from an upstream connection: each ``nextChunk()`` reads what the
/// framing allows (Content-Length, chunked, or until close), with a stall timeout per read. At
/// the end the connection goes back to the pool; abandoned early, it is closed (unread body
/// bytes would corrupt the next exchange).
///
/// `@unchecked Sendable`: single consumer (``BodySource``); the connection is checked out to
/// this reader alone until it releases or closes it.
final class UpstreamBodyReader: BodySource, @unchecked Sendable {
    private let client: UpstreamClient
    private let connection: PooledConnection
    private let endpoint: UpstreamEndpoint
    private let loop: LBEventLoop
    private var remaining: Int
    private var decoder: ChunkedDecoder?
    private let untilClose: Bool
    private var prefix: [UInt8]
    private let keepAlive: Bool
    private let handle: ExchangeAbortHandle?
    private let stall: Duration
    private var done = false
    private var started = false

    init(client: UpstreamClient, connection: PooledConnection, endpoint: UpstreamEndpoint, loop: LBEventLoop,
         framing: HTTPBodyFraming, decoder: ChunkedDecoder?, prefix: [UInt8], keepAlive: Bool,
         handle: ExchangeAbortHandle?, stall: Duration) {
        self.client = client
        self.connection = connection
        self.endpoint = endpoint
        self.loop = loop
        if case .contentLength(let n) = framing { remaining = n } else { remaining = 0 }
        self.decoder = decoder
        untilClose = framing == .untilClose
        self.prefix = prefix
        self.keepAlive = keepAlive
        self.handle = handle
        self.stall = stall
    }

    var hasStarted: Bool { started }

    func abandon() {
        guard !done else { return }
        done = true
        _ = handle?.detach()
        connection.socket.close()
    }

    nonisolated(nonsending) func nextChunk() async throws(BodyStreamError) -> [UInt8]? {
        if !prefix.isEmpty {
            started = true
            defer { prefix = [] }
            return prefix
        }
        if done { return nil }
        started = true
        while true {
            if var d = decoder {
                if !connection.buffer.isEmpty {
                    var out: [UInt8] = []
                    do throws(HTTPParseError) {
                        try connection.buffer.decodeChunked(&d, into: &out)
                    } catch {
                        fail()
                        throw BodyStreamError("malformed chunked response body: \(error.reason)")
                    }
                    decoder = d
                    if d.isComplete { finish() }
                    if !out.isEmpty { return out }
                    if done { return nil }
                }
            } else if untilClose {
                if !connection.buffer.isEmpty { return connection.buffer.take(connection.buffer.readableCount) }
            } else {
                if remaining == 0 {
                    finish()
                    return nil
                }
                if !connection.buffer.isEmpty {
                    let chunk = connection.buffer.take(min(remaining, 64 * 1024))
                    remaining -= chunk.count
                    if remaining == 0 { finish() }
                    return chunk
                }
            }
            let connection = self.connection
            let stall = self.stall
            let result: Result<Int, SocketError> = await withTaskCancellationHandler {
                do throws(SocketError) {
                    return .success(try await connection.socket.read(into: &connection.buffer,
                                                                     deadline: UpstreamClient.deadline(after: stall), chunk: 64 * 1024))
                } catch {
                    return .failure(error)
                }
            } onCancel: {
                connection.socket.close()
            }
            let n: Int
            switch result {
            case .success(let count): n = count
            case .failure(let error):
                fail()
                throw BodyStreamError(error == .timedOut ? "upstream body stalled for \(stall)" : "upstream connection failed: \(error)")
            }
            if n == 0 {
                if untilClose && decoder == nil {
                    finish()
                    return nil
                }
                fail()
                throw BodyStreamError("upstream closed the connection before the end of the body")
            }
        }
    }

    private func finish() {
        guard !done else { return }
        done = true
        client.finishExchange(connection, endpoint: endpoint, loop: loop, keepAlive: keepAlive && !untilClose, handle: handle)
    }

    private func fail() {
        guard !done else { return }
        done = true
        _ = handle?.detach()
        connection.socket.close()
    }
}

/// An upgraded upstream connection (`101 Switching Protocols`, e.g. WebSocket): relays bytes
/// between it and the client connection, both ways at once, until either side closes (its FIN
/// is passed on) or nothing moved either way for the idle timeout.
package final class UpstreamTunnel: ConnectionTunnel, @unchecked Sendable {
    // @unchecked: the connection is owned by the tunnel alone after the 101 (not pooled); the
    // upstream-to-client relay is the only user of its buffer.
    let connection: PooledConnection
    let loop: LBEventLoop

    init(connection: PooledConnection, loop: LBEventLoop) {
        self.connection = connection
        self.loop = loop
    }

    package func cancel() { connection.socket.close() }

    nonisolated(nonsending) package func run(client: Socket, pending: [UInt8], idleTimeout: Duration) async {
        let upstream = connection.socket
        let lastActivity = ActivityClock()
        let leftover = connection.buffer.take(connection.buffer.readableCount)
        let idleNs = UInt64(max(1, idleTimeout.nanosecondsClamped))
        await withTaskGroup(of: Void.self) { relays in
            relays.addTask(executorPreference: loop) {
                await Self.relay(from: client, to: upstream, first: pending, idleNs: idleNs, activity: lastActivity)
            }
            relays.addTask(executorPreference: loop) {
                await Self.relay(from: upstream, to: client, first: leftover, idleNs: idleNs, activity: lastActivity)
            }
        }
        upstream.close()
    }

    /// Copies `from` to `to` until EOF (then half-closes `to`) or failure or idleness (then closes
    /// both, which also ends the other direction).
    nonisolated(nonsending) private static func relay(from: Socket, to: Socket, first: [UInt8], idleNs: UInt64, activity: ActivityClock) async {
        if !first.isEmpty {
            do { try await to.write(first, deadline: lbk_monotonic_ns() &+ idleNs) } catch {
                from.close(); to.close()
                return
            }
        }
        var buffer = InboundBuffer(capacity: 16 * 1024)
        while true {
            let n: Int
            do {
                n = try await from.read(into: &buffer, deadline: activity.last &+ idleNs)
            } catch {
                if error == SocketError.timedOut && lbk_monotonic_ns() &- activity.last < idleNs {
                    continue   // the other direction was active: not idle yet
                }
                from.close(); to.close()
                return
            }
            if n == 0 {
                to.shutdownWrite()
                return
            }
            activity.touch()
            let bytes = buffer.take(buffer.readableCount)
            do {
                try await to.write(bytes, deadline: lbk_monotonic_ns() &+ idleNs)
            } catch {
                from.close(); to.close()
                return
            }
            activity.touch()
        }
    }
}

/// When a tunnel last moved a byte, either way (monotonic ns).
final class ActivityClock: Sendable {
    private let value = Atomic<UInt64>(lbk_monotonic_ns())
    var last: UInt64 { value.load(ordering: .relaxed) }
    func touch() { value.store(lbk_monotonic_ns(), ordering: .relaxed) }
}
