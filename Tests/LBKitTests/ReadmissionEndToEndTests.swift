import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// A backend slow on its real route and fast on `/health`, behind real servers: it must not flap.
/// Real time is used only to let the back-off run; every bound below is derived from the
/// measured run length or counted in events, never a wall-clock upper bound on one request.
@Suite("End to end: re-admission judged by real traffic", .timeLimit(.minutes(2)))
struct ReadmissionEndToEndTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)
    static let base = Duration.milliseconds(200)
    static let maximum = Duration.seconds(3)

    /// The most trials an exponential back-off from `base` (doubling, capped at `maximum`) can
    /// start within `elapsed`: trial k cannot start before the sum of the first k exclusion times.
    static func maxTrials(within elapsed: Duration) -> Int {
        var total = Duration.zero
        var n = 0
        while true {
            total += ExclusionBackoff.duration(step: n + 1, exponential: true, base: base, max: maximum)
            if total > elapsed { return n }
            n += 1
        }
    }

    /// Three echo backends; the middle one answers every real request in 600 ms and `GET /health`
    /// at once. Checks every 50 ms (two fast checks would have re-admitted it within 100 ms), with
    /// a 2 s check timeout so that a loaded test machine does not fail them.
    ///
    /// On a loaded machine even a fast health check can take more than max-delay: the checks may
    /// then exclude the backend themselves (`SLOW (check latency ...)`) and bring it back. That is
    /// the rule for what checks excluded; the assertions below concern what real requests
    /// excluded (`SLOW (latency ...)`): after that, only trial requests.
    func start() async throws -> (TestBalancer, EchoFleet, LogCapture, slowPort: Int) {
        let fleet = try EchoFleet.start(count: 3)
        let slowPort = fleet.ports[1]
        let set = try await rawRequest(port: slowPort, method: "POST", path: "/_echo/delay?ms=600&health=fast")
        #expect(set.status == 200 && set.bodyText.contains("\"health\":\"fast\""))
        let log = LogCapture()
        let lb = try TestBalancer.start(backends: fleet.urls, log: log) {
            $0.attemptTimeout = .seconds(10)   // a loaded test machine must not turn a fast answer into a 504
            $0.maxDelay = .milliseconds(200)
            $0.healthInterval = .milliseconds(50)
            $0.healthTimeout = .seconds(2)
            $0.ejectionBase = Self.base
            $0.ejectionMax = Self.maximum
            $0.slowStart = .zero
        }
        return (lb, fleet, log, slowPort)
    }

    @Test("plain POSTs: no flapping (never HEALTHY), at most one slow answer per back-off step")
    func plainPostDoesNotFlap() async throws {
        let (lb, fleet, log, slowPort) = try await start()
        let slowURL = fleet.urls[1].description
        let clock = ContinuousClock()
        let began = clock.now
        var slowAnswers = 0
        var requests = 0
        func trials() -> Int { log.all.filter { $0.contains(slowURL) && $0.contains("as PROBING") }.count }
        // Sequential POSTs (never replayed, never hedged) until three back-off steps have passed
        // (event-based), at most 20 s and 5000 requests.
        while trials() < 3 && clock.now - began < .seconds(20) && requests < 5000 {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body, timeoutMs: 30_000)
            #expect(r.status == 200)
            if handledBy(r) == slowPort { slowAnswers += 1 }
            requests += 1
        }
        let elapsed = clock.now - began
        let lines = log.all.filter { $0.contains(slowURL) }
        let excludedByRequests = try #require(lines.firstIndex { $0.contains("as SLOW (latency") }, "\(lines)")
        let before = lines[..<excludedByRequests], after = lines[excludedByRequests...]
        // Real requests excluded it once; fast checks all along, yet never re-admitted: no flapping.
        #expect(lines.filter { $0.contains("as SLOW (latency") }.count == 1, "\(lines)")
        #expect(!after.contains { $0.contains("as HEALTHY") }, "\(lines)")
        let probing = after.filter { $0.contains("as PROBING") }.count
        let slowTrials = after.filter { $0.contains("as SLOW (trial request") }.count
        // The back-off ran (trials happened) and no faster than it allows.
        #expect(probing >= 3, "\(lines)")
        #expect(probing <= Self.maxTrials(within: elapsed), "elapsed \(elapsed): \(lines)")
        // Every slow trial sent it back: at most one SLOW per PROBING.
        #expect(slowTrials <= probing && slowTrials >= probing - 1, "\(lines)")
        // Client-visible slow answers: at most two to reveal it each time it was in service
        // (at start, and after each re-admission by checks of what checks had excluded), then at
        // most one per back-off step.
        let inService = 1 + before.filter { $0.contains("as HEALTHY") }.count
        #expect(slowAnswers >= 2)
        #expect(slowAnswers <= 2 * inService + probing, "slow answers \(slowAnswers), trials \(probing): \(lines)")
        let snapshot = lb.balancer.cluster.snapshot()[1]
        #expect(snapshot.exclusions[.latency] == 1)
        #expect(snapshot.exclusions[.trialFailed] == slowTrials)
        // Fast checks were counted as passing all along.
        #expect(snapshot.healthChecks.counts.contains { $0.result == "pass" && $0.count >= 5 })
        await lb.stop(); await fleet.stop()
    }

    @Test("replayable GETs: trials are raced against a healthy backend, so no client waits for the slow one")
    func replayableTrialsAreRaced() async throws {
        let (lb, fleet, log, slowPort) = try await start()
        let slowURL = fleet.urls[1].description
        let clock = ContinuousClock()
        let began = clock.now
        var requests = 0
        func trials() -> Int { log.all.filter { $0.contains(slowURL) && $0.contains("as PROBING") }.count }
        while trials() < 3 && clock.now - began < .seconds(20) && requests < 5000 {
            let r = try await rawRequest(port: lb.port, method: "GET", path: "/items", timeoutMs: 30_000)
            #expect(r.status == 200)
            #expect(handledBy(r) != slowPort)   // a hedge or a raced trial answered first
            requests += 1
        }
        let lines = log.all.filter { $0.contains(slowURL) }
        let excludedByRequests = try #require(lines.firstIndex { $0.contains("as SLOW (latency") }, "\(lines)")
        let after = lines[excludedByRequests...]
        #expect(!after.contains { $0.contains("as HEALTHY") }, "\(lines)")
        let probing = after.filter { $0.contains("as PROBING") }.count
        #expect(probing >= 3, "\(lines)")
        // Each trial was sent (it reached the slow backend) and raced: hedges cover the trials.
        let snapshot = lb.balancer.cluster.snapshot()
        #expect(snapshot[1].exclusions[.trialFailed] >= 1)
        #expect((lb.balancer.cluster.retryStatistics().granted[.hedge] ?? 0) >= probing)
        await lb.stop(); await fleet.stop()
    }

    @Test("fast again: two fast trials bring it back (HEALTHY once), checks had no say")
    func comesBackThroughTrials() async throws {
        let (lb, fleet, log, slowPort) = try await start()
        let slowURL = fleet.urls[1].description
        // Reveal it: sequential POSTs until real requests exclude it (bounded).
        func excludedByRequests() -> Bool { log.all.contains { $0.contains("\(slowURL) as SLOW (latency") } }
        var sent = 0
        while !excludedByRequests() && sent < 300 {
            _ = try await rawRequest(port: lb.port, method: "POST", body: body, timeoutMs: 30_000)
            sent += 1
        }
        #expect(excludedByRequests())
        _ = try await rawRequest(port: slowPort, method: "POST", path: "/_echo/delay?ms=0")
        var requests = 0
        let back = await eventually(timeout: .seconds(10)) {
            if requests < 2000 {
                _ = try? await rawRequest(port: lb.port, method: "POST", body: body, timeoutMs: 30_000)
                requests += 1
            }
            return lb.balancer.cluster.snapshot()[1].state == .healthy
        }
        #expect(back)
        let lines = log.all.filter { $0.contains(slowURL) }
        let excludedByRequests = try #require(lines.lastIndex { $0.contains("as SLOW (latency") }, "\(lines)")
        let after = lines[excludedByRequests...]
        #expect(after.filter { $0.contains("as HEALTHY") }.count == 1, "\(lines)")
        #expect(after.last?.contains("consecutive trial requests under") == true, "\(lines)")
        await lb.stop(); await fleet.stop()
    }
}

