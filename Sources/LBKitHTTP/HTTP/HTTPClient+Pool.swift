// UpstreamClient's connection pool: taking an idle keep-alive connection (or connecting a fresh
// one) for an exchange, and giving it back afterwards. Separate from the exchange itself
// (HTTPClient.swift) so that each file holds one concern; moved as is.

import LBKitPolicy
internal import CLBKitShim

extension UpstreamClient {
    // MARK: Pool

    /// An idle pooled connection of `loop` that may be reused, or nil. Synchronous, so that the
    /// common case (a warm pool) costs the exchange no async call: connections that became
    /// readable while idle (EOF or unsolicited bytes), idle past `idleLimit`, or registered with
    /// another loop are closed on the way.
    @inline(__always)
    func takeIdle(_ endpoint: UpstreamEndpoint, loop: LBEventLoop, now: UInt64, maxIdleNs idleLimit: UInt64) -> PooledConnection? {
        let pool = endpoint.pools[loop.index % endpoint.pools.count]
        while let candidate = pool.idle.withLock({ $0.popLast() }) {
            if candidate.socket.hasPendingReadEvent || now &- candidate.lastUsed > idleLimit || candidate.socket.loop !== loop {
                candidate.socket.close()
                continue
            }
            return candidate
        }
        return nil
    }

    /// A new connection to `endpoint` on `loop`, within the connect timeout and `deadline`.
    nonisolated(nonsending) func connect(_ endpoint: UpstreamEndpoint, loop: LBEventLoop, deadline: UInt64,
                                         now: UInt64) async throws(UpstreamError) -> PooledConnection {
        let connectDeadline = min(deadline, now &+ connectTimeoutNs)
        do {
            let socket = try await Socket.connect(to: endpoint.address, loop: loop, deadline: connectDeadline)
            return PooledConnection(socket: socket, endpoint: endpoint, now: now)
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
}
