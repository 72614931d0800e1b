import Synchronization

/// One backend as the admin documents show it: its snapshot (health, counters, latency), its
/// connection pool, and whether a reload removed it (then its state is `draining` until the
/// requests that were using it have ended).
struct BackendView: Sendable {
    var snapshot: BackendSnapshot
    var pool: UpstreamEndpoint
    var removed: Bool
}

/// Backends removed by a reload whose requests have not all ended yet. They take no new request
/// (they are not in the current ``UpstreamSet``), and stay visible in `/_lb/stats`,
/// `/_lb/metrics` and `/_lb/health` as `draining` (with `"removed":true` in the stats) until
/// no attempt is in flight on them and none of their connections is in use (a streamed body
/// keeps its connection until it ends). Then they vanish, with one `[CONFIG]` line.
final class RetiredBackends: Sendable {
    struct Entry: Sendable {
        var url: String
        /// The cluster of the set the backend was removed from: the requests that still use it
        /// report there.
        var cluster: BackendCluster
        var index: Int
        var pool: UpstreamEndpoint
    }

    private let entries = Mutex<[Entry]>([])

    /// Adds the backends of `old` that `new` no longer has (replacing older entries of the same
    /// URL); forgets entries whose URL `new` has again.
    func retire(from old: UpstreamSet, keeping new: UpstreamSet) {
        let current = Set(new.names)
        let removed = old.names.indices.filter { !current.contains(old.names[$0]) }
        entries.withLock { list in
            list.removeAll { current.contains($0.url) || removed.map { old.names[$0] }.contains($0.url) }
            for i in removed {
                list.append(Entry(url: old.names[i], cluster: old.cluster, index: i, pool: old.endpoints[i]))
            }
        }
    }

    /// Whether any retired backend is still in use.
    var isEmpty: Bool { entries.withLock { $0.isEmpty } }

    /// The retired backends still in use, as `draining` views; those no longer in use are
    /// dropped and returned in `finished` (each exactly once).
    func views() -> (draining: [BackendView], finished: [String]) {
        let list = entries.withLock { $0 }
        guard !list.isEmpty else { return ([], []) }
        var draining: [BackendView] = []
        var idle: [String] = []
        for entry in list {
            let all = entry.cluster.snapshot()
            guard all.indices.contains(entry.index) else { continue }
            var snapshot = all[entry.index]
            let busyConnections = entry.pool.openConnectionCount - entry.pool.idleConnectionCount
            if snapshot.inFlight == 0 && busyConnections <= 0 {
                idle.append(entry.url)
                continue
            }
            snapshot.draining = true
            draining.append(BackendView(snapshot: snapshot, pool: entry.pool, removed: true))
        }
        guard !idle.isEmpty else { return (draining, []) }
        let finished = entries.withLock { list -> [String] in
            var gone: [String] = []
            list.removeAll { entry in
                guard idle.contains(entry.url) else { return false }
                gone.append(entry.url)
                return true
            }
            return gone
        }
        return (draining, finished)
    }
}

extension LoadBalancer {
    /// Every backend operators should see: the current ones, then those removed by a reload
    /// that still have requests in flight (state `draining`). Logs the end of each removed
    /// backend's drain once.
    func backendViews() -> [BackendView] {
        let up = upstreams
        var views = up.cluster.snapshot().enumerated().map { i, snapshot in
            BackendView(snapshot: snapshot, pool: up.endpoints[i], removed: false)
        }
        let (draining, finished) = retired.views()
        views.append(contentsOf: draining)
        for url in finished { logRemovalFinished(url) }
        return views
    }

    func logRemovalFinished(_ url: String) {
        log(LBLogEvent(level: .notice, category: .config,
                       message: "removed backend \(url) drained: its last request ended",
                       metadata: ["backend": url, "state": BackendStateName.draining.rawValue]))
        if let metrics {
            // Its series end at zero rather than freezing at `draining`.
            metrics.record(gauge: "lb_backend_in_flight", value: 0, dimensions: [("backend", url)])
            metrics.record(gauge: "lb_backend_up", value: 0, dimensions: [("backend", url)])
            for state in BackendStateName.allCases {
                metrics.record(gauge: "lb_backend_state", value: 0, dimensions: [("backend", url), ("state", state.rawValue)])
            }
        }
    }
}
