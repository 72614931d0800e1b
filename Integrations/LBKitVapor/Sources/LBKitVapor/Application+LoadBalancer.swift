import Vapor

extension Application {
    /// The application's load balancers: register a ``LoadBalancer`` so Vapor's lifecycle owns
    /// it, and route a path prefix to it.
    ///
    /// ```swift
    /// func configure(_ app: Application, balancer: LoadBalancer) {
    ///     app.loadBalancer.use(balancer, pathPrefix: "/api")
    /// }
    /// ```
    public var loadBalancer: LoadBalancers { LoadBalancers(application: self) }

    /// Registration of ``LoadBalancer``s with an application (see ``Vapor/Application/loadBalancer``).
    public struct LoadBalancers: Sendable {
        /// The application.
        ///
        /// ```swift
        /// let logger = app.loadBalancer.application.logger
        /// ```
        public let application: Application

        struct Key: StorageKey {
            typealias Value = [LoadBalancerLifecycle]
        }

        /// Every lifecycle registered so far, in registration order.
        ///
        /// ```swift
        /// let running = app.loadBalancer.lifecycles.filter { $0.state == .running }
        /// ```
        public var lifecycles: [LoadBalancerLifecycle] { application.storage[Key.self] ?? [] }

        /// The lifecycle registered for `balancer`, if any.
        ///
        /// ```swift
        /// let state = app.loadBalancer.lifecycle(for: balancer)?.state
        /// ```
        public func lifecycle(for balancer: LoadBalancer) -> LoadBalancerLifecycle? {
            lifecycles.first { $0.balancer === balancer }
        }

        /// Hands `balancer` to the application's lifecycle: `run()` starts when the application
        /// has booted, and application shutdown stops it gracefully (see ``LoadBalancerLifecycle``).
        /// Registering the same balancer again returns the first registration.
        ///
        /// - Parameter drainTimeout: how long shutdown waits for requests in flight
        ///   (nil: the balancer's request deadline plus one second).
        ///
        /// ```swift
        /// let lifecycle = app.loadBalancer.register(balancer)
        /// app.middleware.use(LoadBalancerMiddleware(lifecycle: lifecycle, pathPrefix: "/api"))
        /// ```
        @discardableResult
        public func register(_ balancer: LoadBalancer, drainTimeout: Duration? = nil) -> LoadBalancerLifecycle {
            if let existing = lifecycle(for: balancer) { return existing }
            let lifecycle = LoadBalancerLifecycle(balancer: balancer, drainTimeout: drainTimeout, logger: application.logger)
            application.storage[Key.self] = lifecycles + [lifecycle]
            application.lifecycle.use(lifecycle)
            return lifecycle
        }

        /// Registers `balancer` (``register(_:drainTimeout:)``) and adds a global
        /// ``LoadBalancerMiddleware`` that sends the requests under `pathPrefix` to it.
        ///
        /// - Parameters:
        ///   - balancer: where requests go.
        ///   - pathPrefix: which requests (default: all); `/api` matches `/api`, `/api/...`, `/api?...`.
        ///   - stripPrefix: remove the prefix from the forwarded target.
        ///   - exposesBackendHeader: keep LBKit's `X-Backend` response header (default: removed).
        ///   - middlewares: your ``LBMiddleware``s, run after the throttle and before the balancer.
        ///   - drainTimeout: see ``register(_:drainTimeout:)``.
        ///
        /// ```swift
        /// func configure(_ app: Application) throws {
        ///     var config = LoadBalancerConfiguration()
        ///     config.backends = try [5201, 5202].map { try BackendURL(parsing: "http://127.0.0.1:\($0)") }
        ///     config.rateLimit = 5
        ///     let balancer = try LoadBalancer(configuration: config, log: app.logger.loadBalancerLogSink)
        ///     app.loadBalancer.use(balancer, pathPrefix: "/api", stripPrefix: true)
        /// }
        /// ```
        @discardableResult
        public func use(_ balancer: LoadBalancer, pathPrefix: String = "/", stripPrefix: Bool = false,
                        exposesBackendHeader: Bool = false, middlewares: [any LBMiddleware] = [],
                        drainTimeout: Duration? = nil) -> LoadBalancerLifecycle {
            let lifecycle = register(balancer, drainTimeout: drainTimeout)
            application.middleware.use(LoadBalancerMiddleware(
                lifecycle: lifecycle, pathPrefix: pathPrefix, stripPrefix: stripPrefix,
                exposesBackendHeader: exposesBackendHeader, middlewares: middlewares))
            return lifecycle
        }
    }
}
