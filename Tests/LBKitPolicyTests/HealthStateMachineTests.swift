import Testing
@testable import LBKitPolicy

@Suite("Health state machine")
struct HealthStateMachineTests {
    static let b2 = "http://127.0.0.1:5002"

    @Test("consecutive failures eject at exactly maxFails, logged once")
    func consecutiveFailures() {
        let (cluster, _, logs) = makeCluster(count: 3)
        cluster.attempt(1, .failure(.connect))
        cluster.attempt(1, .failure(.connect))
        #expect(cluster.state(1) == .healthy)
        #expect(logs.lines.isEmpty)
        cluster.attempt(1, .failure(.connect))
        #expect(cluster.state(1) == .ejected)
        #expect(logs.lines == ["[HEALTH] Marking \(Self.b2) as UNHEALTHY (3 consecutive connection failures)"])
        // Stragglers finishing after the ejection change nothing and log nothing.
        cluster.attempt(1, .failure(.connect))
        #expect(logs.lines.count == 1)
        #expect(cluster.snapshot()[1].ejectionCount == 1)
        #expect(cluster.snapshot()[1].failures.connect == 4)
    }

    @Test("a success resets the consecutive count; maxFails is configurable; kinds are named")
    func consecutiveResetAndKinds() {
        let (cluster, _, logs) = makeCluster(count: 4) { $0.maxFails = 2; $0.failureRateMinimumRequests = 10 }
        cluster.attempt(0, .failure(.status5xx))
        cluster.attempt(0, .success)
        cluster.attempt(0, .failure(.status5xx))
        #expect(cluster.state(0) == .healthy)
        cluster.attempt(0, .failure(.status5xx))
        #expect(cluster.state(0) == .ejected)
        cluster.attempt(1, .failure(.timeout), latency: .seconds(1))
        cluster.attempt(1, .failure(.reset))
        #expect(cluster.state(1) == .ejected)
        #expect(logs.lines == [
            "[HEALTH] Marking http://127.0.0.1:5001 as UNHEALTHY (2 consecutive 5xx responses)",
            "[HEALTH] Marking http://127.0.0.1:5002 as UNHEALTHY (2 consecutive failures)",
        ])
    }

    @Test("a backend failing every other request is ejected by failure rate within 20 attempts")
    func alternatingFailures() {
        let (cluster, _, logs) = makeCluster(count: 3)
        var attempts = 0
        while cluster.state(1) == .healthy && attempts < 20 {
            cluster.attempt(1, attempts % 2 == 0 ? .success : .failure(.status5xx))
            attempts += 1
        }
        #expect(cluster.state(1) == .ejected)
        #expect(attempts == 6)  // the minimum volume
        #expect(logs.lines == ["[HEALTH] Marking \(Self.b2) as UNHEALTHY (failure rate 50% over last 6 requests)"])
    }

    @Test("failure rate over a full window after a clean history")
    func failureRateFullWindow() {
        let (cluster, _, logs) = makeCluster(count: 3)
        for _ in 0..<10 { cluster.attempt(1, .success) }
        for _ in 0..<4 {
            cluster.attempt(1, .success)
            cluster.attempt(1, .failure(.status5xx))
        }
        #expect(cluster.state(1) == .healthy)  // 4 of the last 10
        cluster.attempt(1, .success)
        cluster.attempt(1, .failure(.status5xx))
        #expect(cluster.state(1) == .ejected)
        #expect(logs.lines == ["[HEALTH] Marking \(Self.b2) as UNHEALTHY (failure rate 50% over last 10 requests)"])
    }

    @Test("ejected → probing after the ejection time → healthy after a successful trial")
    func halfOpenRecovery() {
        let (cluster, clock, logs) = makeCluster(count: 2)
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        clock.advance(by: .milliseconds(4999))
        #expect((0..<4).compactMap { _ in cluster.pick() } == [0, 0, 0, 0])
        clock.advance(by: .milliseconds(1))
        #expect(cluster.state(1) == .probing)
        #expect(cluster.pick() == 1)  // the trial (its turn after four picks of 0)
        // Only one trial at a time.
        #expect((0..<3).compactMap { _ in cluster.pick() } == [0, 0, 0])
        cluster.attempt(1, .success)
        #expect(cluster.state(1) == .healthy)
        #expect(logs.lines == [
            "[HEALTH] Marking \(Self.b2) as UNHEALTHY (3 consecutive connection failures)",
            "[HEALTH] Marking \(Self.b2) as PROBING (ejection time 5 s elapsed, sending a trial request)",
            "[HEALTH] Marking \(Self.b2) as HEALTHY (trial request succeeded)",
        ])
    }

    @Test("ejection time grows with each consecutive ejection and is capped")
    func ejectionGrowthAndCap() {
        let (cluster, clock, logs) = makeCluster(count: 1)
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        var observed: [Int64] = []
        for _ in 0..<14 {
            guard case .noneEligible(let wait) = cluster.choose(excluding: []) else {
                Issue.record("expected no eligible backend")
                return
            }
            observed.append(wait.components.seconds)
            clock.advance(by: wait)
            #expect(cluster.pick() == 0)  // trial
            cluster.attemptStarted(0)
            cluster.attemptFinished(0, outcome: .failure(.connect), latency: .milliseconds(1))
        }
        #expect(observed == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 60, 60])
        #expect(cluster.snapshot()[0].ejectionCount == 15)
        #expect(logs.lines.filter { $0.contains("trial request failed: connection failure") }.count == 14)
        #expect(logs.lines.filter { $0.contains("PROBING") }.count == 14)
    }

    @Test("the ejection multiplier is forgiven after a long healthy period")
    func ejectionForgiven() {
        let (cluster, clock, _) = makeCluster(count: 1)
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        clock.advance(by: .seconds(5))
        #expect(cluster.pick() == 0)
        cluster.attempt(0, .success)
        // Soon again: twice as long.
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(10)))
        clock.advance(by: .seconds(10))
        #expect(cluster.pick() == 0)
        cluster.attempt(0, .success)
        // After a minute of health: back to the base time.
        clock.advance(by: .seconds(60))
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(5)))
    }

    @Test("at most maxEjectedPercent of the backends are passively ejected; down is not capped")
    func maxEjectedCap() {
        let (cluster, _, logs) = makeCluster(count: 4) { $0.activeChecks = true }
        for backend in 0..<3 {
            for _ in 0..<3 { cluster.attempt(backend, .failure(.connect)) }
        }
        let states = cluster.snapshot().map(\.state)
        #expect(states == [.ejected, .ejected, .healthy, .healthy])
        #expect(logs.lines.count == 2)
        // Active checks may still take the rest down.
        for _ in 0..<3 {
            cluster.probeFinished(2, success: false, latency: .milliseconds(1))
            cluster.probeFinished(3, success: false, latency: .milliseconds(1))
        }
        #expect(cluster.snapshot().map(\.state) == [.ejected, .ejected, .down, .down])
        #expect(logs.lines.suffix(2) == [
            "[HEALTH] Marking http://127.0.0.1:5003 as UNHEALTHY (3 failed checks)",
            "[HEALTH] Marking http://127.0.0.1:5004 as UNHEALTHY (3 failed checks)",
        ])
    }

    @Test("the cap frees up when an ejected backend recovers")
    func capReleases() {
        let (cluster, _, _) = makeCluster(count: 2) { $0.activeChecks = true }
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        #expect(cluster.snapshot().map(\.state) == [.ejected, .healthy])
        cluster.probeFinished(0, success: true, latency: .milliseconds(2))
        cluster.probeFinished(0, success: true, latency: .milliseconds(2))
        #expect(cluster.state(0) == .healthy)
        cluster.attempt(1, .failure(.connect))  // its streak is still 4: ejected now
        #expect(cluster.snapshot().map(\.state) == [.healthy, .ejected])
    }

    @Test("fall failed checks mark down, rise passing checks bring it back")
    func riseAndFall() {
        let (cluster, _, logs) = makeCluster(count: 2) { $0.activeChecks = true }
        cluster.probeFinished(1, success: false, latency: .milliseconds(1))
        cluster.probeFinished(1, success: false, latency: .milliseconds(1))
        cluster.probeFinished(1, success: true, latency: .milliseconds(1))  // resets the count
        cluster.probeFinished(1, success: false, latency: .milliseconds(1))
        cluster.probeFinished(1, success: false, latency: .milliseconds(1))
        #expect(cluster.state(1) == .healthy)
        cluster.probeFinished(1, success: false, latency: .milliseconds(1))
        #expect(cluster.state(1) == .down)
        #expect((0..<4).compactMap { _ in cluster.pick() } == [0, 0, 0, 0])
        cluster.probeFinished(1, success: true, latency: .milliseconds(1))
        #expect(cluster.state(1) == .down)
        cluster.probeFinished(1, success: true, latency: .milliseconds(1))
        #expect(cluster.state(1) == .healthy)
        #expect(logs.lines == [
            "[HEALTH] Marking \(Self.b2) as UNHEALTHY (3 failed checks)",
            "[HEALTH] Marking \(Self.b2) as HEALTHY (2 successful checks)",
        ])
    }

    @Test("down backends wait for checks, not for a timer; Retry-After reflects rise x interval")
    func downHasNoTimer() {
        let (cluster, clock, _) = makeCluster(count: 1) { $0.activeChecks = true }
        for _ in 0..<3 { cluster.probeFinished(0, success: false, latency: .milliseconds(1)) }
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(4)))
        clock.advance(by: .seconds(600))
        #expect(cluster.state(0) == .down)
        cluster.probeFinished(0, success: true, latency: .milliseconds(1))
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(2)))
    }

    @Test("a passing active check un-ejects a connectivity ejection (Envoy-style)")
    func activeCheckUnejects() {
        let (cluster, _, logs) = makeCluster(count: 2) { $0.activeChecks = true }
        // Checks that passed before the ejection do not count.
        cluster.probeFinished(1, success: true, latency: .milliseconds(1))
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        cluster.probeFinished(1, success: true, latency: .milliseconds(1))
        #expect(cluster.state(1) == .ejected)
        cluster.probeFinished(1, success: true, latency: .milliseconds(1))
        #expect(cluster.state(1) == .healthy)
        #expect(logs.lines == [
            "[HEALTH] Marking \(Self.b2) as UNHEALTHY (3 consecutive connection failures)",
            "[HEALTH] Marking \(Self.b2) as HEALTHY (2 successful checks)",
        ])
    }

    @Test("passing checks do not un-eject a 5xx / failure-rate ejection: ejection time, then a trial")
    func applicationFailuresWaitForTrial() {
        let (cluster, clock, _) = makeCluster(count: 2) { $0.activeChecks = true }
        for i in 0..<6 { cluster.attempt(1, i % 2 == 0 ? .success : .failure(.status5xx)) }
        #expect(cluster.state(1) == .ejected)
        // /health keeps answering 200 while the application fails every other request.
        for _ in 0..<5 { cluster.probeFinished(1, success: true, latency: .milliseconds(1)) }
        #expect(cluster.state(1) == .ejected)
        clock.advance(by: .seconds(5))  // base ejection time
        #expect(cluster.choose(excluding: [0]) == .backend(1))  // the half-open trial
        #expect(cluster.state(1) == .probing)
        cluster.attempt(1, .success)
        #expect(cluster.state(1) == .healthy)
    }

    @Test("failing checks take an ejected backend down")
    func ejectedThenDown() {
        let (cluster, clock, _) = makeCluster(count: 2) { $0.activeChecks = true }
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        for _ in 0..<3 { cluster.probeFinished(1, success: false, latency: .milliseconds(1)) }
        #expect(cluster.state(1) == .down)
        clock.advance(by: .seconds(30))
        #expect(cluster.state(1) == .down)  // no timer brings down backends back
    }

    @Test("every backend ineligible: noneEligible with Retry-After until the earliest return")
    func noneEligible() {
        let (cluster, clock, _) = makeCluster(count: 2) { $0.maxEjectedPercent = 100 }
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        clock.advance(by: .milliseconds(2500))
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        // Backend 0 is back in 2.5 s: rounded up to whole seconds.
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(3)))
        let (fresh, _, _) = makeCluster(count: 2)
        #expect(fresh.choose(excluding: [0, 1]) == .noneEligible(retryAfter: .seconds(1)))
        let (empty, _, _) = makeCluster(count: 0)
        #expect(empty.choose(excluding: []) == .noneEligible(retryAfter: .seconds(1)))
    }

    @Test("a trial that never reports back is forgotten after maxEjection")
    func lostTrial() {
        let (cluster, clock, _) = makeCluster(count: 1)
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        clock.advance(by: .seconds(5))
        #expect(cluster.pick() == 0)
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(1)))
        clock.advance(by: .seconds(59))
        #expect(cluster.pick() == nil)
        clock.advance(by: .seconds(1))
        #expect(cluster.pick() == 0)
    }

    @Test("the state machine is usable on its own and reports one transition per change")
    func standaloneMachine() {
        let clock = ManualClock()
        var machine = HealthStateMachine(policy: HealthPolicy(maxFails: 2), now: clock.now())
        let first = machine.attemptFinished(failure: .timeout, sample: nil, recentLatency: nil, at: clock.now(), allowExclusion: true)
        #expect(first == nil)
        let second = machine.attemptFinished(failure: .timeout, sample: nil, recentLatency: nil, at: clock.now(), allowExclusion: true)
        #expect(second?.from == .healthy && second?.to == .ejected)
        #expect(second?.logLine(url: "http://x") == "[HEALTH] Marking http://x as UNHEALTHY (2 consecutive timeouts)")
        #expect(machine.excludedUntil == clock.now() + .seconds(5))
        #expect(!machine.isEligible(at: clock.now()))
        clock.advance(by: .seconds(5))
        #expect(machine.tick(at: clock.now())?.to == .probing)
        #expect(machine.tick(at: clock.now()) == nil)
    }

    @Test("out-of-range indices are ignored")
    func badIndices() {
        let (cluster, _, logs) = makeCluster(count: 2)
        cluster.attemptStarted(7)
        cluster.attemptFinished(-1, outcome: .failure(.connect), latency: .zero)
        cluster.probeFinished(9, success: false, latency: .zero)
        #expect(logs.lines.isEmpty)
        #expect(cluster.snapshot().map(\.requests) == [0, 0])
    }
}

