/// One backend as the admin documents show it: its snapshot (health, counters, latency), its
/// connection pool, and whether it is retiring (removed by a reload, the admin API or a name
/// that no longer resolves to it). A retiring backend is drained (state `draining`) and stays
/// in every document until the requests that were using it have ended.
struct BackendView: Sendable {
    var snapshot: BackendSnapshot
    var pool: UpstreamEndpoint
    /// What the backend is: its address, and the declared URL it came from.
    var member: BackendMember
    var retiring: Bool
    /// Attempts in flight over every backend set it has been in.
    var inFlight: Int
}

extension LoadBalancer {
    /// Every backend in the current set, retiring ones included, in index order: what
    /// `/_lb/health`, `/_lb/stats`, `/_lb/metrics` and the metrics gauges all show.
    func backendViews() -> [BackendView] {
        let up = upstreams
        return up.cluster.snapshot().enumerated().map { i, snapshot in
            let inFlight = max(snapshot.inFlight, up.activity[i].total)
            return BackendView(snapshot: snapshot, pool: up.endpoints[i], member: up.members[i], retiring: up.retiring[i],
                               inFlight: inFlight)
        }
    }
}
