import HTTPTypes
import Hummingbird
import LBKit
import NIOCore

extension LoadBalancer {
    /// The health document as a Hummingbird response: 200 `{"status":"ok",...}` while at least
    /// one backend is eligible, 503 `{"status":"unavailable",...}` otherwise
    /// (``LoadBalancer/healthJSON()``).
    ///
    /// ```swift
    /// router.get("/healthz") { _, _ in balancer.healthResponse() }
    /// ```
    public func healthResponse() -> Response {
        let (status, body) = healthJSON()
        return LBResponse.json(status: status, body).hummingbirdResponse()
    }

    /// The per-backend statistics JSON (``LoadBalancer/statsJSON()``) as a 200 response.
    ///
    /// ```swift
    /// router.get("/admin/lb/stats") { _, _ in balancer.statsResponse() }
    /// ```
    public func statsResponse() -> Response {
        LBResponse.json(status: 200, statsJSON()).hummingbirdResponse()
    }

    /// The Prometheus text exposition (``LoadBalancer/prometheusText()``) as a 200 response
    /// with `Content-Type: text/plain; version=0.0.4`.
    ///
    /// ```swift
    /// router.get("/metrics") { _, _ in balancer.metricsResponse() }
    /// ```
    public func metricsResponse() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: prometheusText())))
    }
}

extension RouterMethods {
    /// Mounts the balancer's health, statistics and Prometheus endpoints as `GET` routes on the
    /// paths given (nil: not mounted). Nothing is mounted unless you call this; put the routes
    /// behind your own authentication middleware if they must not be public.
    ///
    /// ```swift
    /// router.addLoadBalancerEndpoints(balancer, health: "/healthz", stats: "/admin/lb/stats", metrics: "/metrics")
    /// ```
    @discardableResult
    public func addLoadBalancerEndpoints(_ balancer: LoadBalancer, health: RouterPath? = nil,
                                         stats: RouterPath? = nil, metrics: RouterPath? = nil) -> Self {
        if let health { get(health) { _, _ in balancer.healthResponse() } }
        if let stats { get(stats) { _, _ in balancer.statsResponse() } }
        if let metrics { get(metrics) { _, _ in balancer.metricsResponse() } }
        return self
    }
}
