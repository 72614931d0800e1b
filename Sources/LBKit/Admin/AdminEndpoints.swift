/// The balancer's admin endpoints under `/_lb/` as a middleware: `GET /_lb/health`,
/// `GET /_lb/stats`, `GET /_lb/metrics`, `POST /_lb/backends/drain|undrain?url=`, and the
/// run-time backend API at `/_lb/backends` (`GET` list, `POST` add, `PUT ?url=` weight,
/// `DELETE ?url=` remove; see ``LoadBalancer/addBackend(_:weight:healthPath:)``).
///
/// They answer admin clients only: loopback clients by default, or the clients in
/// ``LoadBalancerConfiguration/adminAllow`` (`--admin-allow CIDR`) when that is set; the client
/// is resolved as for throttling (behind a trusted proxy, the forwarded client, never the proxy).
/// `drain`/`undrain` and `/_lb/backends` also answer a request carrying `X-Admin-Token` equal to
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
        if request.head.path == "/_lb/backends" { return await balancer.backendsEndpoint(request) }
        return balancer.reservedEndpoint(request, context: context)
    }

    package func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
        guard balancer.answersAdmin(request, context: context) else { return .pass(mark: 0) }
        if request.head.path == "/_lb/backends" { return .answerAsynchronously }
        return .answer(balancer.reservedEndpoint(request, context: context))
    }

    nonisolated(nonsending) package func answer(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        await balancer.backendsEndpoint(request)
    }
}
extension LoadBalancer {
    /// The `/_lb/*` endpoints as a middleware (admin clients only; see ``AdminEndpointsMiddleware``).
    public var adminEndpoints: AdminEndpointsMiddleware { AdminEndpointsMiddleware(balancer: self) }

