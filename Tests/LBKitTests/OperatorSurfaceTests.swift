import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// A backend whose answers a closure decides (an app without `/health`, one that answers 500...).
struct ClosureBackend {
    let server: HTTP1Server
    let port: Int
    var url: BackendURL { (try? BackendURL(parsing: "http://127.0.0.1:\(port)")) ?? .placeholder }

    static func start(_ handler: @escaping @Sendable (LBRequest) -> LBResponse) throws -> ClosureBackend {
        let server = HTTP1Server(configuration: .init(host: "127.0.0.1", port: 0), group: TestLoops.group,
                                 handler: ClosureHandler { request, _ in handler(request) })
        return ClosureBackend(server: server, port: try server.start().port)
    }

    /// 404 on `GET /health` (like a FastAPI app without one), 200 JSON for everything else.
    static func withoutHealthEndpoint() throws -> ClosureBackend {
        try start { request in
            request.head.path == "/health" ? .jsonError(status: 404, message: "Not Found") : .json(status: 200, "{\"ok\":true}")
        }
    }

    func stop() async { await server.shutdown(timeout: .milliseconds(200)) }
}

/// A balancer built directly (no listener, no background health checks): tests call its probes
/// and its responder themselves.
func makeBalancer(_ backends: [BackendURL], log: LogCapture = LogCapture(), access: LogCapture? = nil,
                  _ configure: (inout LoadBalancerConfiguration) -> Void = { _ in }) throws -> LoadBalancer {
    var config = LoadBalancerConfiguration()
    config.backends = backends
    config.healthInterval = .seconds(3600)  // active checks on, but the tests run the probes
    config.accessLog = access != nil
    configure(&config)
    return try LoadBalancer(configuration: config, group: TestLoops.group, log: log.sink, accessLog: access?.accessSink)
}

extension LoadBalancer {
    /// Runs `count` active checks of backend `index` now.
    func probeNow(_ index: Int, count: Int = 1, timeout: Duration = .seconds(5)) async {
        let up = upstreams
        for _ in 0..<count { await probe(index, in: up, loop: TestLoops.group.loops[0], timeout: timeout) }
    }
}

func context(from address: String) throws -> LBRequestContext {
    LBRequestContext(peer: try IPSocketAddress(host: address, port: 40000), localPort: 8000, eventLoop: TestLoops.group.loops[0])
}

func get(_ path: String, headers: [(String, String)] = []) -> LBRequest {
    var head = RequestHead(method: "GET", target: path, headers: ["Host": "lb.test"])
    for (name, value) in headers { head.headers.add(name: name, value: value) }
    return LBRequest(head: head)
}

func json(_ response: LBResponse) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
}

@Suite("Operators: health checks, state, admin surface, backend header", .timeLimit(.minutes(2)))
struct OperatorSurfaceTests {
    // MARK: Health checks that do not lie

    @Test("a backend answering 404 on /health stays in rotation with the default path; the advice is logged once")
    func noHealthEndpointStays() async throws {
        let app = try ClosureBackend.withoutHealthEndpoint()
        let log = LogCapture()
        let balancer = try makeBalancer([app.url], log: log)
        await balancer.probeNow(0, count: 5)
        #expect(balancer.cluster.snapshot()[0].state == .healthy)
        #expect(log.count(containing: "no health endpoint") == 1, "\(log.all)")
        #expect(log.all.first { $0.contains("no health endpoint") }?.contains("--health-path") == true)
        let r = await balancer.responder().handle(get("/items"), context: try context(from: "127.0.0.1"))
        #expect(r.status == 200)
        let stats = try #require(try JSONSerialization.jsonObject(with: Data(balancer.statsJSON().utf8)) as? [String: Any])
        let backend = try #require((stats["backends"] as? [[String: Any]])?.first)
        let last = try #require(backend["last_check"] as? [String: Any])
        #expect(last["result"] as? String == "pass")
        #expect(last["cause"] as? String == "status 404 (no health endpoint)")
        #expect(last["status"] as? Int == 404)
        #expect(balancer.prometheusText().contains("lb_health_checks_total{backend=\"\(app.url)\",result=\"pass\",cause=\"no_health_endpoint\"} 5\n"))
        await app.stop()
    }