/// One state model: a backend removed by a reload stays visible as draining until its requests end.
@Suite("End to end: removed backends drain visibly", .timeLimit(.minutes(1)))
struct RemovedBackendDrainTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    @Test("removed by reload with a request in flight: draining in stats, health and metrics until it ends, then gone")
    func removedBackendStaysVisible() async throws {
        let fast = try EchoFleet.start(count: 2)
        // 3 s in flight: room for the checks below on a loaded machine (each is a direct call or
        // one loopback request).
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .seconds(3))
        let log = LogCapture()
        let lb = try TestBalancer.start(backends: [slow.urls[0], fast.urls[0], fast.urls[1]], log: log) {
            $0.attemptTimeout = .seconds(10)
        }
        let removed = slow.urls[0].description
        let port = lb.port
        // The first request goes to the slow backend (rotation order) and stays in flight.
        let inFlight = Task { try await rawRequest(port: port, method: "POST", body: body, timeoutMs: 30_000) }
        let started = await eventually(timeout: .seconds(3)) { lb.balancer.cluster.snapshot()[0].inFlight == 1 }
        #expect(started)
        try lb.balancer.reload(backends: [fast.urls[0], fast.urls[1]])

        let stats = try await rawRequest(port: port, path: "/_lb/stats", timeoutMs: 30_000)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(stats.body)) as? [String: Any])
        let backends = try #require(json["backends"] as? [[String: Any]])
        let entry = try #require(backends.first { $0["url"] as? String == removed })
        #expect(entry["state"] as? String == "draining")
        #expect(entry["retiring"] as? Bool == true)
        #expect(entry["eligible"] as? Bool == false)
        #expect(entry["in_flight"] as? Int == 1)
        let health = lb.balancer.healthJSON()
        #expect(health.status == 200)
        #expect(health.body.contains("\"backends\":3,\"eligible\":2"))
        #expect(health.body.contains("\"draining\":1"))
        #expect(health.body.contains("{\"url\":\"\(removed)\",\"state\":\"draining\",\"share\":0.000,\"retiring\":true}"))
        let metrics = lb.balancer.prometheusText()
        #expect(metrics.contains("lb_backend_state{backend=\"\(removed)\",state=\"draining\"} 1\n"))
        #expect(metrics.contains("lb_backend_in_flight{backend=\"\(removed)\"} 1\n"))
        // No new request reaches it.
        for _ in 0..<4 { #expect(handledBy(try await rawRequest(port: port, method: "POST", body: body, timeoutMs: 30_000)) != slow.ports[0]) }

        let first = try await inFlight.value
        #expect(first.status == 200 && handledBy(first) == slow.ports[0])
        let gone = await eventually(timeout: .seconds(10)) { !lb.balancer.statsJSON().contains(removed) }
        #expect(gone)
        #expect(!lb.balancer.healthJSON().body.contains(removed))
        #expect(lb.balancer.healthJSON().body.contains("\"backends\":2,\"eligible\":2"))
        let logged = await eventually(timeout: .seconds(2)) { log.count(containing: "removed \(removed) (drained") == 1 }
        #expect(logged)
        await lb.stop(); await fast.stop(); await slow.stop()
    }
}
