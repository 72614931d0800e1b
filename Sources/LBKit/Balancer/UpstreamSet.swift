import Synchronization

/// The backends in effect at one moment: their URLs, connection pools, health-check paths and the
/// ``BackendCluster`` holding their health and latency state. Immutable; a configuration reload,
/// a name resolution that changed addresses or an admin change builds a new set and swaps it in,
/// and each request keeps the set it started with, so a removed backend drains naturally (no new
/// requests, in-flight ones finish).
final class UpstreamSet: Sendable {
    /// The members (one per address), parallel to every array below and to the cluster.
    let members: [BackendMember]
    let urls: [BackendURL]
    let names: [String]
    let endpoints: [UpstreamEndpoint]
    let healthPaths: [String]
    /// Which answers pass each backend's health check (an explicit path is judged strictly).
    let healthExpectations: [HealthCheckExpectation]
    let cluster: BackendCluster
    /// Attempts in flight per backend, over every set the backend has been in (carried over
    /// like the endpoints): a retiring backend leaves when its counter reaches zero.
    let activity: [AttemptCounter]
    /// Whether the backend is retiring (vanished address or removed declaration).
    let retiring: [Bool]
    /// How many backends are retiring.
    let retiringCount: Int

    private init(members: [BackendMember], urls: [BackendURL], endpoints: [UpstreamEndpoint], healthPaths: [String],
                 healthExpectations: [HealthCheckExpectation], cluster: BackendCluster, activity: [AttemptCounter]) {
        self.members = members
        self.urls = urls
        names = urls.map(\.description)
        self.endpoints = endpoints
        self.healthPaths = healthPaths
        self.healthExpectations = healthExpectations
        self.cluster = cluster
        self.activity = activity
        retiring = members.map(\.retiring)
        retiringCount = retiring.filter { $0 }.count
    }

    /// Attempts in flight on the backend whose URL is `url` (0 when it is not in the set).
    func inFlight(_ url: String) -> Int {
        guard let i = names.firstIndex(of: url) else { return 0 }
        return activity[i].value.load(ordering: .relaxed)
    }

    /// Builds a set from `members` (each URL an IP literal). Endpoints (and so their pooled
    /// connections), attempt counters and cluster state of backends that also exist in
    /// `previous` are carried over; backends new to a running balancer start in slow start.
    static func make(members: [BackendMember], defaultHealthPath: String,
                     defaultPathIsExplicit: Bool = true, expectedStatuses: HTTPStatusSet? = nil,
                     previous: UpstreamSet?, group: LBEventLoopGroup, clusterConfiguration: ClusterConfiguration,
                     clock: any MonotonicClock, log: @escaping LogSink) throws(LoadBalancerError) -> UpstreamSet {
        guard members.count <= BackendIndexSet.capacity else {
            throw LoadBalancerError("at most \(BackendIndexSet.capacity) backends are supported, got \(members.count)")
        }
        let paths = members.map { $0.healthPath ?? defaultHealthPath }
        for (i, path) in paths.enumerated() {
            // The path goes onto a request line: refuse anything that could break or extend it.
            if let problem = HTTP1Syntax.originFormProblem(path) {
                throw LoadBalancerError("backend \(members[i].origin): health path \(path.debugDescription) \(problem)")
            }
        }
        var urls: [BackendURL] = []
        var endpoints: [UpstreamEndpoint] = []
        var activity: [AttemptCounter] = []
        for member in members {
            let url: BackendURL
            let origin: BackendURL
            do throws(BackendURLError) {
                url = try BackendURL(parsing: member.url)
                origin = try BackendURL(parsing: member.origin)
            } catch {
                throw LoadBalancerError("backend \(member.url): \(error)")
            }
            urls.append(url)
            // The Host of health checks is the declared name (virtual hosting), not the address.
            let authority = origin.authority
            if let previous, let i = previous.urls.firstIndex(of: url), previous.endpoints[i].authority == authority {
                endpoints.append(previous.endpoints[i])
                activity.append(previous.activity[i])
                continue
            }
            guard let address = IPSocketAddress(ipLiteral: url.host, port: url.port) else {
                throw LoadBalancerError("backend \(url): not an IP address (names are resolved before a set is built)")
            }
            endpoints.append(UpstreamEndpoint(address: address, authority: authority, group: group))
            activity.append(previous.flatMap { p in p.urls.firstIndex(of: url).map { p.activity[$0] } } ?? AttemptCounter())
        }
        let descriptors = members.map { BackendDescriptor(url: $0.url, weight: max(1, $0.weight)) }
        let cluster = BackendCluster(backends: descriptors, configuration: clusterConfiguration, clock: clock, log: log)
        if let previous {
            cluster.inheritState(from: previous.cluster)
            for (i, member) in members.enumerated() {
                if member.retiring {
                    cluster.setDrainFlag(i, true)
                } else if let j = previous.names.firstIndex(of: member.url), previous.retiring[j] {
                    cluster.setDrainFlag(i, false)  // its address resolves again
                }
            }
        }
        let expectations = members.map { m in
            HealthCheckExpectation(pathIsExplicit: m.healthPath != nil || defaultPathIsExplicit, expectedStatuses: expectedStatuses)
        }
        return UpstreamSet(members: members, urls: urls, endpoints: endpoints, healthPaths: paths,
                           healthExpectations: expectations, cluster: cluster, activity: activity)
    }
}

/// Attempts in flight on one backend, shared by every ``UpstreamSet`` the backend is in.
final class AttemptCounter: Sendable {
    let value = Atomic<Int>(0)
}