@Suite("Slow exclusion and slow start")
struct SlowExclusionTests {
    static let b2 = "http://127.0.0.1:5002"

    @Test("a backend answering in 2 x maxDelay is excluded within 3 samples, logged once")
    func slowAfterFewSamples() {
        let (cluster, _, logs) = makeCluster(count: 2) { $0.maxDelay = .milliseconds(200) }
        for _ in 0..<5 { cluster.attempt(1, .success, latency: .milliseconds(20)) }
        var samples = 0
        while cluster.state(1) == .healthy && samples < 10 {
            cluster.attempt(1, .success, latency: .milliseconds(512))
            samples += 1
        }
        #expect(samples <= 3)
        #expect(cluster.state(1) == .slow)
        #expect(logs.lines == ["[HEALTH] Marking \(Self.b2) as SLOW (latency 512 ms > max-delay 200 ms)"])
        #expect((0..<4).compactMap { _ in cluster.pick() } == [0, 0, 0, 0])
    }

    @Test("probe samples alone catch an idle backend turning slow")
    func slowByProbes() {
        let (cluster, _, logs) = makeCluster(count: 2) {
            $0.maxDelay = .milliseconds(200)
            $0.activeChecks = true
        }
        cluster.probeFinished(1, success: true, latency: .milliseconds(400))
        #expect(cluster.state(1) == .healthy)
        cluster.probeFinished(1, success: true, latency: .milliseconds(400))
        #expect(cluster.state(1) == .slow)
        #expect(logs.lines == ["[HEALTH] Marking \(Self.b2) as SLOW (check latency 400 ms > max-delay 200 ms)"])
    }

