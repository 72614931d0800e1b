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

    @Test("a 6 s backend behind --timeout-ms 1500 --max-delay-ms 1000: every GET and opted-in POST gets 200")
    func slowBackendNeverSurfaces() async throws {
        let fast = try EchoFleet.start(count: 2)
        // Timeouts of a second or more: a fast backend on a loaded 2-core test machine can take
        // a few hundred milliseconds, which must not count as slow (at 300 ms it did).
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .seconds(6))
        let log = LogCapture()
        let lb = try TestBalancer.start(backends: [fast.urls[0], slow.urls[0], fast.urls[1]], log: log) {
            $0.attemptTimeout = .milliseconds(1500)
            $0.maxDelay = .milliseconds(1000)
            $0.healthInterval = .zero   // real traffic alone decides (probes are the next test's subject)
            $0.retryNonIdempotent = true
        }
        for i in 0..<20 {
            let r = try await rawRequest(port: lb.port, method: i % 2 == 0 ? "GET" : "POST", body: i % 2 == 0 ? [] : body)
            #expect(r.status == 200)
            #expect(handledBy(r) != slow.ports[0])
        }
        #expect(lb.balancer.cluster.snapshot()[1].state == .slow)
        let slowLogged = await eventually(timeout: .seconds(2)) { log.count(containing: "as SLOW") >= 1 }
        #expect(slowLogged)
        // Excluded once by real requests; a later trial that is still slow would log
        // `SLOW (trial request ...)`, never a second verdict from scratch.
        #expect(log.count(containing: "as SLOW (latency") == 1, "\(log.all)")

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
            // The automatic probe timeout is 2 x max-delay = 400 ms: a 500 ms probe would time
            // out and mark the backend down, not slow. Here probes must see the latency.
            $0.healthTimeout = .seconds(5)
        }
        let slowPort = fleet.ports[2]
        let set = try await rawRequest(port: slowPort, method: "POST", path: "/_echo/delay?ms=500")
        #expect(set.status == 200)
        let excluded = await eventually(timeout: .seconds(15)) { lb.balancer.cluster.snapshot()[2].state == .slow }
        #expect(excluded, "\(lb.balancer.cluster.snapshot()[2])")
        #expect(lb.balancer.cluster.snapshot()[2].requests == 0)  // no client request paid for it
        for _ in 0..<6 {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            #expect(r.status == 200)
            #expect(handledBy(r) != slowPort)
        }
        // Fast again -> probes re-admit it (hysteresis: two checks under 0.8 x max-delay).
        _ = try await rawRequest(port: slowPort, method: "POST", path: "/_echo/delay?ms=0")
        let back = await eventually(timeout: .seconds(15)) { lb.balancer.cluster.snapshot()[2].state == .healthy }
        #expect(back)
        let logged = await eventually(timeout: .seconds(2)) {
            log.all.contains { $0.contains("HEALTHY") && !$0.contains("UNHEALTHY") && $0.contains(":\(slowPort)") }
        }
        #expect(logged)
        await lb.stop(); await fleet.stop()
    }

    @Test("a timed-out attempt without a safe retry answers 504 JSON")
    func timeoutWithoutRetry() async throws {
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .seconds(5))
        let lb = try TestBalancer.start(backends: slow.urls) { $0.attemptTimeout = .milliseconds(200) }
        let start = ContinuousClock.now
        let r = try await rawRequest(port: lb.port, method: "POST", body: body)
        #expect(r.status == 504)
        #expect(r.bodyText.contains("no response within 200 ms"))
        #expect(ContinuousClock.now - start < .seconds(3))   // well before the backend's 5 s answer
        await lb.stop(); await slow.stop()
    }
}

/// End-to-end per-client throttling.
@Suite("End to end: throttling", .timeLimit(.minutes(1)))
struct EndToEndThrottleTests {
    @Test("over the burst: 429 JSON with Retry-After and RateLimit headers, then success after Retry-After")
    func throttleThenRecover() async throws {
        let fleet = try EchoFleet.start(count: 1)
        // The throttle reads the balancer's clock: a manual one stands still while the requests
        // run (however loaded the machine), and moves by exactly Retry-After below.
        let clock = ManualClock()
        let lb = try TestBalancer.start(backends: fleet.urls, clock: clock) {
            $0.rateLimit = 1
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
        clock.advance(by: .seconds(retryAfter))
        #expect(try await rawRequest(port: lb.port).status == 200)
        #expect(try await rawRequest(port: lb.port).status == 429)   // that token was the only one
        // Read directly: over HTTP the stats request itself would be throttled now.
        #expect(lb.balancer.statsJSON().contains("\"throttled\":3"))
        await lb.stop(); await fleet.stop()
    }
}
