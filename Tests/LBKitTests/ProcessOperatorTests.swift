import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// The operator-facing behaviour of the real `lbserve` executable: admin surface, health checks
/// of apps without `/health`, help/version/check-config, router health path, log formats.
@Suite("Processes: lbserve for operators", .serialized, .timeLimit(.minutes(3)))
struct ProcessOperatorTests {
    let demo = Array(#"{"msg":"demo"}"#.utf8)

    private func backendArgs(_ ports: [Int]) -> [String] { ports.flatMap { ["--backend", "http://127.0.0.1:\($0)"] } }

    /// Runs lbserve to completion (for modes that exit at once); bounded.
    private func run(_ harness: ProcessHarness, _ arguments: [String]) async throws -> (status: Int32?, out: String, err: String) {
        let child = try harness.start("lbserve", arguments)
        let exit = await child.waitForExit(timeout: .seconds(10))
        _ = await eventually(timeout: .seconds(5)) { child.stdout.reachedEOF && child.stderr.reachedEOF }
        return (exit?.status, child.stdout.text, child.stderr.text)
    }

    @Test("--admin-allow 127.0.0.1/32: /_lb/stats from 127.0.0.2 is proxied to the backend, from 127.0.0.1 it is answered")
    func adminAllow() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (_, ports) = try await harness.startEcho()
        let (_, port) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0", "--admin-allow", "127.0.0.1/32"] + backendArgs(ports))
        let outside = try await rawRequest(port: port, path: "/_lb/stats", source: "127.0.0.2")
        #expect(outside.status == 200)
        #expect(handledBy(outside) == ports[0], "proxied to the echo backend: \(outside.bodyText)")
        #expect(outside.header("X-Backend") == "http://127.0.0.1:\(ports[0])")
        let inside = try await rawRequest(port: port, path: "/_lb/stats", source: "127.0.0.1")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(inside.body)) as? [String: Any])
        #expect(json["backends"] != nil && inside.header("X-Backend") == nil)
        // Default (no --admin-allow): every loopback client is an admin client.
        let (_, open) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0"] + backendArgs(ports))
        #expect(try await rawRequest(port: open, path: "/_lb/health", source: "127.0.0.2").header("X-Backend") == nil)
    }

    @Test("--admin-listen: the admin endpoints on their own listener; the public one proxies /_lb/* for everyone")
    func adminListen() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (_, ports) = try await harness.startEcho()
        let (lb, port) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0", "--admin-listen", "127.0.0.1:0"] + backendArgs(ports))
        let line = try #require(await lb.waitForLine(containing: "Admin running on port "))
        let adminPort = try #require(ProcessHarness.port(in: line, after: "Admin running on port "))
        let publicStats = try await rawRequest(port: port, path: "/_lb/stats")
        #expect(handledBy(publicStats) == ports[0], "\(publicStats.bodyText)")
        let adminHealth = try await rawRequest(port: adminPort, path: "/_lb/health")
        #expect(adminHealth.status == 200 && adminHealth.bodyText.hasPrefix(#"{"status":"ok","backends":1,"eligible":1"#))
        #expect(try await rawRequest(port: adminPort, method: "POST", path: "/", body: demo).status == 404)
        lb.send(SIGTERM)
        #expect(await lb.waitForExit(timeout: .seconds(5))?.status == 0)
    }

    @Test("an app without /health (404) stays in rotation with default flags; the log says why, once")
    func appWithoutHealthEndpoint() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let app = try ClosureBackend.withoutHealthEndpoint()
        let (lb, port) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0", "--health-interval-ms", "100", "--health-timeout-ms", "3000", "--backend", app.url.description])
        let notice = await lb.waitForLine(containing: "no health endpoint", timeout: .seconds(5))
        #expect(notice?.contains("--health-path") == true, "\(lb.stdout.text)")
        // Well over `fall` more checks.
        let checked = try await eventually(timeout: .seconds(10)) {
            let metrics = try await rawRequest(port: port, path: "/_lb/metrics").bodyText
            guard let r = metrics.range(of: "cause=\"no_health_endpoint\"} ") else { return false }
            return (Int(metrics[r.upperBound...].prefix { $0.isNumber }) ?? 0) >= 8
        }
        #expect(checked)
        for _ in 0..<3 { #expect(try await rawRequest(port: port, path: "/items").status == 200) }
        #expect(lb.stdout.lines.filter { $0.contains("no health endpoint") }.count == 1)
        #expect(!lb.stdout.text.contains("UNHEALTHY"))
        let stats = try await rawRequest(port: port, path: "/_lb/stats").bodyText
        #expect(stats.contains(#""state":"healthy""#) && stats.contains(#""cause":"status 404 (no health endpoint)""#), "\(stats)")
        await app.stop()
    }

    @Test("--help lists every flag, --version prints the version, both exit 0")
    func helpAndVersion() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let help = try await run(harness, ["--help"])
        #expect(help.status == 0)
        for name in LBServeCommandLine.flagNames { #expect(help.out.contains("\n  \(name)"), "--help misses \(name)") }
        let version = try await run(harness, ["--version"])
        #expect(version.status == 0 && version.out == "lbserve \(LBKitVersion.string)\n")
    }

    @Test("--check-config: exit 0 with the effective configuration (and warnings), or exit 2 with every problem")
    func checkConfig() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let dir = NSTemporaryDirectory() + "lbkit-check-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = dir + "/good.json", bad = dir + "/bad.json"
        try Data(#"{"backends": [{"url": "http://127.0.0.1:5001", "weight": 2}, "http://127.0.0.1:5002"], "health_fall": 4}"#.utf8)
            .write(to: URL(fileURLWithPath: good))
        try Data(#"{"backends": ["ftp://x"], "health_fall": 0, "log_format": "xml"}"#.utf8).write(to: URL(fileURLWithPath: bad))

        let ok = try await run(harness, ["--config", good, "--check-config", "--timeout-ms", "250"])
        #expect(ok.status == 0, "stderr: \(ok.err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(ok.out.utf8)) as? [String: Any])
        #expect(object["health_fall"] as? Int == 4 && object["timeout_ms"] as? Int == 250)
        #expect((object["backends"] as? [[String: Any]])?.count == 2)
        #expect(ok.err == "lbserve: warning: backend weights have no effect under strategy round-robin (use --strategy weighted, or \"strategy\": \"weighted\")\n")

        let broken = try await run(harness, ["--config", bad, "--check-config"])
        #expect(broken.status == 2)
        let lines = broken.err.split(separator: "\n")
        #expect(lines.count == 3, "\(broken.err)")
        #expect(lines.allSatisfy { $0.hasPrefix("lbserve: \(bad): ") })
        #expect(broken.out.isEmpty)
    }

    @Test("--router-health-path answers GET itself; a request whose every attempt failed gets 502 'All backends failed'")
    func routerHealthAndAllFailed() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let dead = try PortHolder()
        defer { dead.release() }
        let (_, port) = try await harness.startLBServe([
            "--host", "127.0.0.1", "--port", "0", "--health-interval-ms", "0", "--router-health-path", "/health", "--backend", dead.url.description,
        ])
        let health = try await rawRequest(port: port, path: "/health")
        #expect(health.status == 200 && health.bodyText == #"{"status":"router ok","backends":1,"eligible":1}"#)
        for _ in 0..<3 {
            let r = try await rawRequest(port: port, method: "POST", body: demo)
            #expect(r.status == 502)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])
            #expect((json["error"] as? String)?.hasPrefix("All backends failed") == true, "\(r.bodyText)")
        }
        let none = try await rawRequest(port: port, path: "/health")  // ejected after 3 failures
        #expect(none.status == 503 && none.bodyText.contains(#""eligible":0"#))
    }

    @Test("log lines: text with timestamp and level, filtered by --log-level; --log-format json is one object per line")
    func logFormats() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (_, ports) = try await harness.startEcho()
        let (text, _) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0"] + backendArgs(ports))
        let configLine = try #require(await text.waitForLine(containing: "[CONFIG] backend"))
        let pattern = #/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info \[CONFIG\] backend http:\/\/127\.0\.0\.1:\d+$/#
        #expect(configLine.wholeMatch(of: pattern) != nil, "\(configLine)")

        let (quiet, _) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"] + backendArgs(ports))
        quiet.send(SIGTERM)
        _ = await quiet.waitForExit(timeout: .seconds(5))
        #expect(!quiet.stdout.text.contains("[CONFIG] backend") && !quiet.stdout.text.contains(" info "), "\(quiet.stdout.text)")

        let (json, port) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0", "--log-format", "json", "--access-log"] + backendArgs(ports))
        #expect(try await rawRequest(port: port, method: "POST", body: demo).status == 200)
        _ = await json.waitForLine(containing: "\"category\":\"ACCESS\"", timeout: .seconds(3))
        json.send(SIGTERM)
        _ = await json.waitForExit(timeout: .seconds(5))
        let lines = json.stdout.lines
        #expect(lines.count >= 4)
        for line in lines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["ts"] is String && object?["level"] is String && object?["category"] is String, "not a JSON log line: \(line)")
        }
        #expect(lines.contains { $0.contains("\"message\":\"Router running on port \(port)\"") })
        #expect(lines.contains { $0.contains("\"category\":\"ACCESS\"") && $0.contains("\"upstream_status\":200") })
    }
}
