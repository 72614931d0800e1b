internal import CLBKitShim
import Dispatch
import Glibc
import LBKitPolicy
import Synchronization

/// Settings of a ``RedisClient``.
package struct RedisClientConfiguration: Sendable {
    /// How long a TCP connect plus `AUTH`/`SELECT` may take.
    package var connectTimeout: Duration = .seconds(1)
    /// Default deadline of a command (or of a whole pipeline), from the call to its reply.
    package var commandTimeout: Duration = .seconds(1)
    /// Delay before the first reconnect attempt after a failed one; it doubles with each further
    /// failure (with ±20% jitter) up to ``maxReconnectDelay``. A connection that was working and
    /// broke is replaced at once, without a delay.
    package var reconnectDelay: Duration = .milliseconds(100)
    /// Longest delay between reconnect attempts.
    package var maxReconnectDelay: Duration = .seconds(1)
    /// Bounds on replies.
    package var limits = RESPParser.Limits()

    /// Defaults as documented per property.
    package init() {}
}

/// A Redis (RESP2) client on LBKit's event loops, with no dependencies: one pipelined connection
/// per event loop, made on first use; per-command deadlines; reconnection with exponential
/// back-off; optional `AUTH` and `SELECT` from the URL; `EVALSHA` that loads the script when the
/// server does not know it.
///
/// ```swift
/// func demo(group: LBEventLoopGroup) async throws {
///     let redis = try RedisClient(url: try RedisURL(parsing: "redis://127.0.0.1:6379/0"), group: group)
///     _ = try await redis.send(["SET", "greeting", "hello", "PX", "60000"])   // OK
///     let value = try await redis.send(["GET", "greeting"]).string            // "hello"
///     let replies = try await redis.pipeline([["INCR", "n"], ["INCR", "n"]])  // one write, one round trip
///     redis.close()
/// }
/// ```
///
/// Commands from a task running on one of the group's loops use that loop's connection (no
/// thread hop); commands from elsewhere are spread over the loops. Error replies (`-ERR ...`)
/// are returned as ``RESPValue/error(_:)`` values; failures to get a reply at all throw
/// ``RedisError``. While reconnecting backs off, commands fail at once with
/// ``RedisError/unavailable(retryIn:)`` instead of waiting.
package final class RedisClient: Sendable {
    /// Where the server is (the password is never printed by its description).
    package let url: RedisURL
    /// The client's settings.
    package let configuration: RedisClientConfiguration
    private let slots: [Slot]
    private let cursor = Atomic<Int>(0)
    private let counters = Counters()
    /// Reconnect back-off, shared by the slots (a server that is down is down for all of them).
    private let backoff = Mutex(Backoff())

    struct Backoff {
        /// Consecutive failed connection attempts.
        var failures = 0
        /// No attempt before this instant (monotonic ns).
        var retryAt: UInt64 = 0
    }

    final class Counters: Sendable {
        let connects = Atomic<Int>(0)
        let connectFailures = Atomic<Int>(0)
        let scriptLoads = Atomic<Int>(0)
    }

    final class Slot: Sendable {
        let loop: LBEventLoop
        let state = Mutex(SlotState())
        init(loop: LBEventLoop) { self.loop = loop }
    }

    struct SlotState {
        var connection: RedisConnection?
        var connecting = false
        var waiters: [UnsafeContinuation<Result<RedisConnection, RedisError>, Never>] = []
        var closed = false
    }

    /// Creates a client; no connection is made until the first command. The host name is
    /// resolved at each connection attempt, off the event loops (getaddrinfo blocks), so a name
    /// that does not resolve yet, or moves, is handled like a server that is down.
    package convenience init(url: RedisURL, group: LBEventLoopGroup, configuration: RedisClientConfiguration = RedisClientConfiguration()) {
        self.init(url: url, loops: group.loops, configuration: configuration)
    }

    /// Creates a client with one connection slot per loop in `loops` (at least one).
    package init(url: RedisURL, loops: [LBEventLoop], configuration: RedisClientConfiguration = RedisClientConfiguration()) {
        precondition(!loops.isEmpty, "RedisClient needs at least one event loop")
        self.url = url
        self.configuration = configuration
        slots = loops.map { Slot(loop: $0) }
    }

    /// Connections made so far (successful handshakes).
    package var connectionsOpened: Int { counters.connects.load(ordering: .relaxed) }
    /// Failed connection attempts so far.
    package var connectFailures: Int { counters.connectFailures.load(ordering: .relaxed) }
    /// `SCRIPT LOAD`s sent after a `NOSCRIPT` reply.
    package var scriptLoads: Int { counters.scriptLoads.load(ordering: .relaxed) }
    /// Whether at least one connection is open now.
    package var isConnected: Bool {
        slots.contains { slot in slot.state.withLock { s in s.connection.map { !$0.isClosed } ?? false } }
    }

    // MARK: Commands

    /// Sends one command and returns its reply. Fails with ``RedisError`` when no reply arrives
    /// within `timeout` (default ``RedisClientConfiguration/commandTimeout``), the connection
    /// breaks, or reconnection is backing off.
    nonisolated(nonsending) package func send(_ arguments: [String], timeout: Duration? = nil) async throws(RedisError) -> RESPValue {
        var wire: [UInt8] = []
        RESPEncoder.appendCommand(arguments, to: &wire)
        return try await execute(wire, count: 1, timeout: timeout)[0]
    }

    /// Sends one command made of binary-safe arguments.
    nonisolated(nonsending) package func send(bytes arguments: [[UInt8]], timeout: Duration? = nil) async throws(RedisError) -> RESPValue {
        var wire: [UInt8] = []
        RESPEncoder.appendCommand(bytes: arguments, to: &wire)
        return try await execute(wire, count: 1, timeout: timeout)[0]
    }

    /// Sends several commands in one write on one connection and returns their replies in order
    /// (one round trip); `timeout` applies to the whole pipeline.
    nonisolated(nonsending) package func pipeline(_ commands: [[String]], timeout: Duration? = nil) async throws(RedisError) -> [RESPValue] {
        var wire: [UInt8] = []
        for command in commands { RESPEncoder.appendCommand(command, to: &wire) }
        return try await execute(wire, count: commands.count, timeout: timeout)
    }

    /// Runs `script` with `EVALSHA`; on a `NOSCRIPT` reply sends `SCRIPT LOAD` and the `EVALSHA`
    /// again in one pipeline. Returns the script's reply (an error reply if the script failed).
    nonisolated(nonsending) package func evalScript(_ script: RedisScript, keys: [String], arguments: [String], timeout: Duration? = nil) async throws(RedisError) -> RESPValue {
        let deadline = Self.deadline(after: timeout ?? configuration.commandTimeout)
        let eval = ["EVALSHA", script.sha1, String(keys.count)] + keys + arguments
        var wire: [UInt8] = []
        RESPEncoder.appendCommand(eval, to: &wire)
        let first = try await execute(wire, count: 1, deadline: deadline)[0]
        guard case .error(let message) = first, message.hasPrefix("NOSCRIPT") else { return first }
        counters.scriptLoads.add(1, ordering: .relaxed)
        var retry: [UInt8] = []
        RESPEncoder.appendCommand(["SCRIPT", "LOAD", script.source], to: &retry)
        retry.append(contentsOf: wire)
        let replies = try await execute(retry, count: 2, deadline: deadline)
        if case .error = replies[0] { return replies[0] }
        return replies[1]
    }

    /// Closes every connection; commands waiting fail with ``RedisError/shutdown`` and later
    /// ones are refused.
    package func close() {
        for slot in slots {
            let (connection, waiters) = slot.state.withLock { s in
                s.closed = true
                let w = s.waiters
                s.waiters = []
                return (s.connection, w)
            }
            connection?.close(.shutdown)
            for waiter in waiters { waiter.resume(returning: .failure(.shutdown)) }
        }
    }

    // MARK: Internals

    /// Monotonic ns `timeout` from now (saturating).
    static func deadline(after timeout: Duration) -> UInt64 {
        let (sum, overflow) = lbk_monotonic_ns().addingReportingOverflow(UInt64(max(0, timeout.nanosecondsClamped)))
        return overflow ? .max : sum
    }

    nonisolated(nonsending) private func execute(_ wire: [UInt8], count: Int, timeout: Duration?) async throws(RedisError) -> [RESPValue] {
        try await execute(wire, count: count, deadline: Self.deadline(after: timeout ?? configuration.commandTimeout))
    }

    nonisolated(nonsending) private func execute(_ wire: [UInt8], count: Int, deadline: UInt64) async throws(RedisError) -> [RESPValue] {
        let connection = try await connection(on: pickSlot())
        return try await connection.execute(wire, count: count, deadline: deadline).get()
    }

    /// The slot of the loop the caller runs on, else the next one in rotation.
    private func pickSlot() -> Slot {
        if slots.count == 1 { return slots[0] }
        for slot in slots where slot.loop.inEventLoop { return slot }
        return slots[cursor.add(1, ordering: .relaxed).oldValue % slots.count]
    }

    private enum Plan {
        case use(RedisConnection)
        case fail(RedisError)
        case connect
    }

    /// The slot's open connection; connects (or waits for the connect in progress) if there is none.
    nonisolated(nonsending) private func connection(on slot: Slot) async throws(RedisError) -> RedisConnection {
        let result = await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<RedisConnection, RedisError>, Never>) in
            let now = lbk_monotonic_ns()
            let retryAt = backoff.withLock { $0.retryAt }
            let plan = slot.state.withLock { s -> Plan? in
                if s.closed { return .fail(.shutdown) }
                if let c = s.connection {
                    if !c.isClosed { return .use(c) }
                    s.connection = nil
                }
                if s.connecting {
                    s.waiters.append(continuation)
                    return nil
                }
                if now < retryAt { return .fail(.unavailable(retryIn: .nanoseconds(Int64(retryAt - now)))) }
                s.connecting = true
                return .connect
            }
            switch plan {
            case nil: break
            case .use(let c): continuation.resume(returning: .success(c))
            case .fail(let e): continuation.resume(returning: .failure(e))
            case .connect:
                Task(executorPreference: slot.loop) { [self] in
                    continuation.resume(returning: await self.connect(slot))
                }
            }
        }
        return try result.get()
    }

    /// Makes a connection for `slot` and hands it (or the failure) to every command waiting for it.
    nonisolated(nonsending) private func connect(_ slot: Slot) async -> Result<RedisConnection, RedisError> {
        let result = await handshake(on: slot.loop)
        let (waiters, closedMeanwhile) = slot.state.withLock { s -> ([UnsafeContinuation<Result<RedisConnection, RedisError>, Never>], Bool) in
            s.connecting = false
            let w = s.waiters
            s.waiters = []
            if case .success(let c) = result {
                if s.closed { return (w, true) }
                s.connection = c
            }
            return (w, false)
        }
        backoff.withLock { b in
            if case .success = result {
                b.failures = 0
                b.retryAt = 0
            } else {
                b.failures += 1
                b.retryAt = lbk_monotonic_ns() &+ UInt64(reconnectDelay(afterFailures: b.failures).nanosecondsClamped)
            }
        }
        var outcome = result
        if closedMeanwhile, case .success(let c) = result {
            c.close(.shutdown)
            outcome = .failure(.shutdown)
        }
        switch outcome {
        case .success: counters.connects.add(1, ordering: .relaxed)
        case .failure: counters.connectFailures.add(1, ordering: .relaxed)
        }
        for waiter in waiters { waiter.resume(returning: outcome) }
        return outcome
    }

    /// TCP connect, then `AUTH` and `SELECT` (pipelined) when the URL asks for them.
    nonisolated(nonsending) private func handshake(on loop: LBEventLoop) async -> Result<RedisConnection, RedisError> {
        let deadline = Self.deadline(after: configuration.connectTimeout)
        let address: IPSocketAddress
        switch await resolve() {
        case .success(let a): address = a
        case .failure(let e): return .failure(e)
        }
        let socket: Socket
        do {
            socket = try await Socket.connect(to: address, loop: loop, deadline: deadline)
        } catch {
            return .failure(.connectFailed("\(address): \(error)"))
        }
        let connection = RedisConnection(socket: socket, limits: configuration.limits)
        var commands: [[String]] = []
        if let password = url.password {
            commands.append(url.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        if url.database != 0 { commands.append(["SELECT", String(url.database)]) }
        guard !commands.isEmpty else { return .success(connection) }
        var wire: [UInt8] = []
        for command in commands { RESPEncoder.appendCommand(command, to: &wire) }
        switch await connection.execute(wire, count: commands.count, deadline: deadline) {
        case .success(let replies):
            for (command, reply) in zip(commands, replies) {
                if case .error(let message) = reply {
                    connection.close(.handshakeFailed(message))
                    return .failure(.handshakeFailed("\(command[0]): \(message)"))
                }
            }
            return .success(connection)
        case .failure(let error):
            connection.close(error)
            return .failure(.handshakeFailed(error.description))
        }
    }

    /// The server's address: IP literals at once, names with getaddrinfo on a Dispatch thread.
    nonisolated(nonsending) private func resolve() async -> Result<IPSocketAddress, RedisError> {
        let host = url.host, port = url.port
        if let literal = IPSocketAddress(literal: host, port: port) { return .success(literal) }
        return await withCheckedContinuation { (c: CheckedContinuation<Result<IPSocketAddress, RedisError>, Never>) in
            DispatchQueue.global().async {
                do {
                    c.resume(returning: .success(try IPSocketAddress(host: host, port: port)))
                } catch {
                    c.resume(returning: .failure(.connectFailed("cannot resolve \(host): \(error)")))
                }
            }
        }
    }

    /// The back-off before attempt `failures + 1`: reconnectDelay x 2^(failures-1), capped, ±20%.
    private func reconnectDelay(afterFailures failures: Int) -> Duration {
        let base = Double(max(0, configuration.reconnectDelay.nanosecondsClamped))
        let cap = Double(max(0, configuration.maxReconnectDelay.nanosecondsClamped))
        let exponential = min(cap, base * Double(1 << min(max(failures - 1, 0), 30)))
        let jitter = Double.random(in: 0.8...1.2)
        return .nanoseconds(Int64(min(exponential * jitter, 9e18)))
    }
}

extension IPSocketAddress {
    /// An IPv4 or IPv6 literal, without any name lookup; nil for a host name or a bad port.
    init?(literal host: String, port: Int) {
        guard (0...65535).contains(port) else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = in_port_t(UInt16(port).bigEndian)
            sa.sin_addr = v4
            self.init(storage: .v4(sa))
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = in_port_t(UInt16(port).bigEndian)
            sa.sin6_addr = v6
            self.init(storage: .v6(sa))
            return
        }
        return nil
    }
}
