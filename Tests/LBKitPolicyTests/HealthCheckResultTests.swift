import Testing
@testable import LBKitPolicy

@Suite("Health checks that do not lie; one state model")
struct HealthCheckResultTests {
    static let b1 = "http://127.0.0.1:5001"
    static let b2 = "http://127.0.0.1:5002"

    // MARK: Judging an answer

    @Test("status lists: codes and ranges, canonical text; nonsense is refused")
    func statusSets() throws {
        let range = try #require(HTTPStatusSet(parsing: "200-399"))
        #expect(range.contains(200) && range.contains(399) && !range.contains(400) && !range.contains(199))
        let list = try #require(HTTPStatusSet(parsing: " 200 , 204-206 "))
        #expect(list.contains(204) && list.contains(206) && !list.contains(201))
        #expect(list.description == "200,204-206")
        for bad in ["", ",", "abc", "99", "600", "300-200", "200-", "-200", "2xx", "200;204", "0200", "200-399-500"] {
            #expect(HTTPStatusSet(parsing: bad) == nil, "\(bad.debugDescription) must be refused")
        }
    }

    @Test("no path configured: 404/405/501 mean no health endpoint (passing); explicit path: only 2xx/3xx pass")
    func judging() {
        let automatic = HealthCheckExpectation(pathIsExplicit: false)
        for status in [404, 405, 501] {
            #expect(automatic.judge(status: status) == .noHealthEndpoint(status: status))
            #expect(automatic.judge(status: status).passed)
        }
        #expect(automatic.judge(status: 200) == .passed(status: 200))
        #expect(automatic.judge(status: 302) == .passed(status: 302))
        #expect(automatic.judge(status: 500) == .status(500) && !automatic.judge(status: 500).passed)
        #expect(automatic.judge(status: 503) == .status(503))
        #expect(automatic.judge(status: 403) == .status(403))

        let explicit = HealthCheckExpectation(pathIsExplicit: true)
        #expect(explicit.judge(status: 404) == .status(404))
        #expect(explicit.judge(status: 204).passed && explicit.judge(status: 399).passed)
        #expect(!explicit.judge(status: 400).passed)

        let listed = HealthCheckExpectation(pathIsExplicit: false, expectedStatuses: HTTPStatusSet(parsing: "200,204"))
        #expect(listed.judge(status: 204).passed)
        #expect(listed.judge(status: 302) == .status(302))
        #expect(listed.judge(status: 404) == .status(404))  // the list overrides the no-endpoint rule
    }

    @Test("causes: log text and bounded metric labels")
    func causes() {
        #expect(HealthCheckResult.status(500).description == "status 500")
        #expect(HealthCheckResult.status(500).label == "status_500")
        #expect(HealthCheckResult.refused.description == "refused")
        #expect(HealthCheckResult.reset.description == "reset")
        #expect(HealthCheckResult.timeout(.milliseconds(2000)).description == "timeout after 2000 ms")
        #expect(HealthCheckResult.timeout(.milliseconds(2000)).label == "timeout")
        #expect(HealthCheckResult.noHealthEndpoint(status: 404).label == "no_health_endpoint")
        #expect(HealthCheckResult.passed(status: 200).label == "ok" && HealthCheckResult.passed(status: 200).resultLabel == "pass")
        #expect(HealthCheckResult.refused.resultLabel == "fail")
    }

    // MARK: In the cluster

    @Test("a failing check's cause is in the UNHEALTHY line, the last check and the tally")
    func causeEverywhere() throws {
        let (cluster, clock, logs) = makeCluster(count: 2) { $0.activeChecks = true }
        cluster.probeFinished(1, result: .passed(status: 200), latency: .milliseconds(1))
        clock.advance(by: .seconds(1))
        for _ in 0..<3 { cluster.probeFinished(1, result: .status(500), latency: .milliseconds(3)) }
        #expect(cluster.state(1) == .down)
        #expect(logs.lines == ["[HEALTH] Marking \(Self.b2) as UNHEALTHY (3 failed checks: status 500)"])
        let snapshot = cluster.snapshot()[1]
        let last = try #require(snapshot.lastCheck)
        #expect(last.result == .status(500) && last.at == clock.now() && last.latency == .milliseconds(3))
        #expect(snapshot.healthChecks.count(result: "fail", cause: "status_500") == 3)
        #expect(snapshot.healthChecks.count(result: "pass", cause: "ok") == 1)
        #expect(cluster.snapshot()[0].lastCheck == nil)

        for _ in 0..<3 { cluster.probeFinished(0, result: .timeout(.milliseconds(2000)), latency: .seconds(2)) }
        #expect(logs.lines.last == "[HEALTH] Marking \(Self.b1) as UNHEALTHY (3 failed checks: timeout after 2000 ms)")
    }