    @Test("timed-out attempts and probes count as slow samples")
    func timeoutsAreSamples() {
        let (cluster, _, _) = makeCluster(count: 4) {
            $0.maxDelay = .milliseconds(200)
            $0.activeChecks = true
            $0.maxFails = 10
        }
        cluster.attempt(1, .failure(.timeout), latency: .seconds(1))
        cluster.attempt(1, .failure(.timeout), latency: .seconds(1))
        #expect(cluster.state(1) == .slow)
        #expect(cluster.probeTimeout(for: 2) == .seconds(2))
        cluster.probeFinished(2, success: false, latency: .seconds(2))
        cluster.probeFinished(2, success: false, latency: .seconds(2))
        #expect(cluster.state(2) == .slow)
    }

    @Test("one outlier does not exclude")
    func oneOutlier() {
        let (cluster, _, logs) = makeCluster(count: 2) { $0.maxDelay = .milliseconds(200) }
        for latency in [30, 40, 900, 35, 30, 1500, 40, 30] {
            cluster.attempt(1, .success, latency: .milliseconds(latency))
            #expect(cluster.state(1) == .healthy)
        }
        #expect(logs.lines.isEmpty)
        // Two of the last three over the limit do exclude.
        cluster.attempt(1, .success, latency: .milliseconds(900))
        cluster.attempt(1, .success, latency: .milliseconds(30))
        cluster.attempt(1, .success, latency: .milliseconds(700))
        #expect(cluster.state(1) == .slow)
    }

