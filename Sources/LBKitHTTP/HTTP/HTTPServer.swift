import LBKitPolicy
internal import CLBKitShim
import Glibc
import Synchronization

/// Our HTTP/1.1 server: one listener, connections spread over an ``LBEventLoopGroup``, each served by a
/// task pinned to its loop that calls an async ``HTTPHandler``.
///
/// Keep-alive, pipelining (answered in order), HTTP/1.0 and 1.1, Content-Length and chunked request
/// bodies, `Expect: 100-continue`, strict parsing with limits (431/413/400/501/505), header and idle
/// timeouts, and graceful shutdown.
///
/// ```swift
/// let group = try LBEventLoopGroup()
/// let server = HTTP1Server(configuration: .init(host: "127.0.0.1", port: 8080), group: group,
///                         handler: ClosureHandler { _, _ in .json(status: 200, "{\"ok\":true}") })
/// try server.start()
/// // ...
/// await server.shutdown(timeout: .seconds(10))
/// ```
public final class HTTP1Server: Sendable, ParkedSocketOwner {
    /// The configuration the server was created with.
    public let configuration: HTTP1ServerConfiguration
    /// The loops connections are spread over.
    public let group: LBEventLoopGroup
    let handler: any HTTPHandler
    /// `handler` when it is one of ours that can be called without a task switch.
    let inlineHandler: (any InlineHTTPHandler & AnyObject)?
    /// Whether the handler chain stays on its caller's executor (see ``startConnectionTask(_:on:)``).
    let handlerStaysOnCallerExecutor: Bool
    /// The configuration's timeouts in nanoseconds, converted once: connections compute a
    /// deadline from them on every request (a `Duration` over 9.2 s costs a 128-bit division).
    let timeoutsNs: TimeoutsNs

    struct TimeoutsNs {
        var idle: UInt64
        var header: UInt64
        var write: UInt64

        init(_ c: HTTP1ServerConfiguration) {
            idle = UInt64(max(0, c.idleTimeout.nanosecondsClamped))
            header = UInt64(max(0, c.headerTimeout.nanosecondsClamped))
            write = UInt64(max(0, c.writeTimeout.nanosecondsClamped))
        }
    }

    private let listener = Mutex<Socket?>(nil)
    private let connections = Mutex<ConnectionTable>(ConnectionTable())
    private let draining = Atomic<Bool>(false)
    private let acceptTask = Mutex<Task<Void, Never>?>(nil)
    /// Request-body bytes buffered by all connections now (see `bufferedBodyBudget`).
    private let bufferedBodyBytes = Atomic<Int>(0)
    /// Idle keep-alive connections parked in the loops (not in `connections`).
    private let parkedCount = Atomic<Int>(0)
    /// The port the listener is bound to (for the request context of a resumed connection).
    private let boundPort = Atomic<Int>(0)

    /// Creates a server; call ``start()`` to listen.
    public init(configuration: HTTP1ServerConfiguration, group: LBEventLoopGroup, handler: some HTTPHandler) {
        self.configuration = configuration
        self.group = group
        self.handler = handler
        self.inlineHandler = handler.inlineObject
        self.handlerStaysOnCallerExecutor = inlineHandler?.staysOnCallerExecutor ?? false
        self.timeoutsNs = TimeoutsNs(configuration)
    }

    /// Binds and starts accepting. Throws when the address cannot be bound (e.g. port in use).
    @discardableResult
    public func start() throws(HTTPServerError) -> IPSocketAddress {
        let address: IPSocketAddress
        do {
            address = try IPSocketAddress(host: configuration.host, port: configuration.port)
        } catch {
            throw .invalidAddress("\(configuration.host):\(configuration.port): \(error)")
        }
        let loop = group.loops[0]
        let socket: Socket
        do {
            socket = try Socket.listen(on: address, loop: loop)
        } catch {
            if case .system(_, let code) = error, code == EADDRINUSE {
                throw .addressInUse(address.description)
            }
            throw .bindFailed(address.description, error)
        }
        listener.withLock { $0 = socket }
        boundPort.store(configuration.port == 0 ? (socket.localAddress?.port ?? 0) : configuration.port, ordering: .relaxed)
        let task = Task(executorPreference: loop) { await self.acceptLoop(socket) }
        acceptTask.withLock { $0 = task }
        return socket.localAddress ?? address
    }

