import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// Backend-reported load with real echo backends: the echo's health answer carries its load,
/// `POST /_echo/load` sets it, the balancer takes an overloaded backend out until it recovers.
@Suite("Backend-reported load, end to end", .timeLimit(.minutes(3)))
struct BackendLoadEndToEndTests {
    private func backendOf(_ response: LBResponse) -> String? { response.head.headers.first(name: "X-Backend") }

    @Test("echo reports its own process load on GET /health; POST /_echo/load overrides it, no parameter goes back")
    func echoReportsLoad() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let port = fleet.ports[0]
        let measured = try await rawRequest(port: port, path: "/health")
        #expect(measured.bodyText == #"{"status":"ok"}"#)
        let measuredReport = BackendLoadReport(agentHeader: try #require(measured.header(BackendLoadReport.agentHeaderName)))
        let cpu = try #require(measuredReport.cpu), memory = try #require(measuredReport.memory)
        #expect((0...1).contains(cpu) && memory > 0 && memory < 1, "\(measured.header(BackendLoadReport.agentHeaderName) ?? "")")

        let set = try await rawRequest(port: port, method: "POST", path: "/_echo/load?cpu=0.95&memory=0.2&weight=50")
        #expect(set.status == 200, "\(set.bodyText)")
        let overridden = try await rawRequest(port: port, path: "/health")
        #expect(overridden.bodyText == #"{"status":"ok"}"#)
        #expect(overridden.header(BackendLoadReport.agentHeaderName) == "cpu:0.9500 memory:0.2000 weight:50%")
        // Refused through a proxy, and bad values are 400.
        #expect(try await rawRequest(port: port, method: "POST", path: "/_echo/load?cpu=0.1", headers: [("X-Forwarded-For", "203.0.113.9")]).status == 403)
        #expect(try await rawRequest(port: port, method: "POST", path: "/_echo/load?cpu=2").status == 400)
        #expect(try await rawRequest(port: port, method: "POST", path: "/_echo/load?agent=sleepy").status == 400)
        #expect(try await rawRequest(port: port, method: "POST", path: "/_echo/load").status == 200)
        let back = try await rawRequest(port: port, path: "/health")
        let backHeader = back.header(BackendLoadReport.agentHeaderName) ?? ""
        #expect(!backHeader.contains("0.9500") && !backHeader.contains("weight"), "\(backHeader)")
        await fleet.stop()
    }

    @Test("--max-backend-cpu: an echo reporting cpu 0.95 leaves the rotation (stats, metrics, log) and returns below 0.81")
    func overloadedBackendLeavesAndReturns() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let log = LogCapture()
        let balancer = try makeBalancer(fleet.urls, log: log) { $0.maxBackendCPU = 0.9; $0.healthRise = 2 }
        let loaded = "http://127.0.0.1:\(fleet.ports[1])", other = "http://127.0.0.1:\(fleet.ports[0])"
        let localClient = try context(from: "127.0.0.1")

        #expect(try await rawRequest(port: fleet.ports[1], method: "POST", path: "/_echo/load?cpu=0.95&memory=0.2").status == 200)
        await balancer.probeNow(1)
        #expect(log.count(containing: "Marking \(loaded) as OVERLOADED (cpu 0.95 > max 0.9)") == 1, "\(log.all)")
        var served: [String?] = []
        for _ in 0..<6 { served.append(backendOf(await balancer.responder().handle(get("/items"), context: localClient))) }
        #expect(served == Array(repeating: other, count: 6))

        let stats = try json(await balancer.responder(admin: true).handle(get("/_lb/stats"), context: localClient))
        let entry = try #require((stats["backends"] as? [[String: Any]])?.first { $0["url"] as? String == loaded })
        #expect(entry["state"] as? String == "overloaded" && entry["eligible"] as? Bool == false)
        #expect(entry["reason"] as? String == "cpu 0.95 > max 0.9")
        let report = try #require(entry["reported_load"] as? [String: Any])
        #expect(report["cpu"] as? Double == 0.95 && report["memory"] as? Double == 0.2 && report["overloads"] as? Int == 1)
        let metrics = balancer.prometheusText()
        #expect(metrics.contains("lb_backend_state{backend=\"\(loaded)\",state=\"overloaded\"} 1"))
        #expect(metrics.contains("lb_backend_reported_cpu{backend=\"\(loaded)\"} 0.95"))
        #expect(metrics.contains("lb_backend_overloads_total{backend=\"\(loaded)\"} 1"))
        let health = await balancer.responder(admin: true).handle(get("/_lb/health"), context: localClient)
        #expect(String(decoding: health.body, as: UTF8.self).contains(#""eligible":1"#))
        #expect(String(decoding: health.body, as: UTF8.self).contains(#""overloaded":1"#))

