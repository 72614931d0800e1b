import Testing
@testable import LBKitPolicy

/// Re-admission is judged by the traffic that excluded: a backend slow (or hung) on real requests
/// comes back only through trial requests, with exponential back-off, whatever its health checks
/// say. All on a ManualClock.
@Suite("Re-admission judged by the traffic that was slow")
struct ReadmissionTests {
    static let b1 = "http://127.0.0.1:5001"
    static let b2 = "http://127.0.0.1:5002"

    /// Two slow real requests exclude backend `index` as slow.
    func makeSlow(_ cluster: BackendCluster, _ index: Int, latency: Duration = .milliseconds(400)) {
        cluster.attempt(index, .success, latency: latency)
        cluster.attempt(index, .success, latency: latency)
    }

    @Test("slow on real requests, fast on checks: checks never re-admit it; trials back off 5, 10, 20, 40, 60, 60 s")
    func fastChecksDoNotReadmit() {
        let (cluster, clock, logs) = makeCluster(count: 1) {
            $0.maxDelay = .milliseconds(200)
            $0.activeChecks = true
        }
        makeSlow(cluster, 0)
        #expect(cluster.state(0) == .slow)
        #expect(cluster.snapshot()[0].readmission == .trialRequests)
        var waits: [Int64] = []
        for _ in 0..<6 {
            guard case .noneEligible(let wait) = cluster.choose(excluding: []) else {
                Issue.record("a slow backend must not be chosen before its exclusion time")
                return
            }
            waits.append(wait.components.seconds)
            // Fast checks all along the exclusion: the health path is fine, the real route is not.
            for _ in 0..<5 {
                clock.advance(by: wait / 5)
                cluster.probeFinished(0, success: true, latency: .milliseconds(2))
            }
            var trial = false
            #expect(cluster.choose(excluding: [], trial: &trial) == .backend(0))
            #expect(trial)
            cluster.attemptStarted(0)
            cluster.attemptFinished(0, outcome: .success, latency: .milliseconds(400))   // still slow
            #expect(cluster.state(0) == .slow)
        }
        #expect(waits == [5, 10, 20, 40, 60, 60])
        // One SLOW line when it left, then PROBING/SLOW per trial: never HEALTHY.
        #expect(!logs.lines.contains { $0.contains("as HEALTHY") })
        #expect(logs.lines.filter { $0.contains("as PROBING") }.count == 6)
        #expect(logs.lines.filter { $0.contains("as SLOW") }.count == 7)
        #expect(logs.lines.last == "[HEALTH] Marking \(Self.b1) as SLOW (trial request: latency 400 ms > max-delay 200 ms)")
        let exclusions = cluster.snapshot()[0].exclusions
        #expect(exclusions[.latency] == 1 && exclusions[.trialFailed] == 6 && exclusions.total == 7)

        // Fast on its real route again: two fast trials in a row re-admit it.
        clock.advance(by: .seconds(60))
        for _ in 0..<2 {
            #expect(cluster.pick() == 0)
            cluster.attempt(0, .success, latency: .milliseconds(20))
        }
        #expect(cluster.state(0) == .healthy)
        #expect(logs.lines.last == "[HEALTH] Marking \(Self.b1) as HEALTHY (2 consecutive trial requests under 160 ms)")
        #expect(cluster.snapshot()[0].readmission == nil)
    }

    @Test("a trial that times out sends a latency-excluded backend back to slow, for twice as long")
    func trialTimeout() {
        let (cluster, clock, logs) = makeCluster(count: 2) { $0.maxDelay = .milliseconds(200) }
        makeSlow(cluster, 1)
        clock.advance(by: .seconds(5))
        #expect(cluster.pick(excluding: [0]) == 1)
        cluster.attemptStarted(1)
        cluster.attemptFinished(1, outcome: .failure(.timeout), latency: .seconds(1))
        #expect(cluster.state(1) == .slow)
        #expect(logs.lines.last == "[HEALTH] Marking \(Self.b2) as SLOW (trial request timed out after 1 s)")
        clock.advance(by: .milliseconds(9999))
        #expect(cluster.pick(excluding: [0]) == nil)
        clock.advance(by: .milliseconds(1))
        #expect(cluster.pick(excluding: [0]) == 1)
    }

