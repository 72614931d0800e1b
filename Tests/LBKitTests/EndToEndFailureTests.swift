import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// End-to-end behaviour when backends fail: real echo servers (in-process) and the balancer on
/// ephemeral loopback ports; every wait bounded.
@Suite("End to end: failing backends", .timeLimit(.minutes(2)))
struct EndToEndFailureTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    @Test("killed backend: zero client errors, ejected within max-fails, back within two health intervals")
    func killAndRestart() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let log = LogCapture()
        // Probes every second: the 30 requests below reach the dead backend before a probe round
        // can mark it down (with 200 ms, a loaded machine let probes win and no request was refused).
        let interval = Duration.seconds(1)
        let lb = try TestBalancer.start(backends: fleet.urls, log: log) {
            $0.healthInterval = interval
            $0.maxFails = 3
        }
        let deadURL = "http://127.0.0.1:\(fleet.ports[1])"
        await fleet.backends[1].shutdown(timeout: .milliseconds(100))
        // Keep the port: a server of a test running in parallel must not take it while it is down.
        let hold = try PortHolder(port: fleet.ports[1])
        for _ in 0..<30 {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            #expect(r.status == 200)
        }
        let snap = lb.balancer.cluster.snapshot()[1]
        #expect(snap.state != .healthy)
        // Ejected within --max-fails attempts routed to it (probes may add "down" on top).
        #expect(snap.failures.connect <= 3, "attempts routed to the dead backend: \(snap.failures.connect)")
        #expect(log.all.contains { $0.contains("UNHEALTHY") && $0.contains(deadURL) })
        // Each refused attempt moved on (budget-exempt, counted per reason in /_lb/stats).
        let stats = try await rawRequest(port: lb.port, path: "/_lb/stats")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(stats.body)) as? [String: Any])
        let totals = try #require(json["totals"] as? [String: Any])
        let byReason = try #require(totals["retries_by_reason"] as? [String: Int])
        #expect(byReason["connect"] == snap.failures.connect)
        #expect(byReason["connect"] ?? 0 >= 1)

        // Restart on the same port: healthy again within two health intervals (+ scheduling slack).
        hold.release()
        let revived = EchoBackend(configuration: EchoBackendConfiguration(host: "127.0.0.1", ports: [fleet.ports[1]]),
                                  group: TestLoops.group)
        try revived.start()
        let back = await eventually(timeout: .seconds(10)) { lb.balancer.cluster.snapshot()[1].state == .healthy }
        #expect(back)
        // Two successful probes re-admit it (rise = 2; the timing itself is a ManualClock policy test).
        // The line is logged right after the state changes (outside the cluster's lock): wait for it.
        let logged = await eventually(timeout: .seconds(2)) {
            log.all.contains { $0.contains("HEALTHY") && !$0.contains("UNHEALTHY") && $0.contains(deadURL) }
        }
        #expect(logged)
        // And it receives traffic again (slow start ramps its share up).
        let reached = try await eventually(timeout: .seconds(5)) {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            return handledBy(r) == fleet.ports[1]
        }
        #expect(reached)
        await lb.stop(); await fleet.stop(); await revived.shutdown(timeout: .milliseconds(100))
    }

    @Test("alternating backend with PUT or --retry-non-idempotent: every client gets 200, backend ejected within 20")
    func alternatingRetried() async throws {
        for optIn in [false, true] {
            let good = try EchoFleet.start(count: 2)
            let flaky = try EchoFleet.start(count: 1, mode: .alternate)
            let lb = try TestBalancer.start(backends: [good.urls[0], flaky.urls[0], good.urls[1]]) {
                $0.retryNonIdempotent = optIn
                // Passive ejection only, held for a minute: probes of an alternating backend can
                // pass twice in a row between client requests and re-admit it mid-test.
                $0.healthInterval = .zero
                $0.ejectionBase = .seconds(60)
            }
            let method = optIn ? "POST" : "PUT"
            var sentToFlaky = 0
            for _ in 0..<30 {
                let r = try await rawRequest(port: lb.port, method: method, body: body)
                #expect(r.status == 200, "\(method) answered \(r.status): \(r.bodyText)")
                sentToFlaky = lb.balancer.cluster.snapshot()[1].requests
            }
            let snap = lb.balancer.cluster.snapshot()[1]
            #expect(snap.state == .ejected, "state \(snap.state) after \(snap.requests) attempts")
            #expect(sentToFlaky <= 20)
            await lb.stop(); await good.stop(); await flaky.stop()
        }
    }

    @Test("alternating backend without opt-in: a POST sees the 500 and is not replayed; ejected within 20")
    func alternatingPostNotReplayed() async throws {
        let good = try EchoFleet.start(count: 2)
        let flaky = try EchoFleet.start(count: 1, mode: .alternate)
        let lb = try TestBalancer.start(backends: [good.urls[0], flaky.urls[0], good.urls[1]])
        var saw500 = 0
        for _ in 0..<30 {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            if r.status == 500 {
                saw500 += 1
                #expect(r.bodyText.contains("App failure"))
                #expect(r.header("X-Backend") == "http://127.0.0.1:\(flaky.ports[0])")
            } else {
                #expect(r.status == 200)
            }
        }
        #expect(saw500 >= 1)
        let snap = lb.balancer.cluster.snapshot()[1]
        #expect(snap.state == .ejected)
        #expect(snap.requests <= 20)
        // Not replayed: each 500 the client saw was one attempt, no retry was spent on it.
        #expect(snap.retries == 0)
        await lb.stop(); await good.stop(); await flaky.stop()
    }

    @Test("all backends down: 503 JSON with Retry-After at once (no connect or attempt timeout), never a hang")
    func allDown() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let lb = try TestBalancer.start(backends: fleet.urls) { $0.healthInterval = .milliseconds(100) }
        await fleet.stop()
        let holds = try fleet.ports.map { try PortHolder(port: $0) }  // stay down for the whole test
        // Traffic and probes eject both.
        for _ in 0..<8 { _ = try await rawRequest(port: lb.port, method: "GET") }
        let ejected = await eventually(timeout: .seconds(3)) {
            lb.balancer.cluster.snapshot().allSatisfy { $0.state != .healthy && $0.state != .probing }
        }
        #expect(ejected)
        for _ in 0..<5 {
            let start = ContinuousClock.now
            let r = try await rawRequest(port: lb.port, method: "GET", timeoutMs: 2000)
            let elapsed = ContinuousClock.now - start
            #expect(r.status == 503)
            #expect(r.header("Retry-After").flatMap(Int.init) ?? 0 >= 1)
            #expect(r.bodyText.contains("no healthy backend"))
            // Fail fast, not after a connect or attempt timeout (1 s / 3 s); the body above already
            // says no attempt was made, so this bound only has to be below the 3 s attempt timeout.
            #expect(elapsed < .seconds(2), "503 took \(elapsed)")
        }
        withExtendedLifetime(holds) {}
        await lb.stop()
    }
}
