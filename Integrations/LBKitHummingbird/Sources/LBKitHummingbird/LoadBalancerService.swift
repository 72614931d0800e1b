import LBKit
import ServiceLifecycle

/// A ``LoadBalancer`` as a swift-service-lifecycle `Service`: `run()` runs the balancer's
/// background work (active health checks) and, on graceful shutdown, asks it to stop: requests
/// in flight finish (bounded by the request timeout), idle upstream connections close and the
/// balancer's own event loops stop. Cancellation stops it too.
///
/// Add it to the Hummingbird application (or any `ServiceGroup`); no other lifecycle code is
/// needed. Hummingbird shuts services down in reverse order, so its HTTP server stops taking
/// requests before the balancer drains. In a `ServiceGroup` of your own, list this service
/// *before* the application for the same reason: a stopped balancer must not receive requests.
///
/// ```swift
/// func run(router: Router<BalancerRequestContext>, balancer: LoadBalancer) async throws {
///     var app = Application(router: router)
///     app.addServices(LoadBalancerService(balancer: balancer))
///     try await app.runService()   // SIGINT/SIGTERM: server stops, then the balancer drains
/// }
/// ```
public struct LoadBalancerService: Service, CustomStringConvertible {
    /// The balancer this service runs.
    ///
    /// ```swift
    /// router.get("/metrics") { _, _ in service.balancer.metricsResponse() }
    /// ```
    public let balancer: LoadBalancer

    /// Wraps `balancer`.
    ///
    /// ```swift
    /// let service = LoadBalancerService(balancer: try LoadBalancer(configuration: config))
    /// ```
    public init(balancer: LoadBalancer) {
        self.balancer = balancer
    }

    /// Runs the balancer until graceful shutdown or cancellation, then lets it drain and stop.
    ///
    /// ```swift
    /// let group = ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm], logger: logger)
    /// try await group.run()
    /// ```
    public func run() async throws {
        let balancer = self.balancer
        try await withGracefulShutdownHandler {
            try await balancer.run()
        } onGracefulShutdown: {
            balancer.shutdown()
        }
    }

    /// `LoadBalancerService(3 backends)`, as service-lifecycle logs it.
    ///
    /// ```swift
    /// print(service)   // LoadBalancerService(3 backends)
    /// ```
    public var description: String {
        "LoadBalancerService(\(balancer.configuration.backends.count) backends)"
    }
}
