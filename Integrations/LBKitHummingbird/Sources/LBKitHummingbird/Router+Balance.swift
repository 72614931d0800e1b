import Hummingbird
import LBKit
import Logging

extension LoadBalancer {
    /// A balancer logging to `logger` (``Logging/Logger/lbLogSink``) and, when `metrics` is
    /// given, reporting to swift-metrics through it (``SwiftMetricsSink``).
    ///
    /// ```swift
    /// var config = LoadBalancerConfiguration()
    /// config.backends = [try BackendURL(parsing: "http://127.0.0.1:5101")]
    /// let balancer = try LoadBalancer(configuration: config, logger: Logger(label: "lb"), metrics: SwiftMetricsSink())
    /// ```
    public convenience init(configuration: LoadBalancerConfiguration, logger: Logger,
                            metrics: SwiftMetricsSink? = nil) throws(LoadBalancerError) {
        try self.init(configuration: configuration, log: logger.lbLogSink, metrics: metrics)
    }
}

extension Router where Context: RemoteAddressRequestContext {
    /// Balances `pathPrefix` (the path itself and everything under it) across `backends`, with
    /// optional per-client rate limiting, and returns the service that runs the balancer: add it
    /// to the application. The prefix is stripped before forwarding unless `stripPathPrefix` is
    /// false; `X-Backend` is not exposed. Routes added before this call that lie under the
    /// prefix stay local; everything else under it, routed or not, is balanced.
    ///
    /// The pieces stay available: the returned service's `balancer` serves
    /// ``LoadBalancer/healthResponse()``, ``LoadBalancer/statsResponse()`` and
    /// ``LoadBalancer/metricsResponse()``.
    ///
    /// - Parameters:
    ///   - pathPrefix: e.g. `/api`.
    ///   - backends: backend URLs, e.g. `http://127.0.0.1:5101`.
    ///   - rateLimit: requests per second per client IP (nil: no limit); `burst` defaults to it.
    ///   - stripPathPrefix: send `/x` upstream for `/api/x` (default true).
    ///   - logger: where the balancer's events go.
    ///   - configure: anything else on the ``LoadBalancerConfiguration`` (timeouts, health path, ...).
    ///
    /// ```swift
    /// let router = Router(context: BalancerRequestContext.self)
    /// let lb = try router.balance("/api", across: ["http://127.0.0.1:5101", "http://127.0.0.1:5102"], rateLimit: 5)
    /// var app = Application(router: router)
    /// app.addServices(lb)
    /// try await app.runService()
    /// ```
    public func balance(_ pathPrefix: String, across backends: [String], rateLimit: Double? = nil,
                        stripPathPrefix: Bool = true, logger: Logger = Logger(label: "LBKit"),
                        configure: (inout LoadBalancerConfiguration) throws -> Void = { _ in }) throws -> LoadBalancerService {
        var configuration = LoadBalancerConfiguration()
        configuration.backends = try backends.map { try BackendURL(parsing: $0) }
        configuration.rateLimit = rateLimit
        try configure(&configuration)
        let balancer = try LoadBalancer(configuration: configuration, logger: logger)
        add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: pathPrefix, stripPathPrefix: stripPathPrefix))
        return LoadBalancerService(balancer: balancer)
    }
}