    /// The bound address (after ``start()``).
    public var localAddress: IPSocketAddress? { listener.withLock { $0 }?.localAddress }

    /// Number of open client connections (parked idle ones included).
    public var connectionCount: Int { connections.withLock { $0.count } + parkedCount.load(ordering: .relaxed) }

    /// Number of idle keep-alive connections parked now (holding no task, buffer or socket object).
    var parkedConnectionCount: Int { parkedCount.load(ordering: .relaxed) }

    /// Request-body bytes all connections hold buffered now.
    public var bufferedRequestBodyBytes: Int { bufferedBodyBytes.load(ordering: .relaxed) }

    /// Takes `bytes` from the buffering budget; false when that would exceed it.
    func reserveBodyBudget(_ bytes: Int) -> Bool {
        let limit = configuration.bufferedBodyBudget
        let after = bufferedBodyBytes.add(bytes, ordering: .relaxed).newValue
        if after > limit {
            bufferedBodyBytes.subtract(bytes, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Returns `bytes` to the buffering budget.
    func releaseBodyBudget(_ bytes: Int) {
        bufferedBodyBytes.subtract(bytes, ordering: .relaxed)
    }

    /// Whether ``shutdown(timeout:)`` has begun.
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    /// Graceful shutdown: stop accepting, close idle keep-alive connections, let in-flight requests
    /// finish (their responses carry `Connection: close`), and force-close what is left after `timeout`.
    nonisolated(nonsending) public func shutdown(timeout: Duration = .seconds(10)) async {
        draining.store(true, ordering: .relaxed)
        if let socket = listener.withLock({ $0 }) {
            socket.interruptIdle()
            socket.close()
        }
        await acceptTask.withLock { $0 }?.value
        for socket in connections.withLock({ $0.all }) { socket.interruptIdle() }
        for loop in group.loops { loop.closeParked(owner: self) }
        let deadline = lbk_monotonic_ns() &+ UInt64(max(0, timeout.nanosecondsClamped))
        while connectionCount > 0 && lbk_monotonic_ns() < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        for socket in connections.withLock({ $0.all }) { socket.close() }
        for loop in group.loops { loop.closeParked(owner: self) }
    }

    nonisolated(nonsending) private func acceptLoop(_ socket: Socket) async {
        var acceptBackoff = Duration.zero
        while !draining.load(ordering: .relaxed) {
            let accepted: (fd: Int32, peer: IPSocketAddress?)
            do {
                accepted = try await socket.accept()
                acceptBackoff = .zero
            } catch {
                if error == .shutdown || error == .closed { return }
                // A persistent accept error must not spin the loop: back off, up to 1 s.
                acceptBackoff = min(max(acceptBackoff * 2, .milliseconds(5)), .seconds(1))
                try? await Task.sleep(for: acceptBackoff)
                continue
            }
            let loop = group.next()
            let fd = accepted.fd, peer = accepted.peer
            let localPort = boundPort.load(ordering: .relaxed)
            startConnectionTask(.accepted(fd: fd, peer: peer, localPort: localPort), on: loop)
        }
    }

    /// Runs `connection` until it ends (then closes it) or parks while idle (then its loop keeps
    /// it, and ``parkedSocketReady(_:deadline:token:)`` continues it when bytes arrive).
    nonisolated(nonsending) func serve(_ connection: HTTP1ServerConnection, resuming: HTTP1ServerConnection.Resumption?) async {
        if await connection.run(resuming: resuming) == .parked { return }
        connectionEnded(connection.socket)
    }

    /// Closes a client connection and forgets it.
    func connectionEnded(_ socket: Socket) {
        socket.close()
        connections.withLock { $0.remove(socket) }
    }

    // MARK: Parked connections

    /// Parks an idle keep-alive connection in its loop (see ``HTTP1ServerConnection``): false when
    /// it cannot be parked now (the caller goes on waiting in its task, or closes when draining).
    func park(_ socket: Socket, served: Int, idleDeadline: UInt64) -> Bool {
        if isDraining { return false }
        parkedCount.add(1, ordering: .relaxed)   // before leaving the table: never counted as gone
        connections.withLock { $0.remove(socket) }
        guard socket.loop.park(socket, until: idleDeadline, owner: self, token: UInt64(max(0, served))) else {
            connections.withLock { $0.insert(socket) }
            parkedCount.subtract(1, ordering: .relaxed)
            return false
        }
        // Shutdown may have closed the parked connections just before this one parked.
        if isDraining { socket.loop.closeParked(owner: self) }
        return true
    }

    /// A parked connection has bytes (or EOF): serve it in a new task.
    func parkedSocketReady(_ socket: Socket, deadline: UInt64, token: UInt64) {
        connections.withLock { $0.insert(socket) }
        parkedCount.subtract(1, ordering: .relaxed)
        if isDraining { socket.interruptIdle() }
        let connection = HTTP1ServerConnection(
            socket: socket, server: self,
            context: LBRequestContext(peer: socket.peerAddress, localPort: boundPort.load(ordering: .relaxed), eventLoop: socket.loop))
        let resumption = HTTP1ServerConnection.Resumption(served: Int(clamping: token), idleDeadline: deadline)
        startConnectionTask(.resumed(connection, resumption), on: socket.loop)
    }

    /// How a connection's task begins.
    private enum ConnectionStart: Sendable {
        /// A new connection: adopt the accepted descriptor.
        case accepted(fd: Int32, peer: IPSocketAddress?, localPort: Int)
        /// A parked connection whose client sent bytes.
        case resumed(HTTP1ServerConnection, HTTP1ServerConnection.Resumption)
    }

    /// Starts a connection's task. With ``LBEventLoop/keepGlobalJobsOnLoopThreads()`` in effect
    /// and a handler chain that stays on its caller's executor, the task has no executor
    /// preference (none for the runtime to look up under a lock at every `await`): it runs where
    /// it is resumed, on the loop whose socket became ready. Otherwise it prefers `loop`, so that
    /// an embedder's concurrent handler still runs on a loop thread.
    private func startConnectionTask(_ start: ConnectionStart, on loop: LBEventLoop) {
        if handlerStaysOnCallerExecutor && LBEventLoop.keepsGlobalJobsOnLoopThreads {
            Task { await self.begin(start, on: loop) }
        } else {
            Task(executorPreference: loop) { await self.begin(start, on: loop) }
        }
    }

    nonisolated(nonsending) private func begin(_ start: ConnectionStart, on loop: LBEventLoop) async {
        switch start {
        case .accepted(let fd, let peer, let localPort):
            guard let client = try? Socket.adopt(fd: fd, loop: loop) else { return }
            connections.withLock { $0.insert(client) }
            if draining.load(ordering: .relaxed) { client.interruptIdle() }
            let connection = HTTP1ServerConnection(
                socket: client, server: self,
                context: LBRequestContext(peer: peer, localPort: localPort, eventLoop: loop))
            await serve(connection, resuming: nil)
        case .resumed(let connection, let resumption):
            await serve(connection, resuming: resumption)
        }
    }

    /// A parked connection was closed (idle timeout, shutdown).
    func parkedSocketGone(token: UInt64) {
        parkedCount.subtract(1, ordering: .relaxed)
    }
}


/// Open client connections, for graceful shutdown.
struct ConnectionTable {
    private var sockets: [ObjectIdentifier: Socket] = [:]
    var count: Int { sockets.count }
    var all: [Socket] { Array(sockets.values) }
    mutating func insert(_ s: Socket) { sockets[ObjectIdentifier(s)] = s }
    mutating func remove(_ s: Socket) {
        sockets[ObjectIdentifier(s)] = nil
        // A dictionary never shrinks by itself: after a burst of thousands of connections, copy
        // the few left into a small one (amortised: at least 7/8 of the room was emptied first).
        if sockets.capacity > 4096 && sockets.count < sockets.capacity / 8 {
            var smaller: [ObjectIdentifier: Socket] = [:]
            smaller.reserveCapacity(sockets.count)
            for (key, socket) in sockets { smaller[key] = socket }
            sockets = smaller
        }
    }
    /// Room in the table (tests).
    var capacity: Int { sockets.capacity }
}

/// Why a server could not start.
public enum HTTPServerError: Error, Sendable, CustomStringConvertible {
    /// Another process listens on the address.
    case addressInUse(String)
    /// The host or port is not valid.
    case invalidAddress(String)
    /// bind/listen failed for another reason.
    case bindFailed(String, SocketError)

    public var description: String {
        switch self {
        case .addressInUse(let a): "address \(a) is already in use"
        case .invalidAddress(let a): "invalid listen address \(a)"
        case .bindFailed(let a, let e): "cannot listen on \(a): \(e)"
        }
    }
}
