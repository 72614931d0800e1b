internal import CLBKitShim
import Synchronization

/// One upstream address with its connection pools (one per event loop, so an exchange never
/// crosses threads).
public final class UpstreamEndpoint: Sendable, CustomStringConvertible {
    /// The resolved address.
    public let address: IPSocketAddress
    /// Value for the `Host` header when the request has none, e.g. `127.0.0.1:5001`.
    public let authority: String
    let pools: [ConnectionPool]
    /// The loops whose pools this endpoint keeps.
    package let group: LBEventLoopGroup
    private let opened = Atomic<Int>(0)
    private let open = Atomic<Int>(0)

    /// Creates an endpoint for `address` with a pool per loop of `group`.
    public init(address: IPSocketAddress, authority: String? = nil, group: LBEventLoopGroup) {
        self.address = address
        self.authority = authority ?? address.description
        pools = group.loops.map { _ in ConnectionPool() }
        self.group = group
    }

    public var description: String { authority }

    /// Idle pooled connections over all loops.
    public var idleConnectionCount: Int { pools.reduce(0) { $0 + $1.idle.withLock { $0.count } } }
    /// Connections opened over the endpoint's lifetime.
    public var connectionsOpened: Int { opened.load(ordering: .relaxed) }
    /// Connections open now (idle in a pool or in use).
    public var openConnectionCount: Int { open.load(ordering: .relaxed) }
    func noteOpened() {
        opened.add(1, ordering: .relaxed)
        open.add(1, ordering: .relaxed)
    }
    func noteGone() { open.subtract(1, ordering: .relaxed) }

    /// Closes every idle pooled connection.
    public func closeIdleConnections() {
        for pool in pools {
            let idle = pool.idle.withLock { p -> [PooledConnection] in
                let all = p
                p.removeAll()
                return all
            }
            for c in idle { c.socket.close() }
        }
    }
}

extension UpstreamEndpoint {
    /// Closes idle pooled connections unused for longer than `unusedFor`, keeping the `keep`
    /// most recently used ones of each loop's pool. After a burst the pools shrink back to what
    /// steady traffic uses: every idle connection holds a socket object, and those scattered
    /// small objects keep whole heap pages resident long after the burst.
    public func closeSurplusIdleConnections(unusedFor: Duration, keep: Int) {
        let limit = UInt64(max(0, unusedFor.nanosecondsClamped))
        let keep = max(0, keep)
        let now = lbk_monotonic_ns()
        for pool in pools {
            let surplus = pool.idle.withLock { p -> [PooledConnection] in
                // Released connections are appended: the front holds the least recently used.
                var n = 0
                while n < p.count - keep && now &- p[n].lastUsed > limit { n += 1 }
                guard n > 0 else { return [] }
                let closing = Array(p[..<n])
                p.removeFirst(n)
                return closing
            }
            for c in surplus { c.socket.close() }
        }
    }
}

/// The idle connections of one endpoint on one event loop (LIFO: the most recently used first).
/// Padded onto cache lines of its own: the pools of one endpoint are allocated one after the
/// other, and each loop takes and returns a connection on every request.
final class ConnectionPool: Sendable {
    private let leadingPad = CacheLinePadding()
    let idle = Mutex<[PooledConnection]>([])
    private let trailingPad = CacheLinePadding()
}

/// A pooled upstream connection and its read buffer.
///
/// `@unchecked Sendable`: exactly one owner at a time. It is either inside its endpoint's pool
/// (guarded by that pool's mutex) or checked out by a single exchange, which is the only code that
/// touches `buffer` and `lastUsed` until it returns the connection to the pool.
final class PooledConnection: @unchecked Sendable {
    let socket: Socket
    let endpoint: UpstreamEndpoint
    // `@exclusivity(unchecked)`: the single owner (above) is one exchange running on one task at
    // a time, so accesses cannot overlap; the runtime's dynamic checks cost two calls per access.
    /// Lent by the loop's ``ReadBufferPool`` while an exchange runs; none while pooled.
    @exclusivity(unchecked) var buffer = InboundBuffer(capacity: 0)
    @exclusivity(unchecked) var lastUsed: UInt64
    @exclusivity(unchecked) var exchanges = 0

    init(socket: Socket, endpoint: UpstreamEndpoint, now: UInt64) {
        self.socket = socket
        self.endpoint = endpoint
        self.lastUsed = now
        endpoint.noteOpened()
    }

    deinit {
        // A connection leaves the open count when nothing references it any more (always closed by then).
        socket.close()
        endpoint.noteGone()
    }
}
