import Vapor

extension LoadBalancer {
    /// `healthJSON()` as a Vapor response: 200 `{"status":"ok",...}` while a backend is eligible,
    /// 503 `{"status":"unavailable",...}` otherwise. For a route of your own:
    ///
    /// ```swift
    /// app.get("healthz") { _ in balancer.healthResponse() }
    /// ```
    public func healthResponse() -> Response {
        let (status, body) = healthJSON()
        return Self.response(status: status, contentType: "application/json", body)
    }

    /// `statsJSON()` (per-backend state, latency, pool; totals) as a 200 JSON response.
    ///
    /// ```swift
    /// app.get("admin", "lb-stats") { _ in balancer.statsResponse() }
    /// ```
    public func statsResponse() -> Response {
        Self.response(status: 200, contentType: "application/json", statsJSON())
    }

    /// `prometheusText()` as a 200 response in the Prometheus text format 0.0.4.
    ///
    /// ```swift
    /// app.get("metrics") { _ in balancer.metricsResponse() }
    /// ```
    public func metricsResponse() -> Response {
        Self.response(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", prometheusText())
    }

    private static func response(status: Int, contentType: String, _ body: String) -> Response {
        Response(status: HTTPResponseStatus(statusCode: status),
                 headers: ["Content-Type": contentType, "Cache-Control": "no-store"],
                 body: .init(string: body))
    }
}

extension RoutesBuilder {
    /// Mounts `GET <path>` answering the balancer's health document (200 or 503). Nothing is
    /// mounted by default. These routes are not throttled by the balancer; mount them outside
    /// every ``LoadBalancerMiddleware`` prefix (the middleware runs before routing and would
    /// forward them).
    ///
    /// ```swift
    /// app.loadBalancerHealth(balancer, at: "healthz")        // GET /healthz
    /// ```
    @discardableResult
    public func loadBalancerHealth(_ balancer: LoadBalancer, at path: PathComponent...) -> Route {
        get(path) { _ in balancer.healthResponse() }
    }

    /// Mounts `GET <path>` answering the balancer's stats JSON.
    ///
    /// ```swift
    /// app.grouped("admin").loadBalancerStats(balancer, at: "lb")   // GET /admin/lb
    /// ```
    @discardableResult
    public func loadBalancerStats(_ balancer: LoadBalancer, at path: PathComponent...) -> Route {
        get(path) { _ in balancer.statsResponse() }
    }

    /// Mounts `GET <path>` answering the balancer's Prometheus metrics.
    ///
    /// ```swift
    /// app.loadBalancerMetrics(balancer, at: "metrics")     // GET /metrics
    /// ```
    @discardableResult
    public func loadBalancerMetrics(_ balancer: LoadBalancer, at path: PathComponent...) -> Route {
        get(path) { _ in balancer.metricsResponse() }
    }

    /// Mounts all three under this builder: `GET health`, `GET stats`, `GET metrics`.
    /// Protect the group as you would any admin route.
    ///
    /// ```swift
    /// app.grouped("_lb").loadBalancerAdmin(balancer)   // /_lb/health, /_lb/stats, /_lb/metrics
    /// ```
    public func loadBalancerAdmin(_ balancer: LoadBalancer) {
        loadBalancerHealth(balancer, at: "health")
        loadBalancerStats(balancer, at: "stats")
        loadBalancerMetrics(balancer, at: "metrics")
    }
}
