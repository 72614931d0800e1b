internal import CLBKitShim
import Synchronization

/// Why a Redis command failed. After ``timedOut`` and ``connectionClosed`` the command may or
/// may not have run on the server.
package enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No connection could be made (refused, timed out, unreachable).
    case connectFailed(String)
    /// `AUTH` or `SELECT` was refused after connecting.
    case handshakeFailed(String)
    /// The command's deadline passed before its reply arrived; its connection was closed (a late
    /// reply would put every later reply out of step).
    case timedOut
    /// The connection broke before the reply arrived.
    case connectionClosed(String)
    /// The server sent bytes that are not valid RESP2; the connection was closed.
    case protocolError(String)
    /// Reconnecting is backing off after failed attempts: no attempt is made for `retryIn`.
    case unavailable(retryIn: Duration)
    /// The client was closed.
    case shutdown

    package var description: String {
        switch self {
        case .connectFailed(let why): "connect failed: \(why)"
        case .handshakeFailed(let why): "handshake failed: \(why)"
        case .timedOut: "command timed out"
        case .connectionClosed(let why): "connection closed: \(why)"
        case .protocolError(let why): "protocol error: \(why)"
        case .unavailable(let d): "not connected (next attempt in \(d.milliseconds.rounded()) ms)"
        case .shutdown: "client closed"
        }
    }
}

