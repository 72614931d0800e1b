internal import CLBKitShim
import Glibc
import Synchronization

/// A non-blocking TCP socket registered with one ``LBEventLoop``, with async read, write, accept and
/// connect that suspend on edge-triggered readiness instead of blocking a thread.
///
/// Readiness bridging: the loop sets a `readable`/`writable` flag and resumes a stored continuation
/// under the same mutex, so there is no lost wake-up, no epoll_ctl per request and no speculative
/// EAGAIN read before suspending (after a short read the socket is known to be drained).
///
/// Each socket is used by one task at a time (its connection task); the loop thread only flips flags
/// and resumes continuations.
package final class Socket: Sendable, CustomStringConvertible {
    /// The file descriptor (valid until ``close()``).
    package let fd: Int32
    /// The loop that delivers this socket's events.
    package let loop: LBEventLoop

    private let registration = Atomic<UInt32>(0)
    private let state: Mutex<IOState>

    enum WaitResult: Sendable { case ready, timedOut, closed, shutdown }

    struct IOState {
        var readable = true
        var writable = true
        var drained = false
        /// The peer half-closed or the socket errored (RDHUP/HUP/ERR seen). Sticky: epoll reports it
        /// once (edge-triggered), possibly in the same edge as the last data, so a short read must
        /// not be taken as "nothing more to read" afterwards: the EOF/error is still to be read.
        var peerClosed = false
        var readWaiter: UnsafeContinuation<WaitResult, Never>?
        var writeWaiter: UnsafeContinuation<WaitResult, Never>?
        /// Deadline (monotonic ns) of the current read wait; .max = none. Separate from the
        /// write deadline: a tunnel reads and writes one socket from two tasks at once.
        var readDeadline: UInt64 = .max
        /// Deadline of the current write wait; .max = none.
        var writeDeadline: UInt64 = .max
        /// Deadline of the heap entry currently armed for this socket; .max = none.
        var armedAt: UInt64 = .max
        /// Whether the current read wait is an idle wait that shutdown may interrupt.
        var idleWait = false
        var shutdownRequested = false
        var closed = false
        /// Upper bound on the deadline of every read wait until ``clearReadDeadlineCap()`` (.max = none).
        var readDeadlineCap: UInt64 = .max
    }

    init(fd: Int32, loop: LBEventLoop, writable: Bool = true) {
        self.fd = fd
        self.loop = loop
        var s = IOState()
        s.writable = writable
        state = Mutex(s)
    }

    var generation: UInt32 { registration.load(ordering: .relaxed) }
    func setGeneration(_ g: UInt32) { registration.store(g, ordering: .relaxed) }

    /// Whether ``close()`` was called.
    package var isClosed: Bool { state.withLock { $0.closed } }

    package var description: String { "Socket(fd: \(fd))" }

    // MARK: Creation

    /// Wraps an already-connected non-blocking fd and registers it with `loop`.
    static func adopt(fd: Int32, loop: LBEventLoop) throws(SocketError) -> Socket {
        let socket = Socket(fd: fd, loop: loop)
        do {
            try loop.register(socket)
        } catch {
            Glibc.close(fd)
            throw error
        }
        return socket
    }

    /// Opens a listening socket bound to `address` (SO_REUSEADDR, backlog 1024) on `loop`.
    package static func listen(on address: IPSocketAddress, loop: LBEventLoop, backlog: Int32 = 1024) throws(SocketError) -> Socket {
        let fd = lbk_socket_stream(address.family)
        guard fd >= 0 else { throw SocketError.fromErrno("socket") }
        _ = lbk_setsockopt_int(fd, lbk_SOL_SOCKET, lbk_SO_REUSEADDR, 1)
        let rc = address.withSockAddr { Glibc.bind(fd, $0, $1) }
        guard rc == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SocketError.fromErrno("bind", code)
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SocketError.fromErrno("listen", code)
        }
        return try adopt(fd: fd, loop: loop)
    }

    /// Connects to `address`, suspending until connected or `deadline` (monotonic ns) passes.
    nonisolated(nonsending) package static func connect(to address: IPSocketAddress, loop: LBEventLoop, deadline: UInt64) async throws(SocketError) -> Socket {
        let fd = lbk_socket_stream(address.family)
        guard fd >= 0 else { throw SocketError.fromErrno("socket") }
        _ = lbk_setsockopt_int(fd, lbk_IPPROTO_TCP, lbk_TCP_NODELAY, 1)
        let rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        if rc == 0 {
            return try adopt(fd: fd, loop: loop)
        }
        let code = errno
        guard code == EINPROGRESS else {
            Glibc.close(fd)
            throw SocketError.fromErrno("connect", code)
        }
        let socket = Socket(fd: fd, loop: loop, writable: false)
        do {
            try loop.register(socket)
        } catch {
            Glibc.close(fd)
            throw error
        }
        switch await socket.wait(forRead: false, deadline: deadline, idle: false) {
        case .ready: break
        case .timedOut:
            socket.close()
            throw .timedOut
        case .closed, .shutdown:
            socket.close()
            throw .closed
        }
        let soError = lbk_socket_error(fd)
        if soError != 0 {
            socket.close()
            throw SocketError.fromErrno("connect", soError < 0 ? errno : soError)
        }
        return socket
    }

    /// The local address (for a listener bound to port 0: which port it got).
    package var localAddress: IPSocketAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { return nil }
        return withUnsafeBytes(of: &storage) { raw in raw.baseAddress.flatMap { IPSocketAddress(raw: $0) } }
    }

    /// The peer's address (nil when the socket is not connected).
    package var peerAddress: IPSocketAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        guard rc == 0 else { return nil }
        return withUnsafeBytes(of: &storage) { raw in raw.baseAddress.flatMap { IPSocketAddress(raw: $0) } }
    }

    // MARK: Accept

    /// Accepts one connection: the new connected fd (non-blocking) and the peer's address.
    /// Suspends while none is pending. Throws ``SocketError/shutdown`` after ``interrupt()``.
    nonisolated(nonsending) package func accept() async throws(SocketError) -> (fd: Int32, peer: IPSocketAddress?) {
        while true {
            if prepareRead() {
                var storage = sockaddr_storage()
                var len = UInt32(MemoryLayout<sockaddr_storage>.size)
                let newFD = withUnsafeMutableBytes(of: &storage) { raw in lbk_accept(fd, raw.baseAddress, &len) }
                if newFD >= 0 {
                    _ = lbk_setsockopt_int(newFD, lbk_IPPROTO_TCP, lbk_TCP_NODELAY, 1)
                    let peer = withUnsafeBytes(of: &storage) { raw in raw.baseAddress.flatMap { IPSocketAddress(raw: $0) } }
                    return (newFD, peer)
                }
                let code = errno
                switch code {
                case EAGAIN, EWOULDBLOCK: markDrained()
                case EINTR, ECONNABORTED, EPROTO: continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors: back off briefly instead of spinning.
                    try? await Task.sleep(for: .milliseconds(50))
                    continue
                default: throw SocketError.fromErrno("accept", code)
                }
            }
            switch await wait(forRead: true, deadline: .max, idle: true) {
            case .ready: continue
            case .timedOut: throw .timedOut
            case .closed: throw .closed
            case .shutdown: throw .shutdown
            }
        }
    }

    // MARK: Read

    /// Reads available bytes into `buffer`, suspending until some arrive.
    ///
    /// - Parameters:
    ///   - deadline: monotonic ns after which the wait fails with ``SocketError/timedOut``.
    ///   - idle: marks the wait as an idle keep-alive wait that graceful shutdown may interrupt
    ///     (then it throws ``SocketError/shutdown``).
    /// - Returns: the number of bytes read; 0 means the peer closed its side (EOF).
    nonisolated(nonsending) package func read(into buffer: inout InboundBuffer, deadline: UInt64, idle: Bool = false, chunk: Int = 16 * 1024) async throws(SocketError) -> Int {
        while true {
            if let n = try readNow(into: &buffer, chunk: chunk) { return n }
            try await waitReadable(holding: &buffer, deadline: deadline, idle: idle)
        }
    }

    /// Reads what has arrived into `buffer` without waiting: the bytes read (0 at EOF), or nil
    /// when there is nothing to read yet (then ``waitReadable(holding:deadline:idle:)`` and try
    /// again). The hot paths call the two themselves, so that a read costs no async call of its
    /// own (each costs a task allocation, ~230 instructions):
    ///
    /// ```swift
    /// var n: Int
    /// while true {
    ///     if let ready = try socket.readNow(into: &buffer) { n = ready; break }
    ///     try await socket.waitReadable(holding: &buffer, deadline: deadline, idle: false)
    /// }
    /// ```
    @inline(__always)
    package func readNow(into buffer: inout InboundBuffer, chunk: Int = 16 * 1024) throws(SocketError) -> Int? {
        while prepareRead() {
            loop.readBuffers.lend(to: &buffer)
            var code: Int32 = 0
            var requested = 0
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritable: chunk) { space in
                requested = space.count
                let r = Glibc.read(fd, space.baseAddress, space.count)
                if r < 0 { code = errno }
                return max(r, 0)
            }
            if n > 0 {
                if n < requested { markDrained() }
                return n
            }
            if code == 0 { return 0 }
            switch code {
            case EAGAIN, EWOULDBLOCK:
                markDrained()
                return nil
            case EINTR: continue
            default: throw SocketError.fromErrno("read", code)
            }
        }
        return nil  // nothing new since the last read drained the socket (or it is closed: the wait says so)
    }

    /// Suspends until a read may find bytes (or EOF), for ``readNow(into:chunk:)``; throws at
    /// `deadline`, when the socket is closed, or (an `idle` wait) when graceful shutdown begins.
    ///
    /// While it waits, an empty pool-sized `buffer` goes back to the loop's pool (the next read
    /// borrows one): a reader holds a buffer only while bytes are arriving, so 10,000
    /// connections waiting on slow backends hold none, and the pool's few spares serve them all
    /// without allocating (an upstream exchange used to keep one for its whole wait). A grown
    /// buffer (a streamed body's larger reads) stays with its reader.
    @inline(__always)
    nonisolated(nonsending) package func waitReadable(holding buffer: inout InboundBuffer, deadline: UInt64, idle: Bool) async throws(SocketError) {
        if buffer.isEmpty && buffer.capacity == ReadBufferPool.bufferSize { loop.readBuffers.reclaim(&buffer) }
        switch await wait(forRead: true, deadline: deadline, idle: idle) {
        case .ready: return
        case .timedOut: throw .timedOut
        case .closed: throw .closed
        case .shutdown: throw .shutdown
        }
    }

    /// Retires this object without closing its fd, so that the loop can keep the connection
    /// parked with no object at all (``LBEventLoop/park(_:until:owner:token:)``). Refused (false)
    /// while a task waits on the socket or when a read might return bytes (readiness or EOF
    /// seen since the last read drained it). Afterwards the object acts closed.
    func retireForParking() -> Bool {
        state.withLock { s in
            guard !s.closed, s.readWaiter == nil, s.writeWaiter == nil,
                  s.drained, !s.readable, !s.peerClosed, !s.shutdownRequested else { return false }
            s.closed = true
            return true
        }
    }

    /// Whether a read now might return bytes without waiting (the last read did not drain the
    /// socket, or a readiness event arrived since).
    package var mightBeReadable: Bool { state.withLock { s in !(s.drained && !s.readable && !s.peerClosed) } }

    /// Whether a readiness event arrived since the last read attempt (each read clears the flag
    /// first). For pooled-connection staleness checks: an idle pooled upstream connection that became
    /// readable was closed by the backend or received unsolicited bytes.
    package var hasPendingReadEvent: Bool { state.withLock { $0.readable || $0.peerClosed } }

    /// Returns true when a read syscall should be attempted now; clears the readable flag first so
    /// that an event arriving during the syscall is not lost.
    @inline(__always)
    private func prepareRead() -> Bool {
        state.withLock { s in
            // Closed (possibly from another thread, e.g. a server shutting down): never touch the
            // fd again, its number may already belong to another socket of this process. The wait
            // that follows reports `.closed`.
            if s.closed { return false }
            if s.drained && !s.readable && !s.peerClosed { return false }
            s.readable = false
            s.drained = false
            return true
        }
    }

    @inline(__always)
    private func markDrained() {
        state.withLock { $0.drained = true }
    }

    // MARK: Write

    /// Sends as much of `bytes` as the socket takes now, without waiting, and returns how many
    /// bytes that was (all of them unless the send buffer filled up).
    ///
    /// For the hot paths: a request or response that fits the send buffer is written with no
    /// async call at all (each costs a task allocation, ~230 instructions):
    ///
    /// ```swift
    /// let sent = try socket.sendNow(bytes)
    /// if sent < bytes.count { try await socket.write(bytes, from: sent, deadline: deadline) }
    /// ```
    @inline(__always)
    package func sendNow(_ bytes: [UInt8], from start: Int = 0) throws(SocketError) -> Int {
        var offset = start
        while offset < bytes.count {
            // As in prepareRead(): after close() the fd number may have been reused.
            if state.withLock({ $0.closed }) { throw .closed }
            let (sent, code) = bytes.withUnsafeBytes { raw -> (Int, Int32) in
                let r = send(fd, raw.baseAddress.map { $0 + offset }, raw.count - offset, lbk_MSG_NOSIGNAL)
                return (r, r < 0 ? errno : 0)
            }
            if sent > 0 {
                offset += sent
                continue
            }
            switch sent < 0 ? code : EAGAIN {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return offset - start
            default: throw SocketError.fromErrno("write", code)
            }
        }
        return offset - start
    }

    /// Writes all of `bytes` from `offset` on, suspending while the socket's send buffer is full.
    ///
    /// The bytes are borrowed only for each synchronous `send` attempt, never across a suspension.
    nonisolated(nonsending) package func write(_ bytes: [UInt8], from offset: Int = 0, deadline: UInt64) async throws(SocketError) {
        var offset = offset
        var retryAfterClear = false
        while true {
            let sent = try sendNow(bytes, from: offset)
            offset += sent
            if offset >= bytes.count { return }
            if sent > 0 { retryAfterClear = false }
            if !retryAfterClear {
                // Clear the flag, then try once more: an EPOLLOUT edge after this point sets it again.
                state.withLock { $0.writable = false }
                retryAfterClear = true
                continue
            }
            retryAfterClear = false
            switch await wait(forRead: false, deadline: deadline, idle: false) {
            case .ready: continue
            case .timedOut: throw .timedOut
            case .closed: throw .closed
            case .shutdown: throw .shutdown
            }
        }
    }

    // MARK: Waiting

    @inline(__always)  // into read, write and waitReadable: one async frame less per wait
    nonisolated(nonsending) func wait(forRead: Bool, deadline: UInt64, idle: Bool) async -> WaitResult {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<WaitResult, Never>) in
            var arm: UInt64? = nil
            var displaced: UnsafeContinuation<WaitResult, Never>? = nil
            let immediate: WaitResult? = state.withLock { s in
                if s.closed { return .closed }
                if forRead ? (s.readable || s.peerClosed) : s.writable { return .ready }
                if idle && s.shutdownRequested { return .shutdown }
                let effective = forRead ? min(deadline, s.readDeadlineCap) : deadline
                if effective != .max {
                    if lbk_monotonic_ns() >= effective { return .timedOut }
                    if s.armedAt > effective {
                        s.armedAt = effective
                        arm = effective
                    }
                }
                // One waiter per direction: a second one would silently replace the first,
                // which would then never resume. A bug in the caller; in release builds the
                // displaced waiter is at least woken (as if the socket had closed).
                if forRead {
                    assert(s.readWaiter == nil, "two tasks waiting to read \(fd)")
                    displaced = s.readWaiter
                    s.readWaiter = continuation
                    s.readDeadline = effective
                    s.idleWait = idle
                } else {
                    assert(s.writeWaiter == nil, "two tasks waiting to write \(fd)")
                    displaced = s.writeWaiter
                    s.writeWaiter = continuation
                    s.writeDeadline = deadline
                }
                return nil
            }
            displaced?.resume(returning: .closed)
            if let immediate {
                continuation.resume(returning: immediate)
            } else if let arm {
                loop.armTimer(for: self, at: arm)
            }
        }
    }

    /// Called by the loop with the epoll event mask.
    func handleEvents(_ events: UInt32) {
        let readMask = LBK_EPOLLIN | LBK_EPOLLRDHUP | LBK_EPOLLHUP | LBK_EPOLLERR
        let writeMask = LBK_EPOLLOUT | LBK_EPOLLHUP | LBK_EPOLLERR
        let (r, w) = state.withLock { s -> (UnsafeContinuation<WaitResult, Never>?, UnsafeContinuation<WaitResult, Never>?) in
            var r: UnsafeContinuation<WaitResult, Never>? = nil
            var w: UnsafeContinuation<WaitResult, Never>? = nil
            if events & (LBK_EPOLLRDHUP | LBK_EPOLLHUP | LBK_EPOLLERR) != 0 { s.peerClosed = true }
            if events & readMask != 0 {
                s.readable = true
                r = s.readWaiter
                s.readWaiter = nil
            }
            if events & writeMask != 0 {
                s.writable = true
                w = s.writeWaiter
                s.writeWaiter = nil
            }
            return (r, w)
        }
        r?.resume(returning: .ready)
        w?.resume(returning: .ready)
    }

    /// Called by the loop when an armed deadline passes.
    func timerFired(now: UInt64) {
        var rearm: UInt64? = nil
        let (r, w) = state.withLock { s -> (UnsafeContinuation<WaitResult, Never>?, UnsafeContinuation<WaitResult, Never>?) in
            s.armedAt = .max
            var r: UnsafeContinuation<WaitResult, Never>? = nil
            var w: UnsafeContinuation<WaitResult, Never>? = nil
            if s.readWaiter != nil && s.readDeadline <= now {
                r = s.readWaiter
                s.readWaiter = nil
                s.readDeadline = .max
            }
            if s.writeWaiter != nil && s.writeDeadline <= now {
                w = s.writeWaiter
                s.writeWaiter = nil
                s.writeDeadline = .max
            }
            let next = min(s.readWaiter != nil ? s.readDeadline : .max, s.writeWaiter != nil ? s.writeDeadline : .max)
            if next != .max {
                s.armedAt = next
                rearm = next
            }
            return (r, w)
        }
        r?.resume(returning: .timedOut)
        w?.resume(returning: .timedOut)
        if let rearm { loop.armTimer(for: self, at: rearm) }
    }

    /// Caps the deadline of the read wait in progress (if any) and of every later read wait at
    /// `deadline`, until ``clearReadDeadlineCap()``: for a connection whose reader waits while
    /// other tasks add requests with earlier deadlines (the Redis client). A wait that ends
    /// because of the cap reports ``SocketError/timedOut``.
    package func capReadDeadline(_ deadline: UInt64) {
        var arm: UInt64? = nil
        state.withLock { s in
            if deadline < s.readDeadlineCap { s.readDeadlineCap = deadline }
            if s.readWaiter != nil && deadline < s.readDeadline {
                s.readDeadline = deadline
                if s.armedAt > deadline {
                    s.armedAt = deadline
                    arm = deadline
                }
            }
        }
        if let arm { loop.armTimer(for: self, at: arm) }
    }

    /// Removes the cap set by ``capReadDeadline(_:)``.
    package func clearReadDeadlineCap() {
        state.withLock { $0.readDeadlineCap = .max }
    }

    /// Graceful shutdown: an idle read wait (now or later) ends with ``SocketError/shutdown``.
    package func interruptIdle() {
        let waiter = state.withLock { s -> UnsafeContinuation<WaitResult, Never>? in
            s.shutdownRequested = true
            guard s.idleWait, let r = s.readWaiter else { return nil }
            s.readWaiter = nil
            return r
        }
        waiter?.resume(returning: .shutdown)
    }

    /// Half-closes the sending side (FIN), keeping the socket readable.
    package func shutdownWrite() {
        if isClosed { return }  // the fd number may belong to another socket by now
        _ = Glibc.shutdown(fd, lbk_SHUT_WR)
    }

    /// Closes the socket; any waiting operation ends with ``SocketError/closed``. Idempotent.
    package func close() {
        let (alreadyClosed, r, w) = state.withLock { s -> (Bool, UnsafeContinuation<WaitResult, Never>?, UnsafeContinuation<WaitResult, Never>?) in
            if s.closed { return (true, nil, nil) }
            s.closed = true
            let r = s.readWaiter, w = s.writeWaiter
            s.readWaiter = nil
            s.writeWaiter = nil
            return (false, r, w)
        }
        if alreadyClosed { return }
        loop.deregister(self)
        Glibc.close(fd)
        r?.resume(returning: .closed)
        w?.resume(returning: .closed)
    }

    deinit {
        // A registered socket is retained by its loop's registry until close(), so reaching deinit
        // open means it was never registered (registration failed): just release the fd.
        let open = state.withLock { !$0.closed }
        if open && generation == 0 { Glibc.close(fd) }
    }
}
