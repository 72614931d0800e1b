import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// End-to-end behaviour when a backend gets slow: deadlines, max-delay exclusion, re-admission.
@Suite("End to end: slow backends", .timeLimit(.minutes(2)))
struct EndToEndSlownessTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    @Test("a 2 s backend behind --timeout-ms 300 --max-delay-ms 200: every GET and opted-in POST gets 200")
    func slowBackendNeverSurfaces() async throws {
        let fast = try EchoFleet.start(count: 2)
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .milliseconds(2000))
        let log = LogCapture()
        let lb = try TestBalancer.start(backends: [fast.urls[0], slow.urls[0], fast.urls[1]], log: log) {
            $0.attemptTimeout = .milliseconds(300)
            $0.maxDelay = .milliseconds(200)
            $0.healthInterval = .milliseconds(200)
            $0.retryNonIdempotent = true
        }
        for i in 0..<20 {
            let r = try await rawRequest(port: lb.port, method: i % 2 == 0 ? "GET" : "POST", body: i % 2 == 0 ? [] : body)
            #expect(r.status == 200)
            #expect(handledBy(r) != slow.ports[0])
        }
        // Slow, or already down: its health path is as slow, so after three timed-out checks
        // (400 ms each) the checks mark it down too, which a loaded machine may reach first.
        let state = lb.balancer.cluster.snapshot()[1].state
        #expect(state == .slow || state == .down, "\(log.all)")
        let slowLine = "\(slow.urls[0]) as SLOW"
        let slowLogged = await eventually(timeout: .seconds(2)) { log.count(containing: slowLine) >= 1 }
        #expect(slowLogged)
        #expect(log.count(containing: slowLine) == 1, "\(log.all)")

        // Once excluded, clients stop paying for it: the median of the last 10 requests is within
        // 50 ms of asking a fast backend directly.
        var direct: [Duration] = []
        var viaLB: [Duration] = []
        for _ in 0..<10 {
            var t = ContinuousClock.now
            _ = try await rawRequest(port: fast.ports[0], method: "POST", body: body)
            direct.append(ContinuousClock.now - t)
            t = ContinuousClock.now
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            viaLB.append(ContinuousClock.now - t)
            #expect(r.status == 200)
        }
        let median = { (xs: [Duration]) in xs.sorted()[xs.count / 2] }
        #expect(median(viaLB) - median(direct) < .milliseconds(50), "via LB \(median(viaLB)), direct \(median(direct))")
        await lb.stop(); await fast.stop(); await slow.stop()
    }

    @Test("an idle backend turning slow is excluded by probes before client traffic reaches it, and re-admitted when fast")
    func probesCatchIdleSlowdown() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let log = LogCapture()
        let lb = try TestBalancer.start(backends: fleet.urls, log: log) {
            $0.attemptTimeout = .milliseconds(1000)
            $0.maxDelay = .milliseconds(200)
            $0.healthInterval = .milliseconds(100)
        }
        let slowPort = fleet.ports[2]
        let set = try await rawRequest(port: slowPort, method: "POST", path: "/_echo/delay?ms=500")
        #expect(set.status == 200)
        // Slow after two timed-out checks, down after the third (checks judged it either way).
        let excluded = await eventually(timeout: .seconds(5)) { lb.balancer.cluster.snapshot()[2].state != .healthy }
        #expect(excluded)
        #expect(log.all.contains { $0.contains(":\(slowPort) as SLOW (check latency") })
        #expect(lb.balancer.cluster.snapshot()[2].requests == 0)  // no client request paid for it
        for _ in 0..<6 {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            #expect(r.status == 200)
            #expect(handledBy(r) != slowPort)
        }
        // Fast again -> probes re-admit it (hysteresis: two checks under 0.8 x max-delay).
        _ = try await rawRequest(port: slowPort, method: "POST", path: "/_echo/delay?ms=0")
        let back = await eventually(timeout: .seconds(5)) { lb.balancer.cluster.snapshot()[2].state == .healthy }
        #expect(back)
        let logged = await eventually(timeout: .seconds(2)) {
            log.all.contains { $0.contains("HEALTHY") && !$0.contains("UNHEALTHY") && $0.contains(":\(slowPort)") }
        }
        #expect(logged)
        await lb.stop(); await fleet.stop()
    }

    @Test("a timed-out attempt without a safe retry answers 504 JSON")
    func timeoutWithoutRetry() async throws {
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .milliseconds(1000))
        let lb = try TestBalancer.start(backends: slow.urls) { $0.attemptTimeout = .milliseconds(200) }
        let start = ContinuousClock.now
        let r = try await rawRequest(port: lb.port, method: "POST", body: body)
        #expect(r.status == 504)
        #expect(r.bodyText.contains("no response within 200 ms"))
        #expect(ContinuousClock.now - start < .milliseconds(900))
        await lb.stop(); await slow.stop()
    }
}

/// End-to-end per-client throttling.
@Suite("End to end: throttling", .timeLimit(.minutes(1)))
struct EndToEndThrottleTests {
    @Test("over the burst: 429 JSON with Retry-After and RateLimit headers, then success after Retry-After")
    func throttleThenRecover() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let lb = try TestBalancer.start(backends: fleet.urls) {
            $0.rateLimit = 1   // one token per second: the checks below run well within it
            $0.burst = 3
        }
        for _ in 0..<3 { #expect(try await rawRequest(port: lb.port).status == 200) }
        let limited = try await rawRequest(port: lb.port)
        #expect(limited.status == 429)
        #expect(limited.header("Content-Type") == "application/json")
        let retryAfter = try #require(limited.header("Retry-After").flatMap(Int.init))
        #expect(retryAfter >= 1)
        #expect(limited.header("RateLimit-Limit") != nil)
        #expect(limited.header("RateLimit-Remaining") == "0")
        // Admin endpoints are rate limited like every other path (they come after the throttle).
        #expect(try await rawRequest(port: lb.port, path: "/_lb/health").status == 429)
        try await Task.sleep(for: .seconds(retryAfter))
        #expect(try await rawRequest(port: lb.port).status == 200)
        // Read directly: over HTTP the stats request itself would be throttled now.
        #expect(lb.balancer.statsJSON().contains("\"throttled\":2"))
        await lb.stop(); await fleet.stop()
    }
}