    @Test("with an explicit health path a 404 fails; --health-expect-status overrides")
    func explicitPathIsStrict() async throws {
        let app = try ClosureBackend.withoutHealthEndpoint()
        let log = LogCapture()
        let strict = try makeBalancer([app.url], log: log) { $0.healthPath = "/health" }
        await strict.probeNow(0, count: 3)
        #expect(strict.cluster.snapshot()[0].state == .down)
        #expect(log.all.contains("[HEALTH] Marking \(app.url) as UNHEALTHY (3 failed checks: status 404)"), "\(log.all)")
        #expect(log.count(containing: "no health endpoint") == 0)

        let listed = try makeBalancer([app.url]) {
            $0.healthPath = "/health"
            $0.healthExpectStatus = HTTPStatusSet(parsing: "200-299,404")
        }
        await listed.probeNow(0, count: 3)
        #expect(listed.cluster.snapshot()[0].state == .healthy)
        let ok = try makeBalancer([app.url]) { $0.healthPath = "/items"; $0.healthExpectStatus = HTTPStatusSet(parsing: "204") }
        await ok.probeNow(0, count: 3)
        #expect(ok.cluster.snapshot()[0].state == .down)  // 200 is not in the list
        await app.stop()
    }

    @Test("failed checks record their cause (refused, timeout, status) in the log, /_lb/stats and metrics")
    func causesRecorded() async throws {
        let refused = try PortHolder()
        defer { refused.release() }
        let silent = ScriptedBackend { _, _ in usleep(400_000); return nil }
        defer { silent.stop() }
        let failing = try ClosureBackend.start { _ in .jsonError(status: 500, message: "boom") }
        let urls = [refused.url, try BackendURL(parsing: "http://127.0.0.1:\(silent.port)"), failing.url]
        let log = LogCapture()
        let balancer = try makeBalancer(urls, log: log)
        // Only the silent backend runs into the (short) timeout; the others answer well within theirs.
        await balancer.probeNow(0, count: 3)
        await balancer.probeNow(1, count: 3, timeout: .milliseconds(100))
        await balancer.probeNow(2, count: 3)
        #expect(balancer.cluster.snapshot().map(\.state) == [.down, .down, .down])
        #expect(log.all.contains("[HEALTH] Marking \(urls[0]) as UNHEALTHY (3 failed checks: refused)"), "\(log.all)")
        #expect(log.all.contains("[HEALTH] Marking \(urls[1]) as UNHEALTHY (3 failed checks: timeout after 100 ms)"), "\(log.all)")
        #expect(log.all.contains("[HEALTH] Marking \(urls[2]) as UNHEALTHY (3 failed checks: status 500)"), "\(log.all)")

        let stats = try #require(try JSONSerialization.jsonObject(with: Data(balancer.statsJSON().utf8)) as? [String: Any])
        let checks = try #require(stats["backends"] as? [[String: Any]]).compactMap { $0["last_check"] as? [String: Any] }
        #expect(checks.map { $0["result"] as? String } == ["fail", "fail", "fail"])
        #expect(checks.map { $0["cause"] as? String } == ["refused", "timeout after 100 ms", "status 500"])
        let metrics = balancer.prometheusText()
        #expect(metrics.contains("lb_health_checks_total{backend=\"\(urls[0])\",result=\"fail\",cause=\"refused\"} 3\n"))
        #expect(metrics.contains("lb_health_checks_total{backend=\"\(urls[1])\",result=\"fail\",cause=\"timeout\"} 3\n"))
        #expect(metrics.contains("lb_health_checks_total{backend=\"\(urls[2])\",result=\"fail\",cause=\"status_500\"} 3\n"))
        await failing.stop()
    }

    @Test("fall, rise, slow start, ejection base/max and the ejected share map onto the cluster")
    func tunablesReachTheCluster() throws {
        let balancer = try makeBalancer([.placeholder]) {
            $0.healthFall = 5
            $0.healthRise = 4
            $0.slowStart = .milliseconds(1500)
            $0.ejectionBase = .milliseconds(700)
            $0.ejectionMax = .seconds(9)
            $0.maxEjectedPercent = 100
        }
        let c = balancer.cluster.configuration
        #expect(c.fall == 5 && c.rise == 4 && c.slowStart == .milliseconds(1500))
        #expect(c.baseEjection == .milliseconds(700) && c.maxEjection == .seconds(9) && c.maxEjectedPercent == 100)
    }

    // MARK: One state model