    @Test("checks may take a slow backend down; passing checks then lead to a trial, not straight to healthy")
    func downThenTrial() {
        let (cluster, _, logs) = makeCluster(count: 2) {
            $0.maxDelay = .milliseconds(200)
            $0.activeChecks = true
        }
        makeSlow(cluster, 1)
        for _ in 0..<3 { cluster.probeFinished(1, success: false, latency: .milliseconds(1)) }
        #expect(cluster.state(1) == .down)
        for _ in 0..<2 { cluster.probeFinished(1, success: true, latency: .milliseconds(1)) }
        #expect(cluster.state(1) == .probing)
        #expect(logs.lines == [
            "[HEALTH] Marking \(Self.b2) as SLOW (latency 400 ms > max-delay 200 ms)",
            "[HEALTH] Marking \(Self.b2) as DOWN (3 failed checks)",
            "[HEALTH] Marking \(Self.b2) as PROBING (2 successful checks; a trial request decides, since real requests excluded it)",
        ])
        // The trial is a latency trial: it needs `rise` fast answers.
        for _ in 0..<2 {
            #expect(cluster.pick(excluding: [0]) == 1)
            cluster.attempt(1, .success, latency: .milliseconds(10))
        }
        #expect(cluster.state(1) == .healthy)
        let exclusions = cluster.snapshot()[1].exclusions
        #expect(exclusions[.latency] == 1 && exclusions[.healthChecks] == 1)
    }

    @Test("without max-delay, timed-out real requests: fast checks do not re-admit; trials back off doubling")
    func timeoutsWithoutMaxDelay() {
        let (cluster, clock, logs) = makeCluster(count: 2) { $0.activeChecks = true }
        for _ in 0..<3 { cluster.attempt(1, .failure(.timeout), latency: .seconds(3)) }
        #expect(cluster.state(1) == .ejected)
        #expect(cluster.snapshot()[1].readmission == .trialRequests)
        for _ in 0..<5 { cluster.probeFinished(1, success: true, latency: .milliseconds(1)) }
        #expect(cluster.state(1) == .ejected)
        clock.advance(by: .seconds(5))
        #expect(cluster.pick(excluding: [0]) == 1)
        cluster.attemptStarted(1)
        cluster.attemptFinished(1, outcome: .failure(.timeout), latency: .seconds(3))
        #expect(cluster.state(1) == .ejected)
        clock.advance(by: .milliseconds(9999))
        #expect(cluster.pick(excluding: [0]) == nil)   // 10 s, not 5 s
        clock.advance(by: .milliseconds(1))
        #expect(cluster.pick(excluding: [0]) == 1)
        cluster.attempt(1, .success)
        #expect(cluster.state(1) == .healthy)
        #expect(!logs.lines.contains { $0.contains("successful checks") })
        // Refused connections are different: a passing check shows the backend is back.
        for _ in 0..<3 { cluster.attempt(0, .failure(.connect)) }
        #expect(cluster.snapshot()[0].readmission == .healthChecks)
    }

    @Test("a healthy backend marked down by checks still comes back on checks")
    func downByChecksOnly() {
        let (cluster, _, _) = makeCluster(count: 2) { $0.activeChecks = true }
        for _ in 0..<3 { cluster.probeFinished(1, success: false, latency: .milliseconds(1)) }
        #expect(cluster.snapshot()[1].readmission == .healthChecks)
        for _ in 0..<2 { cluster.probeFinished(1, success: true, latency: .milliseconds(1)) }
        #expect(cluster.state(1) == .healthy)
    }

    @Test("slowness of real requests is judged on real requests: fast checks in between do not hide it")
    func sourcesJudgedApart() {
        let (cluster, _, _) = makeCluster(count: 2) {
            $0.maxDelay = .milliseconds(200)
            $0.activeChecks = true
        }
        cluster.attempt(1, .success, latency: .milliseconds(400))
        cluster.probeFinished(1, success: true, latency: .milliseconds(5))
        cluster.probeFinished(1, success: true, latency: .milliseconds(5))
        #expect(cluster.state(1) == .healthy)
        cluster.attempt(1, .success, latency: .milliseconds(400))
        #expect(cluster.state(1) == .slow)
        #expect(cluster.snapshot()[1].exclusions[.latency] == 1)
    }

    @Test("a slow health path is judged by checks and re-admitted by checks")
    func slowHealthPath() {
        let (cluster, _, _) = makeCluster(count: 2) {
            $0.maxDelay = .milliseconds(200)
            $0.activeChecks = true
        }
        cluster.probeFinished(1, success: true, latency: .milliseconds(400))
        cluster.probeFinished(1, success: true, latency: .milliseconds(400))
        #expect(cluster.state(1) == .slow)
        let slow = cluster.snapshot()[1]
        #expect(slow.readmission == .healthChecks && slow.exclusions[.probeLatency] == 1)
        cluster.probeFinished(1, success: true, latency: .milliseconds(10))
        cluster.probeFinished(1, success: true, latency: .milliseconds(10))
        #expect(cluster.state(1) == .healthy)
    }

    @Test("a hung backend: passing checks never re-admit it; its trials back off exponentially")
    func hungBackoff() {
        let clock = ManualClock()
        var machine = HealthStateMachine(policy: HealthPolicy(activeChecks: true), now: clock.now())
        let hung = machine.markHung(reason: "hung", at: clock.now(), allowExclusion: true)
        #expect(hung?.to == .ejected && hung?.cause == .hung)
        var waits: [Duration] = []
        for _ in 0..<4 {
            let until = machine.excludedUntil ?? clock.now()
            waits.append(until - clock.now())
            for _ in 0..<4 {
                #expect(machine.probeFinished(success: true, sample: .milliseconds(1), recentLatency: nil,
                                              at: clock.now(), allowExclusion: true) == nil)
            }
            clock.advance(by: until - clock.now())
            #expect(machine.tick(at: clock.now())?.to == .probing)
            machine.trialStarted(at: clock.now())
            let again = machine.attemptFinished(failure: .timeout, sample: .seconds(3), recentLatency: nil,
                                                at: clock.now(), allowExclusion: true)
            #expect(again?.to == .ejected && again?.cause == .trialFailed)
            #expect(again?.logWord == "EJECTED")
        }
        #expect(waits == [.seconds(5), .seconds(10), .seconds(20), .seconds(40)])
        #expect(machine.readmission == .trialRequests)
    }

    @Test("a failure ejection keeps Envoy's linear back-off; latency verdicts double")
    func backoffShapes() {
        let linear = (1...5).map { ExclusionBackoff.duration(step: $0, exponential: false, base: .seconds(5), max: .seconds(60)) }
        let doubling = (1...6).map { ExclusionBackoff.duration(step: $0, exponential: true, base: .seconds(5), max: .seconds(60)) }
        #expect(linear == [.seconds(5), .seconds(10), .seconds(15), .seconds(20), .seconds(25)])
        #expect(doubling == [.seconds(5), .seconds(10), .seconds(20), .seconds(40), .seconds(60), .seconds(60)])
        #expect(ExclusionBackoff.duration(step: 1000, exponential: true, base: .seconds(5), max: .seconds(60)) == .seconds(60))
        #expect(ExclusionBackoff.duration(step: 0, exponential: true, base: .milliseconds(200), max: .seconds(2)) == .milliseconds(200))
    }

    @Test("only a half-open backend's request is a trial; a re-admission with slow start is named warming")
    func trialFlagAndWarming() {
        let (cluster, clock, _) = makeCluster(count: 2)
        var trial = true
        #expect(cluster.choose(excluding: [1], trial: &trial) == .backend(0))
        #expect(!trial)
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        clock.advance(by: .seconds(5))
        #expect(cluster.choose(excluding: [0], trial: &trial) == .backend(1))
        #expect(trial)

        var machine = HealthStateMachine(policy: HealthPolicy(), now: clock.now())
        for _ in 0..<3 {
            _ = machine.attemptFinished(failure: .connect, sample: nil, recentLatency: nil, at: clock.now(), allowExclusion: true)
        }
        clock.advance(by: .seconds(5))
        _ = machine.tick(at: clock.now())
        let back = machine.attemptFinished(failure: nil, sample: .milliseconds(1), recentLatency: nil, at: clock.now(), allowExclusion: true)
        #expect(back?.to == .healthy && back?.stateName == .warming)
        #expect(back?.logEvent(url: Self.b1).metadata["state"] == "warming")
        let event = HealthTransition(from: .healthy, to: .ejected, reason: "x", at: clock.now(), cause: .failureRate).logEvent(url: Self.b1)
        #expect(event.metadata["cause"] == "failure_rate")
    }
}
