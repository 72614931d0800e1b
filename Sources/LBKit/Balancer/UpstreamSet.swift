/// The backends in effect at one moment: their URLs, connection pools, health-check paths and the
/// ``BackendCluster`` holding their health and latency state. Immutable; a configuration reload
/// builds a new set and swaps it in, and each request keeps the set it started with, so a removed
/// backend drains naturally (no new requests, in-flight ones finish).
final class UpstreamSet: Sendable {
    let urls: [BackendURL]
    let names: [String]
    let endpoints: [UpstreamEndpoint]
    let healthPaths: [String]
    /// Which answers pass each backend's health check (an explicit path is judged strictly).
    let healthExpectations: [HealthCheckExpectation]
    let cluster: BackendCluster

    private init(urls: [BackendURL], endpoints: [UpstreamEndpoint], healthPaths: [String],
                 healthExpectations: [HealthCheckExpectation], cluster: BackendCluster) {
        self.urls = urls
        names = urls.map(\.description)
        self.endpoints = endpoints
        self.healthPaths = healthPaths
        self.healthExpectations = healthExpectations
        self.cluster = cluster
    }

    /// Builds a set; endpoints (and so their pooled connections) and cluster state of backends that
    /// also exist in `previous` are carried over.
    static func make(backends: [BackendURL], weights: [Int], healthPaths: [String?], defaultHealthPath: String,
                     defaultPathIsExplicit: Bool = true, expectedStatuses: HTTPStatusSet? = nil,
                     previous: UpstreamSet?, group: LBEventLoopGroup, clusterConfiguration: ClusterConfiguration,
                     clock: any MonotonicClock, log: @escaping LogSink) throws(LoadBalancerError) -> UpstreamSet {
        guard !backends.isEmpty else { throw LoadBalancerError("no backends configured") }
        let paths = backends.indices.map { i in (i < healthPaths.count ? healthPaths[i] : nil) ?? defaultHealthPath }
        for (i, path) in paths.enumerated() {
            // The path goes onto a request line: refuse anything that could break or extend it.
            if let problem = HTTP1Syntax.originFormProblem(path) {
                throw LoadBalancerError("backend \(backends[i]): health path \(path.debugDescription) \(problem)")
            }
        }
        var endpoints: [UpstreamEndpoint] = []
        for url in backends {
            if let previous, let i = previous.urls.firstIndex(of: url) {
                endpoints.append(previous.endpoints[i])
                continue
            }
            do {
                let address = try IPSocketAddress(host: url.host, port: url.port)
                endpoints.append(UpstreamEndpoint(address: address, authority: url.authority, group: group))
            } catch {
                throw LoadBalancerError("backend \(url): \(error)")
            }
        }
        let descriptors = backends.enumerated().map { i, url in
            BackendDescriptor(url: url.description, weight: i < weights.count ? max(1, weights[i]) : 1)
        }
        let cluster = BackendCluster(backends: descriptors, configuration: clusterConfiguration, clock: clock, log: log)
        if let previous { cluster.inheritState(from: previous.cluster) }
        let expectations = backends.indices.map { i in
            HealthCheckExpectation(pathIsExplicit: (i < healthPaths.count && healthPaths[i] != nil) || defaultPathIsExplicit,
                                   expectedStatuses: expectedStatuses)
        }
        return UpstreamSet(urls: backends, endpoints: endpoints, healthPaths: paths, healthExpectations: expectations, cluster: cluster)
    }
}