/// One Redis connection on an event loop, pipelined: any task may submit commands at any time;
/// their bytes are coalesced into as few writes as possible and the replies, which Redis sends
/// in order, are matched to the submitters first in, first out.
///
/// A reader task pinned to the socket's loop reads and parses replies continuously (so a server
/// that closes an idle connection is noticed at once) with the earliest deadline of the
/// commands waiting as its read deadline; a submitter with an earlier deadline caps the wait in
/// progress (``Socket/capReadDeadline(_:)``). A writer task on the same loop runs only while there
/// are bytes to send. When a command's deadline passes, the connection is closed: the late
/// reply could never be told apart from the next one. Every failure closes the connection and
/// fails everything waiting on it.
package final class RedisConnection: Sendable {
    package let socket: Socket
    private let state: Mutex<State>

    struct Waiter {
        let continuation: UnsafeContinuation<Result<[RESPValue], RedisError>, Never>
        let expected: Int
        var replies: [RESPValue]
        let deadline: UInt64
    }

    struct State {
        var waiters: [Waiter] = []
        var head = 0
        var outgoing: [UInt8] = []
        var writing = false
        var closedBecause: RedisError?

        var pendingCount: Int { waiters.count - head }

        /// The earliest deadline of the commands waiting (.max when none).
        var earliestDeadline: UInt64 {
            var d = UInt64.max
            var i = head
            while i < waiters.count {
                d = min(d, waiters[i].deadline)
                i += 1
            }
            return d
        }
    }

    /// Wraps a connected socket and starts reading replies on its loop.
    package init(socket: Socket, limits: RESPParser.Limits = RESPParser.Limits()) {
        self.socket = socket
        state = Mutex(State())
        Task(executorPreference: socket.loop) { [self] in await self.readLoop(limits: limits) }
    }

    /// Whether the connection was closed (by either side or after a failure).
    package var isClosed: Bool { state.withLock { $0.closedBecause != nil } }

    /// Commands sent and not yet answered.
    package var pendingCount: Int { state.withLock { $0.pendingCount } }

    /// Sends `wire` (the encoding of `count` commands) and returns their `count` replies, or fails
    /// at `deadline` (monotonic ns). Error replies are values (``RESPValue/error(_:)``), not failures.
    nonisolated(nonsending) package func execute(_ wire: [UInt8], count: Int, deadline: UInt64) async -> Result<[RESPValue], RedisError> {
        guard count > 0 else { return .success([]) }
        return await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<[RESPValue], RedisError>, Never>) in
            let (refusal, startWriter) = state.withLock { s -> (RedisError?, Bool) in
                if let why = s.closedBecause { return (why, false) }
                var replies: [RESPValue] = []
                replies.reserveCapacity(count)
                s.waiters.append(Waiter(continuation: continuation, expected: count, replies: replies, deadline: deadline))
                s.outgoing.append(contentsOf: wire)
                if s.writing { return (nil, false) }
                s.writing = true
                return (nil, true)
            }
            if let refusal {
                continuation.resume(returning: .failure(refusal))
                return
            }
            socket.capReadDeadline(deadline)
            if startWriter {
                Task(executorPreference: socket.loop) { [self] in await self.writeLoop() }
            }
        }
    }

    /// Closes the connection; everything waiting fails with `reason` (or ``RedisError/timedOut``
    /// when its own deadline has passed). Idempotent.
    package func close(_ reason: RedisError = .connectionClosed("closed by the client")) {
        let failed = state.withLock { s -> [Waiter] in
            guard s.closedBecause == nil else { return [] }
            s.closedBecause = reason
            let rest = Array(s.waiters[s.head...])
            s.waiters = []
            s.head = 0
            s.outgoing = []
            return rest
        }
        socket.close()
        let now = lbk_monotonic_ns()
        for waiter in failed {
            waiter.continuation.resume(returning: .failure(waiter.deadline <= now ? .timedOut : reason))
        }
    }

    // MARK: Tasks

    nonisolated(nonsending) private func writeLoop() async {
        while true {
            let next = state.withLock { s -> ([UInt8], UInt64)? in
                if s.outgoing.isEmpty || s.closedBecause != nil {
                    s.writing = false
                    return nil
                }
                let bytes = s.outgoing
                s.outgoing = []
                return (bytes, s.earliestDeadline)
            }
            guard let (bytes, deadline) = next else { return }
            do {
                try await socket.write(bytes, deadline: deadline)
            } catch {
                // The write deadline is the earliest of the waiting commands': it has passed.
                close(error == .timedOut ? .timedOut : .connectionClosed("write failed: \(error)"))
                return
            }
        }
    }

    nonisolated(nonsending) private func readLoop(limits: RESPParser.Limits) async {
        var buffer = InboundBuffer(capacity: 16 * 1024)
        var parser = RESPParser(limits: limits)
        while true {
            do throws(RESPParseError) {
                while let reply = try parser.next(from: &buffer) {
                    guard deliver(reply) else {
                        close(.protocolError("a reply arrived with no command waiting for it"))
                        return
                    }
                }
            } catch {
                close(.protocolError(error.description))
                return
            }
            // Clear the cap before reading the deadlines: a cap set after this point is kept
            // (it belongs to a command that may not be in the list read below).
            socket.clearReadDeadlineCap()
            let deadline = state.withLock { $0.earliestDeadline }
            let n: Int
            do {
                n = try await socket.read(into: &buffer, deadline: deadline)
            } catch {
                switch error {
                case .timedOut:
                    let now = lbk_monotonic_ns()
                    if state.withLock({ $0.earliestDeadline <= now }) {
                        close(.connectionClosed("closed after a command timed out"))
                        return
                    }
                    continue  // a cap for a command already answered: read on
                case .closed:
                    close(.connectionClosed("socket closed"))
                    return
                default:
                    close(.connectionClosed(error.description))
                    return
                }
            }
            if n == 0 {
                close(.connectionClosed(parser.isMidReply || pendingCount > 0 ? "the server closed the connection before replying" : "the server closed the connection"))
                return
            }
        }
    }

    /// Hands `reply` to the oldest waiting command; false when no command waits for one.
    private func deliver(_ reply: RESPValue) -> Bool {
        let (known, done) = state.withLock { s -> (Bool, Waiter?) in
            guard s.head < s.waiters.count else { return (false, nil) }
            s.waiters[s.head].replies.append(reply)
            guard s.waiters[s.head].replies.count == s.waiters[s.head].expected else { return (true, nil) }
            let waiter = s.waiters[s.head]
            s.head += 1
            if s.head == s.waiters.count {
                s.waiters.removeAll(keepingCapacity: true)
                s.head = 0
            } else if s.head >= 64 && s.head * 2 >= s.waiters.count {
                s.waiters.removeFirst(s.head)
                s.head = 0
            }
            return (true, waiter)
        }
        if let done { done.continuation.resume(returning: .success(done.replies)) }
        return known
    }
}