    @Test("metrics: lb_backend_up without a state label, one lb_backend_state series per state name; /_lb/health counts states")
    func stateModel() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let balancer = try makeBalancer(fleet.urls)
        balancer.cluster.setDraining(0, true)
        let metrics = balancer.prometheusText()
        let b0 = fleet.urls[0].description, b1 = fleet.urls[1].description
        #expect(metrics.contains("lb_backend_up{backend=\"\(b0)\"} 0\n"))
        #expect(metrics.contains("lb_backend_up{backend=\"\(b1)\"} 1\n"))
        #expect(!metrics.contains("lb_backend_up{backend=\"\(b0)\",state="))
        for state in BackendStateName.allCases {
            #expect(metrics.contains("lb_backend_state{backend=\"\(b0)\",state=\"\(state.rawValue)\"} \(state == .draining ? 1 : 0)\n"))
            #expect(metrics.contains("lb_backend_state{backend=\"\(b1)\",state=\"\(state.rawValue)\"} \(state == .healthy ? 1 : 0)\n"))
        }
        let health = balancer.healthJSON()
        #expect(health.status == 200)
        #expect(health.body.contains("\"eligible\":1") && health.body.contains("\"draining\":1") && health.body.contains("\"healthy\":1"))
        #expect(balancer.statsJSON().contains("\"state\":\"draining\""))
        balancer.cluster.setDraining(1, true)
        let none = balancer.healthJSON()
        #expect(none.status == 503)
        #expect(none.body.hasPrefix("{\"status\":\"unavailable\",\"backends\":2,\"eligible\":0,"))
        #expect(none.body.contains("\"draining\":2"))
        await fleet.stop()
    }

    @Test("promtool accepts the metrics with health-check counters and state gauges",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool")))
    func promtoolWithStates() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let dead = try PortHolder()
        defer { dead.release() }
        let balancer = try makeBalancer([fleet.urls[0], dead.url])
        await balancer.probeNow(0, count: 2)
        await balancer.probeNow(1, count: 3)
        balancer.cluster.setDraining(0, true)
        let metrics = Array(balancer.prometheusText().utf8)
        #expect(String(decoding: metrics, as: UTF8.self).contains("cause=\"refused\"} 3"))
        let output = try await promtoolCheckMetrics(metrics)
        #expect(output.0 == 0, "promtool: \(output.1)")
        await fleet.stop()
    }

    // MARK: Admin surface

    @Test("/_lb/* answers admin clients only; other clients' requests are proxied like any path")
    func adminGate() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let open = try makeBalancer(fleet.urls) { $0.adminToken = "s3cret-token" }
        let chain = open.responder(admin: true)
        let local = await chain.handle(get("/_lb/stats"), context: try context(from: "127.0.0.1"))
        #expect(try json(local)["backends"] != nil)
        #expect(local.head.headers.first(name: "X-Backend") == nil)
        let remote = await chain.handle(get("/_lb/stats"), context: try context(from: "192.0.2.10"))
        #expect(remote.status == 200)
        #expect(remote.head.headers.first(name: "X-Backend") == fleet.urls[0].description)
        #expect(try json(remote)["handled_by"] as? Int == fleet.ports[0])
        // The drain endpoint: a token holder is answered, anyone else proxied (not even a 403).
        var drain = RequestHead(method: "POST", target: "/_lb/backends/drain?url=\(fleet.urls[0])", headers: ["Host": "x"])
        let proxied = await chain.handle(LBRequest(head: drain), context: try context(from: "192.0.2.10"))
        #expect(proxied.head.headers.first(name: "X-Backend") != nil)
        #expect(open.cluster.snapshot()[0].draining == false)
        drain.headers.add(name: "X-Admin-Token", value: "s3cret-token")
        let drained = await chain.handle(LBRequest(head: drain), context: try context(from: "192.0.2.10"))
        #expect(drained.status == 200 && open.cluster.snapshot()[0].draining)

        // --admin-allow replaces the loopback default.
        let tenEight = try #require(CIDRRange("10.0.0.0/8"))
        let allowList = try makeBalancer(fleet.urls) { $0.adminAllow = [tenEight] }
        let fromLoopback = await allowList.responder(admin: true).handle(get("/_lb/health"), context: try context(from: "127.0.0.1"))
        #expect(fromLoopback.head.headers.first(name: "X-Backend") != nil)
        let fromAllowed = await allowList.responder(admin: true).handle(get("/_lb/health"), context: try context(from: "10.1.2.3"))
        #expect(try json(fromAllowed)["eligible"] as? Int == 1)

        // Behind a trusted local proxy the forwarded client decides, not the proxy.
        let localProxy = try #require(CIDRRange("127.0.0.1/32"))
        let proxiedLB = try makeBalancer(fleet.urls) { $0.trustedProxies = [localProxy] }
        let forwarded = await proxiedLB.responder(admin: true).handle(
            get("/_lb/stats", headers: [("X-Forwarded-For", "203.0.113.9")]), context: try context(from: "127.0.0.1"))
        #expect(forwarded.head.headers.first(name: "X-Backend") != nil)

        // A separate admin listener's handler: 404 for non-admin clients.
        #expect(await open.adminResponder().handle(get("/_lb/stats"), context: try context(from: "192.0.2.10")).status == 404)
        #expect(await open.adminResponder().handle(get("/_lb/metrics"), context: try context(from: "127.0.0.1")).status == 200)
        await fleet.stop()
    }

    @Test("--backend-header renames or removes the header; error bodies name a backend only with it; All backends failed")
    func backendHeader() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let renamed = try makeBalancer(fleet.urls) { $0.backendHeader = "X-App-Url" }
        let r = await renamed.handle(get("/"), context: try context(from: "127.0.0.1"))
        #expect(r.head.headers.first(name: "X-App-Url") == fleet.urls[0].description)
        #expect(r.head.headers.first(name: "X-Backend") == nil)
        let hidden = try makeBalancer(fleet.urls) { $0.backendHeader = nil }
        #expect(await hidden.handle(get("/"), context: try context(from: "127.0.0.1")).head.headers.first(name: "X-Backend") == nil)

        let dead = [try PortHolder(), try PortHolder()]
        defer { dead.forEach { $0.release() } }
        let quiet = try makeBalancer(dead.map(\.url)) { $0.backendHeader = nil }
        let failed = await quiet.handle(get("/"), context: try context(from: "127.0.0.1"))
        #expect(failed.status == 502)
        let message = try #require(try json(failed)["error"] as? String)
        #expect(message.hasPrefix("All backends failed"), "\(message)")
        #expect(!message.contains("127.0.0.1"), "\(message)")
        let named = try makeBalancer(dead.map(\.url))
        let namedFailure = try #require(try json(await named.handle(get("/"), context: try context(from: "127.0.0.1")))["error"] as? String)
        #expect(namedFailure.hasPrefix("All backends failed: backend http://127.0.0.1:"), "\(namedFailure)")
        #expect(namedFailure.contains("connection refused"))
        await fleet.stop()
    }

    @Test("router health path: answered by the balancer for every client; 503 when no backend is eligible")
    func routerHealth() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let balancer = try makeBalancer(fleet.urls) { $0.routerHealthPath = "/health" }
        let chain = balancer.responder(admin: true)
        let ok = await chain.handle(get("/health"), context: try context(from: "192.0.2.10"))
        #expect(ok.status == 200)
        #expect(String(decoding: ok.body, as: UTF8.self) == #"{"status":"router ok","backends":2,"eligible":2}"#)
        #expect(ok.head.headers.first(name: "X-Backend") == nil)
        let post = await chain.handle(LBRequest(head: RequestHead(method: "POST", target: "/health", headers: ["Host": "x"]),
                                                body: Array(#"{"a":1}"#.utf8)), context: try context(from: "192.0.2.10"))
        #expect(post.head.headers.first(name: "X-Backend") != nil)  // only GET/HEAD are the router's
        balancer.cluster.setDraining(0, true)
        balancer.cluster.setDraining(1, true)
        let none = await chain.handle(get("/health"), context: try context(from: "192.0.2.10"))
        #expect(none.status == 503)
        #expect(String(decoding: none.body, as: UTF8.self) == #"{"status":"no backend available","backends":2,"eligible":0}"#)
        await fleet.stop()
    }

    @Test("access log records carry upstream status, bytes in and out, user agent")
    func accessLogFields() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let access = LogCapture()
        let balancer = try makeBalancer(fleet.urls, access: access)
        var head = RequestHead(method: "POST", target: "/a", headers: ["Host": "x", "User-Agent": "curl/8.5.0"])
        head.headers.add(name: "Content-Length", value: "14")
        let r = await balancer.responder().handle(LBRequest(head: head, body: Array(#"{"msg":"demo"}"#.utf8)),
                                                  context: try context(from: "127.0.0.1"))
        #expect(r.status == 200)
        let line = try #require(access.all.first)
        #expect(line.contains(" 127.0.0.1 \"POST /a\" 200 backend=\(fleet.urls[0]) attempts=1 duration_ms="), "\(line)")
        #expect(line.contains(" upstream_status=200 bytes_in=14 bytes_out=\(r.body.count) user_agent=\"curl/8.5.0\""), "\(line)")
        await fleet.stop()
    }
}
