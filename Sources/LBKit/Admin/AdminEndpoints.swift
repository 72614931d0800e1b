/// The balancer's admin endpoints under `/_lb/` as a middleware: `GET /_lb/health`,
/// `GET /_lb/stats`, `GET /_lb/metrics`, `POST /_lb/backends/drain|undrain?url=`.
///
/// They answer admin clients only: loopback clients by default, or the clients in
/// ``LoadBalancerConfiguration/adminAllow`` (`--admin-allow CIDR`) when that is set; the client
/// is resolved as for throttling (behind a trusted proxy, the forwarded client, never the proxy).
/// `drain`/`undrain` also answer a request carrying `X-Admin-Token` equal to
/// ``LoadBalancerConfiguration/adminToken``. Every other request, `/_lb/*` from other clients
/// included, passes on unchanged (the balancer proxies it like any other path), so the admin
/// surface is invisible to the public. Put it after the throttle so admin paths are rate limited
/// too (``LoadBalancer/responder(admin:middlewares:)`` does).
///
/// An embedder that serves these documents on its own admin routes calls
/// ``LoadBalancer/statsJSON()``, ``LoadBalancer/prometheusText()`` and
/// ``LoadBalancer/healthJSON()`` directly instead.
///
/// ```swift
/// func adminOnly(_ balancer: LoadBalancer) -> any HTTPHandler {
///     balancer.adminResponder()   // /_lb/* for admin clients, 404 for anything else
/// }
/// ```
public struct AdminEndpointsMiddleware: SynchronousMiddleware {
    let balancer: LoadBalancer

    /// Answers `/_lb/*` for admin clients; passes everything else on.
    public func handle(_ request: LBRequest, context: LBRequestContext,
                       next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
        guard balancer.answersAdmin(request, context: context) else { return await next(request, context) }
        return balancer.reservedEndpoint(request, context: context)
    }

    package func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
        guard balancer.answersAdmin(request, context: context) else { return .pass(mark: 0) }
        return .answer(balancer.reservedEndpoint(request, context: context))
    }
}

/// `GET <path>` answered by the balancer itself, for every client (before throttling):
/// 200 `{"status":"router ok","backends":N,"eligible":M}`, 503
/// `{"status":"no backend available",...}` when no backend is eligible. Other methods and paths
/// pass on. See ``LoadBalancerConfiguration/routerHealthPath``.
struct RouterHealthMiddleware: SynchronousMiddleware {
    let balancer: LoadBalancer
    let path: String

    func handle(_ request: LBRequest, context: LBRequestContext,
                next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
        guard case .answer(let response) = before(request, context: context) else { return await next(request, context) }
        return response
    }

    func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
        guard request.method == "GET" || request.method == "HEAD", request.head.path == path || request.head.target == path else {
            return .pass(mark: 0)
        }
        let (backends, eligible) = balancer.eligibility()
        let status = eligible > 0 ? "router ok" : "no backend available"
        return .answer(.json(status: eligible > 0 ? 200 : 503, "{\"status\":\"\(status)\",\"backends\":\(backends),\"eligible\":\(eligible)}"))
    }
}

extension LoadBalancer {
    /// The `/_lb/*` endpoints as a middleware (admin clients only; see ``AdminEndpointsMiddleware``).
    public var adminEndpoints: AdminEndpointsMiddleware { AdminEndpointsMiddleware(balancer: self) }

    /// The admin endpoints alone, for a separate admin listener (lbserve's `--admin-listen`):
    /// `/_lb/*` for admin clients, 404 for everything else.
    public func adminResponder() -> any HTTPHandler {
        LBMiddlewareChain([adminEndpoints], responder: ClosureHandler { request, _ in
            .jsonError(status: 404, message: "no such endpoint \(request.head.path) (try /_lb/health, /_lb/stats, /_lb/metrics)")
        })
    }

    /// Whether `client` may use the admin endpoints: in ``LoadBalancerConfiguration/adminAllow``,
    /// or a loopback address when that list is empty. An unknown client never may.
    public func isAdminClient(_ client: ClientAddress?) -> Bool {
        guard let client else { return false }
        if configuration.adminAllow.isEmpty { return client.isLoopback }
        return configuration.adminAllow.contains { $0.contains(client) }
    }