    @Test("no maxDelay: no slow exclusion")
    func noMaxDelay() {
        let (cluster, _, _) = makeCluster(count: 2)
        for _ in 0..<10 { cluster.attempt(1, .success, latency: .seconds(3)) }
        #expect(cluster.state(1) == .healthy)
    }

    @Test("re-admission needs rise consecutive checks under 0.8 x maxDelay")
    func readmissionHysteresis() {
        let (cluster, _, logs) = makeCluster(count: 2) {
            $0.maxDelay = .milliseconds(200)
            $0.activeChecks = true
        }
        cluster.probeFinished(1, success: true, latency: .milliseconds(300))
        cluster.probeFinished(1, success: true, latency: .milliseconds(300))
        #expect(cluster.state(1) == .slow)
        cluster.probeFinished(1, success: true, latency: .milliseconds(150))
        cluster.probeFinished(1, success: true, latency: .milliseconds(190))  // under maxDelay, not under 160
        #expect(cluster.state(1) == .slow)
        cluster.probeFinished(1, success: true, latency: .milliseconds(150))
        cluster.probeFinished(1, success: false, latency: .milliseconds(5))  // a failure resets too
        cluster.probeFinished(1, success: true, latency: .milliseconds(150))
        #expect(cluster.state(1) == .slow)
        cluster.probeFinished(1, success: true, latency: .milliseconds(150))
        #expect(cluster.state(1) == .healthy)
        #expect(logs.lines == [
            "[HEALTH] Marking \(Self.b2) as SLOW (check latency 300 ms > max-delay 200 ms)",
            "[HEALTH] Marking \(Self.b2) as HEALTHY (2 consecutive checks under 160 ms)",
        ])
    }

    @Test("without active checks a slow backend gets trial requests after the exclusion time")
    func slowWithoutActiveChecks() {
        let (cluster, clock, logs) = makeCluster(count: 2) { $0.maxDelay = .milliseconds(200) }
        cluster.attempt(1, .success, latency: .milliseconds(400))
        cluster.attempt(1, .success, latency: .milliseconds(400))
        #expect(cluster.state(1) == .slow)
        clock.advance(by: .seconds(5))
        #expect(cluster.state(1) == .probing)
        cluster.attempt(1, .success, latency: .milliseconds(50))
        #expect(cluster.state(1) == .probing)
        cluster.attempt(1, .success, latency: .milliseconds(50))
        #expect(cluster.state(1) == .healthy)
        #expect(logs.lines == [
            "[HEALTH] Marking \(Self.b2) as SLOW (latency 400 ms > max-delay 200 ms)",
            "[HEALTH] Marking \(Self.b2) as PROBING (exclusion time 5 s elapsed, sending a trial request)",
            "[HEALTH] Marking \(Self.b2) as HEALTHY (2 consecutive trial requests under 160 ms)",
        ])
    }

    @Test("a slow trial sends the backend back to slow for longer")
    func slowTrialFails() {
        let (cluster, clock, _) = makeCluster(count: 1) { $0.maxDelay = .milliseconds(200) }
        cluster.attempt(0, .success, latency: .milliseconds(400))
        cluster.attempt(0, .success, latency: .milliseconds(400))
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(5)))
        clock.advance(by: .seconds(5))
        #expect(cluster.pick() == 0)
        cluster.attempt(0, .success, latency: .milliseconds(450))
        #expect(cluster.state(0) == .slow)
        #expect(cluster.choose(excluding: []) == .noneEligible(retryAfter: .seconds(10)))
    }

    @Test("slow start ramps the share from 10% to 100% over the window")
    func slowStartRamp() {
        let (cluster, clock, _) = makeCluster(count: 2) {
            $0.maxDelay = .milliseconds(200)
            $0.activeChecks = true
        }
        #expect(cluster.snapshot()[1].slowStartFactor == 1)  // no ramp at boot
        cluster.probeFinished(1, success: true, latency: .milliseconds(300))
        cluster.probeFinished(1, success: true, latency: .milliseconds(300))
        cluster.probeFinished(1, success: true, latency: .milliseconds(50))
        cluster.probeFinished(1, success: true, latency: .milliseconds(50))
        #expect(cluster.state(1) == .healthy)
        #expect(abs(cluster.snapshot()[1].slowStartFactor - 0.1) < 1e-9)

        // Share at the start of the window: about 0.1 / 1.1 of the picks.
        var hits = 0
        for _ in 0..<2000 where cluster.pick() == 1 { hits += 1 }
        #expect(hits > 120 && hits < 240)

        clock.advance(by: .seconds(5))
        #expect(abs(cluster.snapshot()[1].slowStartFactor - 0.55) < 1e-9)
        clock.advance(by: .seconds(5))
        #expect(cluster.snapshot()[1].slowStartFactor == 1)
        hits = 0
        for _ in 0..<2000 where cluster.pick() == 1 { hits += 1 }
        #expect(hits == 1000)
    }

    @Test("slow start applies after every re-admission and can be disabled")
    func slowStartAfterEjection() {
        let (cluster, clock, _) = makeCluster(count: 2)
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        clock.advance(by: .seconds(5))
        #expect(cluster.pick() == 0)
        #expect(cluster.pick() == 1)
        cluster.attempt(1, .success)
        #expect(abs(cluster.snapshot()[1].slowStartFactor - 0.1) < 1e-9)

        let (noRamp, clock2, _) = makeCluster(count: 2) { $0.slowStart = .zero }
        for _ in 0..<3 { noRamp.attempt(1, .failure(.connect)) }
        clock2.advance(by: .seconds(5))
        _ = noRamp.pick()
        #expect(noRamp.pick() == 1)
        noRamp.attempt(1, .success)
        #expect(noRamp.snapshot()[1].slowStartFactor == 1)
    }
}