        // 0.85 is under the threshold but over the recovery mark (0.81): still out.
        #expect(try await rawRequest(port: fleet.ports[1], method: "POST", path: "/_echo/load?cpu=0.85").status == 200)
        await balancer.probeNow(1, count: 3)
        #expect(balancer.cluster.snapshot()[1].stateName == .overloaded)
        #expect(try await rawRequest(port: fleet.ports[1], method: "POST", path: "/_echo/load?cpu=0.1&memory=0.1").status == 200)
        await balancer.probeNow(1)
        #expect(balancer.cluster.snapshot()[1].stateName == .overloaded)  // one report is not enough (rise 2)
        await balancer.probeNow(1)
        #expect(balancer.cluster.snapshot()[1].isEligible)
        #expect(log.count(containing: "Marking \(loaded) as HEALTHY (2 reports under cpu 0.81: cpu 0.1, memory 0.1)") == 1, "\(log.all)")
        served = []
        for _ in 0..<4 { served.append(backendOf(await balancer.responder().handle(get("/items"), context: localClient))) }
        #expect(Set(served.compactMap { $0 }) == [loaded, other])
        await fleet.stop()
    }

    @Test("the agent header: drain and down take a backend out whatever the thresholds; ready brings it back")
    func agentWords() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let log = LogCapture()
        let balancer = try makeBalancer(fleet.urls, log: log)  // no thresholds
        let url = "http://127.0.0.1:\(fleet.ports[0])"
        #expect(try await rawRequest(port: fleet.ports[0], method: "POST", path: "/_echo/load?agent=drain").status == 200)
        await balancer.probeNow(0)
        #expect(balancer.cluster.snapshot()[0].stateName == .draining)
        #expect(log.count(containing: "Marking \(url) as DRAINING (backend reports drain)") == 1)
        #expect(try await rawRequest(port: fleet.ports[0], method: "POST", path: "/_echo/load?agent=down").status == 200)
        await balancer.probeNow(0)
        #expect(balancer.cluster.snapshot()[0].stateName == .down && !balancer.cluster.snapshot()[0].isEligible)
        #expect(try await rawRequest(port: fleet.ports[0], method: "POST", path: "/_echo/load?agent=ready").status == 200)
        await balancer.probeNow(0)
        #expect(balancer.cluster.snapshot()[0].stateName == .healthy)
        #expect(log.count(containing: "Marking \(url) as HEALTHY (backend reports ready)") == 1, "\(log.all)")
        await fleet.stop()
    }

    @Test("lbserve and echo processes: LB_MAX_BACKEND_CPU from the environment, the overloaded echo gets no requests until it recovers")
    func processes() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (_, ports) = try await harness.startEcho(ports: 2)
        let lb = try harness.start("lbserve", ["--host", "127.0.0.1", "--port", "0", "--health-interval-ms", "50",
                                               "--backend", "http://127.0.0.1:\(ports[0])", "--backend", "http://127.0.0.1:\(ports[1])"],
                                   environment: ["LB_MAX_BACKEND_CPU": "0.9", "LB_SLOW_START_MS": "0"])
        let line = try #require(await lb.waitForLine(containing: "Router running on port "), "\(lb.stderr.text)")
        let port = try #require(ProcessHarness.port(in: line, after: "Router running on port "))
        let loaded = "http://127.0.0.1:\(ports[1])"

        #expect(try await rawRequest(port: ports[1], method: "POST", path: "/_echo/load?cpu=0.97").status == 200)
        let out = await lb.waitForLine(containing: "Marking \(loaded) as OVERLOADED (cpu 0.97 > max 0.9)")
        #expect(out != nil, "\(lb.stdout.text)")
        for _ in 0..<6 {
            let r = try await rawRequest(port: port, method: "POST", path: "/", body: Array(#"{"n":1}"#.utf8))
            #expect(r.status == 200 && handledBy(r) == ports[0], "\(r.bodyText)")
        }
        #expect(try await rawRequest(port: ports[1], method: "POST", path: "/_echo/load").status == 200)  // measured again
        let back = await lb.waitForLine(containing: "Marking \(loaded) as HEALTHY (2 reports under cpu 0.81")
        #expect(back != nil, "\(lb.stdout.text)")
        let seen = try await eventually(timeout: .seconds(10)) {
            handledBy(try await rawRequest(port: port, method: "POST", path: "/", body: Array(#"{"n":2}"#.utf8))) == ports[1]
        }
        #expect(seen)
    }
}