    /// Whether the admin endpoints answer `request` (a `/_lb/` path from an admin client, or a
    /// drain/undrain with the right `X-Admin-Token`); false = it is proxied like any other.
    func answersAdmin(_ request: LBRequest, context: LBRequestContext) -> Bool {
        guard request.head.target.hasPrefix("/_lb/") else { return false }
        if isAdminClient(resolvedClient(request, context: context)) { return true }
        let path = request.head.path
        return (path == "/_lb/backends/drain" || path == "/_lb/backends/undrain") && hasAdminToken(request)
    }

    /// The client as throttling sees it: behind a trusted proxy, the address the proxy recorded.
    func resolvedClient(_ request: LBRequest, context: LBRequestContext) -> ClientAddress? {
        context.clientAddress.map { identity.resolve(peer: $0, forwardedFor: request.headers["X-Forwarded-For"]) }
    }

    private func hasAdminToken(_ request: LBRequest) -> Bool {
        configuration.adminToken.map { token in
            request.headers.first(name: "X-Admin-Token").map { constantTimeEquals($0, token) } ?? false
        } ?? false
    }

    /// Backends in effect and how many of them take new requests (not draining; healthy,
    /// warming or probing).
    func eligibility() -> (backends: Int, eligible: Int) {
        let snapshot = cluster.snapshot()
        return (snapshot.count, snapshot.filter(\.isEligible).count)
    }

    /// The `/_lb/health` document and its status: 200 `{"status":"ok",...}` while at least one
    /// backend is eligible, 503 `{"status":"unavailable",...}` otherwise; `states` counts the
    /// backends by state name (the names of `/_lb/stats` and `lb_backend_state`).
    public func healthJSON() -> (status: Int, body: String) {
        let snapshot = cluster.snapshot()
        let eligible = snapshot.filter(\.isEligible).count
        let status = eligible > 0 ? "ok" : "unavailable"
        let states = BackendStateName.allCases.map { name in
            "\"\(name.rawValue)\":\(snapshot.filter { $0.stateName == name }.count)"
        }.joined(separator: ",")
        return (eligible > 0 ? 200 : 503,
                "{\"status\":\"\(status)\",\"backends\":\(snapshot.count),\"eligible\":\(eligible),\"states\":{\(states)}}")
    }

    /// `GET /_lb/health`, `GET /_lb/stats`, `GET /_lb/metrics`; anything else under `/_lb/` is 404.
    func reservedEndpoint(_ request: LBRequest, context: LBRequestContext) -> LBResponse {
        let path = request.head.path
        if path == "/_lb/backends/drain" || path == "/_lb/backends/undrain" {
            return drainEndpoint(request, context: context, drain: path.hasSuffix("/drain"))
        }
        guard request.method == "GET" || request.method == "HEAD" else {
            return .jsonError(status: 405, message: "\(request.method) not allowed on \(request.head.path)", headers: ["Allow": "GET, HEAD"])
        }
        switch request.head.path {
        case "/_lb/health":
            let (status, body) = healthJSON()
            return .json(status: status, body)
        case "/_lb/stats":
            return .json(status: 200, statsJSON())
        case "/_lb/metrics":
            return LBResponse(status: 200, headers: ["Content-Type": "text/plain; version=0.0.4; charset=utf-8"],
                                body: Array(prometheusText().utf8))
        default:
            return .jsonError(status: 404, message: "no such endpoint \(request.head.path) (try /_lb/health, /_lb/stats, /_lb/metrics)")
        }
    }