    /// The admin endpoints alone, for a separate admin listener (lbserve's `--admin-listen`):
    /// `/_lb/*` for admin clients, 404 for everything else.
    public func adminResponder() -> any HTTPHandler {
        LBMiddlewareChain([adminEndpoints], responder: ClosureHandler { request, _ in
            // Reached for a path that is not /_lb/*, or for a client that is not an admin client
            // (--admin-allow replaces the loopback default): say which, on the operator's listener.
            request.head.target.hasPrefix("/_lb/")
                ? .jsonError(status: 404, message: "\(request.head.path) is not answered for this client (admin clients: loopback, or the --admin-allow ranges)")
                : .jsonError(status: 404, message: "no such endpoint \(request.head.path) (try /_lb/health, /_lb/stats, /_lb/metrics, /_lb/backends)")
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
        // The second byte first: nearly every proxied target is not an admin path, and
        // `hasPrefix` costs a library call per request.
        let target = request.head.target.utf8
        guard target.count >= 5, target.dropFirst().first == UInt8(ascii: "_"), request.head.target.hasPrefix("/_lb/") else { return false }
        if isAdminClient(resolvedClient(request, context: context)) { return true }
        let path = request.head.path
        return (path == "/_lb/backends/drain" || path == "/_lb/backends/undrain" || path == "/_lb/backends") && hasAdminToken(request)
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
    /// warming or probing). Retiring backends (removed, still draining) count as backends, never
    /// as eligible.
    func eligibility() -> (backends: Int, eligible: Int) {
        let views = backendViews()
        return (views.count, views.filter(\.snapshot.isEligible).count)
    }

    /// The `/_lb/health` document and its status: 200 `{"status":"ok",...}` while at least one
    /// backend is eligible, 503 `{"status":"unavailable",...}` otherwise. `states` counts the
    /// backends by state name (the names of `/_lb/stats` and `lb_backend_state`; a retiring
    /// backend, removed but with requests still in flight, counts as `draining`), and
    /// `not_healthy` lists every backend not in plain `healthy` service with its state, its
    /// current share of traffic (a `warming` backend's slow-start share; 0 when it takes no new
    /// requests) and `"retiring":true` when it is leaving.
    public func healthJSON() -> (status: Int, body: String) {
        let views = backendViews()
        let eligible = views.filter(\.snapshot.isEligible).count
        let status = eligible > 0 ? "ok" : "unavailable"
        let states = BackendStateName.allCases.map { name in
            "\"\(name.rawValue)\":\(views.filter { $0.snapshot.stateName == name }.count)"
        }.joined(separator: ",")
        let others = views.filter { $0.snapshot.stateName != .healthy }.map { view in
            let b = view.snapshot
            return "{\"url\":\(JSON.quote(b.url)),\"state\":\"\(b.stateName.rawValue)\","
                + "\"share\":\(String(format3: b.isEligible ? b.slowStartFactor : 0))\(view.retiring ? ",\"retiring\":true" : "")}"
        }.joined(separator: ",")
        return (eligible > 0 ? 200 : 503,
                "{\"status\":\"\(status)\",\"backends\":\(views.count),\"eligible\":\(eligible),\"states\":{\(states)},"
                    + "\"not_healthy\":[\(others)]}")
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
            return .jsonError(status: 404, message: "no such endpoint \(request.head.path) (try /_lb/health, /_lb/stats, /_lb/metrics, /_lb/backends)")
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
        // The address of a backend, or a declared backend (all of its addresses).
        let up = upstreams
        var indices = up.names.indices.filter { up.names[$0] == url.description }
        if indices.isEmpty { indices = up.members.indices.filter { up.members[$0].origin == url.description } }
        guard !indices.isEmpty else {
            return .jsonError(status: 404, message: "no backend \(url) in the current configuration")
        }
        if !drain, indices.contains(where: { up.retiring[$0] }) {
            return .jsonError(status: 409, message: "\(url) is being removed (its address no longer resolves, or it was removed); it cannot be undrained")
        }
        for index in indices { up.cluster.setDraining(index, drain) }
        return .json(status: 200, "{\"url\":\(JSON.quote(url.description)),\"draining\":\(drain)}")
    }

    /// The `/_lb/stats` JSON document: per-backend state, requests, failures, latency, pool;
    /// totals by status class, throttling and retries.
    public func statsJSON() -> String {
        let cluster = upstreams.cluster
        let now = clock.now()
        var backends: [String] = []
        for view in backendViews() {
            let b = view.snapshot
            let sinceMs = (now - b.since).milliseconds
            let pool = view.pool
            let member = view.member
            // The address connected to, and the declared URL it came from when that is a name.
            let origin = member.origin == member.url ? "null" : JSON.quote(member.origin)
            var lastCheck = "null"
            if let check = b.lastCheck {
                lastCheck = "{\"result\":\"\(check.result.resultLabel)\",\"cause\":\(JSON.quote(check.result.description)),"
                    + "\"status\":\(check.result.status.map(String.init) ?? "null"),"
                    + "\"latency_ms\":\(String(format3: check.latency.milliseconds)),\"ago_ms\":\(String(format3: (now - check.at).milliseconds))}"
            }
            let reportedLoad = Self.reportedLoadJSON(b.reportedLoad, now: now)
            backends.append("""
                {"url":\(JSON.quote(b.url)),"address":\(JSON.quote(pool.address.description)),"resolved_from":\(origin),"retiring":\(view.retiring),"state":"\(b.stateName.rawValue)","health":"\(b.state.rawValue)","reason":\(JSON.quote(Self.stateReason(b))),\
                "eligible":\(b.isEligible),"share":\(String(format3: b.isEligible ? b.slowStartFactor * (b.reportedLoad?.shareFactor ?? 1) : 0)),\
                "readmission":\(b.readmission.map { "\"\($0.rawValue)\"" } ?? "null"),"last_check":\(lastCheck),\
                "reported_load":\(reportedLoad),\
                "state_for_ms":\(String(format3: sinceMs)),"weight":\(b.weight),"requests":\(b.requests),\
                "failures":{"connect":\(b.failures.connect),"reset":\(b.failures.reset),"timeout":\(b.failures.timeout),"5xx":\(b.failures.status5xx),"total":\(b.failures.total)},\
                "retries":\(b.retries),"in_flight":\(view.inFlight),"ejections":\(b.ejectionCount),\
                "ejections_by_reason":{\(ExclusionCause.allCases.map { "\"\($0.rawValue)\":\(b.exclusions[$0])" }.joined(separator: ","))},\
                "responses":{\(b.responses.byLabel.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ","))},\
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
            "totals":{"requests":\(c.requests),\
            "by_status":{"1xx":\(c.responses(ofClass: 1)),"2xx":\(c.responses(ofClass: 2)),"3xx":\(c.responses(ofClass: 3)),"4xx":\(c.responses(ofClass: 4)),"5xx":\(c.responses(ofClass: 5))},\
            "throttled":\(throttleMiddleware?.throttledRequests ?? 0),"penalties":\(throttle?.penaltiesStarted ?? 0),\
            "no_backend":\(c.noBackend.load(ordering: .relaxed)),\
            "reloads":{"success":\(c.reloadsSucceeded.load(ordering: .relaxed)),"failure":\(c.reloadsFailed.load(ordering: .relaxed))},\
            "retry_budget_exhausted":\(c.budgetExhausted.load(ordering: .relaxed)),\
            "retries_by_reason":{\(retriesJSON)},"retries_denied_by_reason":{\(deniedJSON)},"throttle_tracked_clients":\(throttle?.count ?? 0),\
            "tunnels":{"opened":\(c.tunnelsOpened.load(ordering: .relaxed)),"open":\(c.tunnelsOpen.load(ordering: .relaxed))}},\
            "backends":[\(backends.joined(separator: ","))]}
            """
    }

    /// The reason shown with the state: the reported-load reason when that is what keeps the
    /// backend out (`cpu 0.95 > max 0.9`, `backend reports drain`), else the health reason.
    static func stateReason(_ b: BackendSnapshot) -> String {
        guard !b.draining, b.state != .down, let load = b.reportedLoad, load.exclusion != nil else { return b.reason }
        return load.reason
    }

    /// `{"cpu":0.95,"memory":0.2,"agent":null,"weight_percent":null,"ago_ms":812.5,"overloads":1}`:
    /// the last load report of a health answer (null before any).
    static func reportedLoadJSON(_ gate: BackendLoadGate?, now: MonotonicInstant) -> String {
        guard let gate, let report = gate.lastReport, let at = gate.reportedAt else { return "null" }
        func number(_ d: Double?) -> String { d.map { String(format3: $0) } ?? "null" }
        return "{\"cpu\":\(number(report.cpu)),\"memory\":\(number(report.memory)),"
            + "\"agent\":\(report.agent.map { "\"\($0.rawValue)\"" } ?? "null"),\"weight_percent\":\(report.weightPercent.map(String.init) ?? "null"),"
            + "\"ago_ms\":\(String(format3: (now - at).milliseconds)),\"overloads\":\(gate.overloadCount)}"
    }

    /// `"throttle_store":{...},` when throttling is on: `kind` `local`, or `redis` with its state.
    private var throttleStoreJSON: String {
        guard let throttleMiddleware else { return "" }
        guard let store = throttleMiddleware.sharedStore else { return "\"throttle_store\":{\"kind\":\"local\",\"state\":\"local\"}," }
        return "\"throttle_store\":\(store.statsJSON()),"
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