    @Test("a backend without a health endpoint stays in rotation; the advice is logged once per backend")
    func noHealthEndpoint() {
        let (cluster, _, logs) = makeCluster(count: 2) { $0.activeChecks = true }
        for _ in 0..<10 {
            cluster.probeFinished(0, result: .noHealthEndpoint(status: 404), latency: .milliseconds(1), path: "/health")
            cluster.probeFinished(1, result: .noHealthEndpoint(status: 405), latency: .milliseconds(1), path: "/health")
        }
        #expect(cluster.snapshot().map(\.state) == [.healthy, .healthy])
        #expect(logs.lines.count == 2)
        #expect(logs.lines.allSatisfy { $0.contains("no health endpoint") && $0.contains("--health-path") })
        #expect(logs.lines[0].hasPrefix("[HEALTH] \(Self.b1) answers GET /health with 404"))
        #expect(logs.lines[1].hasPrefix("[HEALTH] \(Self.b2) answers GET /health with 405"))
        #expect(cluster.snapshot()[0].healthChecks.count(result: "pass", cause: "no_health_endpoint") == 10)
    }

    @Test("one outage, one UNHEALTHY line: ejected then down logs DOWN; a failed trial logs EJECTED")
    func oneOutageOneLine() {
        let (cluster, clock, logs) = makeCluster(count: 3) { $0.activeChecks = true }
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        for _ in 0..<3 { cluster.probeFinished(1, result: .refused, latency: .milliseconds(1)) }
        #expect(cluster.state(1) == .down)
        for _ in 0..<2 { cluster.probeFinished(1, result: .passed(status: 200), latency: .milliseconds(1)) }
        #expect(cluster.state(1) == .healthy)
        #expect(logs.lines == [
            "[HEALTH] Marking \(Self.b2) as UNHEALTHY (3 consecutive connection failures)",
            "[HEALTH] Marking \(Self.b2) as DOWN (3 failed checks: refused)",
            "[HEALTH] Marking \(Self.b2) as HEALTHY (2 successful checks)",
        ])
        logs.reset()
        // A 5xx ejection, its trial fails: EJECTED again, not a second UNHEALTHY.
        for i in 0..<6 { cluster.attempt(0, i % 2 == 0 ? .success : .failure(.status5xx)) }
        clock.advance(by: .seconds(5))
        #expect(cluster.choose(excluding: [1, 2]) == .backend(0))
        cluster.attemptFinished(0, outcome: .failure(.status5xx), latency: .milliseconds(1))
        #expect(logs.lines.count == 3)
        #expect(logs.lines.filter { $0.contains(" as UNHEALTHY ") }.count == 1)
        #expect(logs.lines.last == "[HEALTH] Marking \(Self.b1) as EJECTED (trial request failed: 5xx response)")
    }

    @Test("fall, rise, slow start, ejection base and maximum, and the ejected share are configurable")
    func tunables() {
        let (cluster, clock, _) = makeCluster(count: 2) {
            $0.activeChecks = true
            $0.fall = 1
            $0.rise = 4
            $0.slowStart = .zero
            $0.baseEjection = .seconds(2)
            $0.maxEjection = .seconds(3)
            $0.maxEjectedPercent = 100
        }
        cluster.probeFinished(0, result: .refused, latency: .milliseconds(1))
        #expect(cluster.state(0) == .down)  // fall 1
        for _ in 0..<3 { cluster.probeFinished(0, result: .passed(status: 200), latency: .milliseconds(1)) }
        #expect(cluster.state(0) == .down)
        cluster.probeFinished(0, result: .passed(status: 200), latency: .milliseconds(1))
        #expect(cluster.state(0) == .healthy)  // rise 4
        #expect(cluster.snapshot()[0].stateName == .healthy)  // no slow start: no warming
        // With 100% both backends may be ejected passively.
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        #expect(cluster.snapshot().map(\.state) == [.ejected, .ejected])
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(2)))  // base 2 s
        clock.advance(by: .seconds(2))
        #expect(cluster.pick() != nil)
    }

    @Test("state names: warming while the slow-start share ramps, draining over everything; drain logs its state")
    func stateNames() {
        let (cluster, clock, logs) = makeCluster(count: 2) { $0.activeChecks = true }
        #expect(cluster.snapshot().map(\.stateName) == [.healthy, .healthy])
        for _ in 0..<3 { cluster.probeFinished(1, result: .reset, latency: .milliseconds(1)) }
        #expect(cluster.snapshot()[1].stateName == .down && !cluster.snapshot()[1].isEligible)
        for _ in 0..<2 { cluster.probeFinished(1, result: .passed(status: 200), latency: .milliseconds(1)) }
        let warming = cluster.snapshot()[1]
        #expect(warming.state == .healthy && warming.stateName == .warming && warming.isEligible)
        #expect(warming.slowStartFactor < 1)
        clock.advance(by: .seconds(10))
        #expect(cluster.snapshot()[1].stateName == .healthy)
        logs.reset()
        cluster.setDraining(0, true)
        #expect(cluster.snapshot()[0].stateName == .draining && !cluster.snapshot()[0].isEligible)
        cluster.setDraining(0, false)
        #expect(logs.lines == [
            "[ADMIN] Marking \(Self.b1) as DRAINING (drained by an operator)",
            "[ADMIN] Marking \(Self.b1) as HEALTHY (undrained by an operator)",
        ])
        #expect(BackendStateName.allCases.map(\.rawValue) == ["healthy", "warming", "probing", "slow", "ejected", "down", "draining", "overloaded"])
    }
}