    /// `POST /_lb/backends/drain?url=URL` and `.../undrain?url=URL`: only from admin clients (see
    /// ``isAdminClient(_:)``), or with `X-Admin-Token` equal to `--admin-token` when one is
    /// configured. 403 otherwise. The client is resolved as for throttling: behind a trusted proxy
    /// it is the address the proxy recorded, never the proxy itself (a relayed request is not a
    /// local one).
    func drainEndpoint(_ request: LBRequest, context: LBRequestContext, drain: Bool) -> LBResponse {
        guard request.method == "POST" else {
            return .jsonError(status: 405, message: "use POST \(request.head.path)?url=...", headers: ["Allow": "POST"])
        }
        guard hasAdminToken(request) || isAdminClient(resolvedClient(request, context: context)) else {
            return .jsonError(status: 403, message: "admin endpoints are only reachable from admin clients or with X-Admin-Token")
        }
        var target: String?
        for pair in (request.head.query ?? "").split(separator: "&") where pair.hasPrefix("url=") {
            target = String(pair.dropFirst(4)).removingPercentEncodingASCII()
        }
        guard let target, let url = try? BackendURL(parsing: target) else {
            return .jsonError(status: 400, message: "query parameter url must be a backend URL, e.g. ?url=http://127.0.0.1:5001")
        }
        let cluster = upstreams.cluster
        guard let index = cluster.index(of: url.description) else {
            return .jsonError(status: 404, message: "no backend \(url) in the current configuration")
        }
        cluster.setDraining(index, drain)
        return .json(status: 200, "{\"url\":\(JSON.quote(url.description)),\"draining\":\(drain)}")
    }

    /// The `/_lb/stats` JSON document: per-backend state, requests, failures, latency, pool;
    /// totals by status class, throttling and retries.
    public func statsJSON() -> String {
        let up = upstreams
        let cluster = up.cluster
        let endpoints = up.endpoints
        let now = clock.now()
        var backends: [String] = []
        for (i, b) in cluster.snapshot().enumerated() {
            let sinceMs = (now - b.since).milliseconds
            let pool = endpoints[i]
            var lastCheck = "null"
            if let check = b.lastCheck {
                lastCheck = "{\"result\":\"\(check.result.resultLabel)\",\"cause\":\(JSON.quote(check.result.description)),"
                    + "\"status\":\(check.result.status.map(String.init) ?? "null"),"
                    + "\"latency_ms\":\(String(format3: check.latency.milliseconds)),\"ago_ms\":\(String(format3: (now - check.at).milliseconds))}"
            }
            backends.append("""
                {"url":\(JSON.quote(b.url)),"state":"\(b.stateName.rawValue)","health":"\(b.state.rawValue)","reason":\(JSON.quote(b.reason)),\
                "eligible":\(b.isEligible),"share":\(String(format3: b.slowStartFactor)),"last_check":\(lastCheck),\
                "state_for_ms":\(String(format3: sinceMs)),"weight":\(b.weight),"requests":\(b.requests),\
                "failures":{"connect":\(b.failures.connect),"reset":\(b.failures.reset),"timeout":\(b.failures.timeout),"5xx":\(b.failures.status5xx),"total":\(b.failures.total)},\
                "retries":\(b.retries),"in_flight":\(b.inFlight),"ejections":\(b.ejectionCount),\
                "latency":{"ewma_ms":\(String(format3: b.latencyEWMA)),"p50_ms":\(String(format3: b.latencyP50)),"p99_ms":\(String(format3: b.latencyP99))},\
                "pool":{"open":\(pool.openConnectionCount),"idle":\(pool.idleConnectionCount),"opened_total":\(pool.connectionsOpened)}}
                """)
        }
        let c = counters
        let retryStats = cluster.retryStatistics()
        let retriesJSON = RetryReason.allCases.map { "\"\($0.rawValue)\":\(retryStats.granted[$0] ?? 0)" }.joined(separator: ",")
        let deniedJSON = RetryReason.allCases.map { "\"\($0.rawValue)\":\(retryStats.denied[$0] ?? 0)" }.joined(separator: ",")
        let uptime = (now - startedAt).milliseconds / 1000
        return """
            {"uptime_s":\(String(format3: uptime)),"strategy":"\(configuration.strategy.rawValue)",\
            \(throttleStoreJSON)\
            "totals":{"requests":\(c.requests.load(ordering: .relaxed)),\
            "by_status":{"1xx":\(c.status1xx.load(ordering: .relaxed)),"2xx":\(c.status2xx.load(ordering: .relaxed)),"3xx":\(c.status3xx.load(ordering: .relaxed)),"4xx":\(c.status4xx.load(ordering: .relaxed)),"5xx":\(c.status5xx.load(ordering: .relaxed))},\
            "throttled":\(throttleMiddleware?.throttledRequests ?? 0),"no_backend":\(c.noBackend.load(ordering: .relaxed)),\
            "retry_budget_exhausted":\(c.budgetExhausted.load(ordering: .relaxed)),\
            "retries_by_reason":{\(retriesJSON)},"retries_denied_by_reason":{\(deniedJSON)},"throttle_tracked_clients":\(throttle?.count ?? 0),\
            "tunnels":{"opened":\(c.tunnelsOpened.load(ordering: .relaxed)),"open":\(c.tunnelsOpen.load(ordering: .relaxed))}},\
            "backends":[\(backends.joined(separator: ","))]}
            """
    }

