import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite("Observability: stats, metrics, access log", .timeLimit(.minutes(1)))
struct ObservabilityTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    /// A balancer over `fleet` plus a known sequence: 4 POSTs (200), one bad body (400 from the backend).
    func knownTraffic() async throws -> (TestBalancer, EchoFleet, LogCapture) {
        let fleet = try EchoFleet.start(count: 2)
        let access = LogCapture()
        var config = LoadBalancerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.backends = fleet.urls
        config.healthInterval = .zero
        config.accessLog = true
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, log: { _ in }, accessLog: access.accessSink)
        let server = HTTP1Server(configuration: .init(host: "127.0.0.1", port: 0), group: TestLoops.group, handler: balancer.responder(admin: true))
        let port = try server.start().port
        let lb = TestBalancer(balancer: balancer, server: server, port: port, healthTask: Task {})
        for _ in 0..<4 { #expect(try await rawRequest(port: port, method: "POST", body: body).status == 200) }
        #expect(try await rawRequest(port: port, method: "POST", body: Array("nope".utf8)).status == 400)
        return (lb, fleet, access)
    }

    @Test("stats count exactly the known requests (probes excluded)")
    func statsCounts() async throws {
        let (lb, fleet, _) = try await knownTraffic()
        let r = try await rawRequest(port: lb.port, path: "/_lb/stats")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])
        let totals = try #require(json["totals"] as? [String: Any])
        let byStatus = try #require(totals["by_status"] as? [String: Int])
        #expect(totals["requests"] as? Int == 5)
        #expect(byStatus["2xx"] == 4 && byStatus["4xx"] == 1)
        let backends = try #require(json["backends"] as? [[String: Any]])
        #expect(backends.map { $0["requests"] as? Int } == [3, 2])
        #expect(backends.allSatisfy { $0["state"] as? String == "healthy" && $0["in_flight"] as? Int == 0 })
        // Nothing in flight: every open upstream connection is idle in a pool, at most one per
        // event loop (pools are per loop, and sequential requests never need a second one).
        let pools = backends.compactMap { $0["pool"] as? [String: Int] }
        #expect(pools.count == 2)
        for pool in pools {
            #expect(pool["open"] == pool["idle"])
            #expect((1...TestLoops.group.loops.count).contains(pool["open"] ?? 0))
        }
        await lb.stop(); await fleet.stop()
    }

    @Test("metrics: exposition format, exact counters, cumulative histogram")
    func metricsFormat() async throws {
        let (lb, fleet, _) = try await knownTraffic()
        let r = try await rawRequest(port: lb.port, path: "/_lb/metrics")
        #expect(r.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        let text = r.bodyText
        #expect(text.contains("lb_requests_total{code=\"2xx\"} 4\n"))
        #expect(text.contains("lb_requests_total{code=\"4xx\"} 1\n"))
        #expect(text.contains("lb_backend_requests_total{backend=\"\(fleet.urls[0])\"} 3\n"))
        // Every sample belongs to a family declared with # TYPE before it.
        var declared: Set<String> = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") { declared.insert(String(line.split(separator: " ")[2])); continue }
            if line.hasPrefix("#") { continue }
            let name = String(line.prefix { $0 != "{" && $0 != " " })
            let family = ["_bucket", "_sum", "_count"].reduce(name) { n, suffix in
                n.hasSuffix(suffix) && declared.contains(String(n.dropLast(suffix.count))) ? String(n.dropLast(suffix.count)) : n
            }
            #expect(declared.contains(family), "sample \(name) without # TYPE")
            #expect(Double(line.split(separator: " ").last ?? "") != nil, "bad value in \(line)")
        }
        // Histogram buckets are cumulative and +Inf equals _count.
        let backend = fleet.urls[0].description
        let buckets = text.split(separator: "\n").filter { $0.hasPrefix("lb_backend_latency_seconds_bucket{backend=\"\(backend)\"") }
            .compactMap { Int($0.split(separator: " ").last ?? "") }
        #expect(buckets.count == LatencyHistogram.bounds.count + 1)
        #expect(buckets == buckets.sorted())
        #expect(buckets.last == 3)
        #expect(text.contains("lb_backend_latency_seconds_count{backend=\"\(backend)\"} 3\n"))
        await lb.stop(); await fleet.stop()
    }

    @Test("promtool accepts the metrics", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool")))
    func promtool() async throws {
        let (lb, fleet, _) = try await knownTraffic()
        let metrics = try await rawRequest(port: lb.port, path: "/_lb/metrics").body
        let output = try await promtoolCheckMetrics(metrics)
        #expect(output.0 == 0, "promtool: \(output.1)")
        await lb.stop(); await fleet.stop()
    }

    @Test("access log: one line per request with client, method, target, status, backend, attempts, duration")
    func accessLog() async throws {
        let (lb, fleet, access) = try await knownTraffic()
        let lines = access.all
        #expect(lines.count == 5)
        let first = try #require(lines.first)
        #expect(first.contains(" 127.0.0.1 \"POST /\" 200 backend=\(fleet.urls[0]) attempts=1 duration_ms="))
        #expect(lines.last?.contains("\"POST /\" 400 backend=\(fleet.urls[0])") == true)
        await lb.stop(); await fleet.stop()
    }
}