    /// `"throttle_store":{...},` when throttling is on: `kind` `local`, or `redis` with its state.
    private var throttleStoreJSON: String {
        guard let throttleMiddleware else { return "" }
        guard let store = throttleMiddleware.sharedStore else { return "\"throttle_store\":{\"kind\":\"local\",\"state\":\"local\"}," }
        return "\"throttle_store\":\(store.statsJSON()),"
    }

    /// The `/_lb/metrics` Prometheus text exposition (format 0.0.4), to serve on any route.
    public func prometheusText() -> String {
        let cluster = upstreams.cluster
        var out = ""
        let c = counters
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        family("lb_requests_total", "counter", "Client requests answered, by status class.")
        let classes = [("1xx", c.status1xx.load(ordering: .relaxed)), ("2xx", c.status2xx.load(ordering: .relaxed)),
                       ("3xx", c.status3xx.load(ordering: .relaxed)), ("4xx", c.status4xx.load(ordering: .relaxed)),
                       ("5xx", c.status5xx.load(ordering: .relaxed))]
        for (cls, v) in classes {
            out += "lb_requests_total{code=\"\(cls)\"} \(v)\n"
        }
        family("lb_throttled_total", "counter", "Requests answered 429 by per-client throttling.")
        out += "lb_throttled_total \(throttleMiddleware?.throttledRequests ?? 0)\n"
        family("lb_tunnels_opened_total", "counter", "Upgraded connections (WebSocket) relayed.")
        out += "lb_tunnels_opened_total \(c.tunnelsOpened.load(ordering: .relaxed))\n"
        family("lb_tunnels_open", "gauge", "Upgraded connections open now.")
        out += "lb_tunnels_open \(c.tunnelsOpen.load(ordering: .relaxed))\n"
        family("lb_no_backend_total", "counter", "Requests answered 503 because no backend was eligible.")
        out += "lb_no_backend_total \(c.noBackend.load(ordering: .relaxed))\n"
        family("lb_retry_budget_exhausted_total", "counter", "Retries refused by the retry budget.")
        out += "lb_retry_budget_exhausted_total \(c.budgetExhausted.load(ordering: .relaxed))\n"
        family("lb_retries_total", "counter", "Retries sent to another backend, by reason.")
        let retryStats = cluster.retryStatistics()
        for reason in RetryReason.allCases {
            out += "lb_retries_total{reason=\"\(reason.rawValue)\"} \(retryStats.granted[reason] ?? 0)\n"
        }
        let snapshot = cluster.snapshot()
        family("lb_backend_requests_total", "counter", "Attempts sent to each backend.")
        for b in snapshot { out += "lb_backend_requests_total{backend=\"\(b.url)\"} \(b.requests)\n" }
        family("lb_backend_failures_total", "counter", "Failed attempts per backend, by kind.")
        for b in snapshot {
            for (kind, v) in [("connect", b.failures.connect), ("reset", b.failures.reset), ("timeout", b.failures.timeout), ("5xx", b.failures.status5xx)] {
                out += "lb_backend_failures_total{backend=\"\(b.url)\",kind=\"\(kind)\"} \(v)\n"
            }
        }
        family("lb_backend_retries_total", "counter", "Retry attempts sent to each backend (a request that failed elsewhere first).")
        for b in snapshot { out += "lb_backend_retries_total{backend=\"\(b.url)\"} \(b.retries)\n" }
        family("lb_backend_in_flight", "gauge", "Attempts in progress per backend.")
        for b in snapshot { out += "lb_backend_in_flight{backend=\"\(b.url)\"} \(b.inFlight)\n" }
        family("lb_backend_up", "gauge", "1 when the backend takes new requests (healthy, warming or probing, not draining), else 0.")
        for b in snapshot { out += "lb_backend_up{backend=\"\(b.url)\"} \(b.isEligible ? 1 : 0)\n" }
        family("lb_backend_state", "gauge", "1 for the state the backend is in, 0 for every other state name.")
        for b in snapshot {
            let current = b.stateName
            for state in BackendStateName.allCases {
                out += "lb_backend_state{backend=\"\(b.url)\",state=\"\(state.rawValue)\"} \(current == state ? 1 : 0)\n"
            }
        }
        family("lb_health_checks_total", "counter", "Active health checks per backend, by result (pass, fail) and cause.")
        for b in snapshot {
            for entry in b.healthChecks.counts {
                out += "lb_health_checks_total{backend=\"\(b.url)\",result=\"\(entry.result)\",cause=\"\(entry.cause)\"} \(entry.count)\n"
            }
        }
        family("lb_backend_latency_seconds", "histogram", "Latency of attempts sent to each backend (time to the complete response).")
        for b in snapshot {
            let cumulative = b.histogram.cumulativeCounts
            for (i, bound) in LatencyHistogram.bounds.enumerated() {
                out += "lb_backend_latency_seconds_bucket{backend=\"\(b.url)\",le=\"\(bound)\"} \(cumulative[i])\n"
            }
            out += "lb_backend_latency_seconds_bucket{backend=\"\(b.url)\",le=\"+Inf\"} \(b.histogram.count)\n"
            out += "lb_backend_latency_seconds_sum{backend=\"\(b.url)\"} \(b.histogram.sum)\n"
            out += "lb_backend_latency_seconds_count{backend=\"\(b.url)\"} \(b.histogram.count)\n"
        }
        family("lb_backend_last_byte_seconds", "histogram", "Time to the last byte of proxied response bodies per backend (streamed bodies included).")
        for b in snapshot {
            let cumulative = b.lastByteHistogram.cumulativeCounts
            for (i, bound) in LatencyHistogram.bounds.enumerated() {
                out += "lb_backend_last_byte_seconds_bucket{backend=\"\(b.url)\",le=\"\(bound)\"} \(cumulative[i])\n"
            }
            out += "lb_backend_last_byte_seconds_bucket{backend=\"\(b.url)\",le=\"+Inf\"} \(b.lastByteHistogram.count)\n"
            out += "lb_backend_last_byte_seconds_sum{backend=\"\(b.url)\"} \(b.lastByteHistogram.sum)\n"
            out += "lb_backend_last_byte_seconds_count{backend=\"\(b.url)\"} \(b.lastByteHistogram.count)\n"
        }
        family("lb_backend_latency_ewma_seconds", "gauge", "Peak-sensitive EWMA of response latency per backend.")
        for b in snapshot { out += "lb_backend_latency_ewma_seconds{backend=\"\(b.url)\"} \(b.latencyEWMA / 1000)\n" }
        if let store = throttleMiddleware?.sharedStore { out += store.prometheusText() }
        return out
    }
}

/// Compares two secrets without an early exit on the first difference.
func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) {
        diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return diff == 0
}

extension String {
    /// Decodes `%XX` escapes (ASCII only; invalid escapes are kept as they are).
    func removingPercentEncodingASCII() -> String {
        var out: [UInt8] = []
        let bytes = Array(utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count,
               let v = UInt8(String(decoding: bytes[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
