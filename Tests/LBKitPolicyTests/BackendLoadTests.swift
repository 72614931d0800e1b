import Testing
@testable import LBKitPolicy

@Suite("Backend-reported load: agent words, cpu/memory thresholds with hysteresis")
struct BackendLoadTests {
    static let b1 = "http://127.0.0.1:5001"
    static let b2 = "http://127.0.0.1:5002"

    // MARK: Reading reports

    @Test("agent header words: ready/up, drain, down/maint, N% and weight:N%, cpu:F, memory:F; unknown words ignored")
    func agentWords() {
        #expect(BackendLoadReport(agentHeader: "drain").agent == .drain)
        #expect(BackendLoadReport(agentHeader: "DOWN").agent == .down)
        #expect(BackendLoadReport(agentHeader: "maint").agent == .down)
        #expect(BackendLoadReport(agentHeader: "up").agent == .ready)
        #expect(BackendLoadReport(agentHeader: "ready 75%").weightPercent == 75)
        #expect(BackendLoadReport(agentHeader: "ready 75%").agent == .ready)
        #expect(BackendLoadReport(agentHeader: "weight:50%, drain") == BackendLoadReport(agent: .drain, weightPercent: 50))
        #expect(BackendLoadReport(agentHeader: "weight:250%").weightPercent == 100)
        #expect(BackendLoadReport(agentHeader: "cpu:0.95 memory=0.2") == BackendLoadReport(cpu: 0.95, memory: 0.2))
        #expect(BackendLoadReport(agentHeader: "cpu:inf cpu:nan cpu:-1 memory:0x1p3").isEmpty)
        #expect(BackendLoadReport(agentHeader: "frobnicate, maybe:3").isEmpty)
        #expect(BackendLoadReport(agentHeader: "").isEmpty)
    }

    @Test("JSON body: top-level cpu and memory numbers only; malformed or nested input reports nothing")
    func jsonBody() {
        func report(_ text: String) -> BackendLoadReport { BackendLoadReport(jsonBody: Array(text.utf8)) }
        #expect(report(#"{"status":"ok","cpu":0.95,"memory":0.2}"#) == BackendLoadReport(cpu: 0.95, memory: 0.2))
        #expect(report(#" { "memory" : 1e-1 , "status" : "o\"k,cpu" } "#) == BackendLoadReport(memory: 0.1))
        #expect(report(#"{"nested":{"cpu":0.9},"list":[{"cpu":1}],"cpu":0.3}"#) == BackendLoadReport(cpu: 0.3))
        #expect(report(#"{"cpu":"0.9","memory":true}"#).isEmpty)
        #expect(report(#"{"cpu":-0.5}"#).isEmpty)
        #expect(report(#"[{"cpu":0.9}]"#).isEmpty)
        #expect(report(#"{"status":"ok"}"#).isEmpty)
        #expect(report(#"{"cpu":0.9"#) == BackendLoadReport(cpu: 0.9))
        #expect(report(#"{"a":"unterminated"#).isEmpty)
        #expect(report("<html>404</html>").isEmpty)
        #expect(report("").isEmpty)
        // The header wins over the body.
        #expect(report(#"{"cpu":0.2}"#).overridden(by: BackendLoadReport(agentHeader: "cpu:0.7 drain"))
                == BackendLoadReport(cpu: 0.7, agent: .drain))
    }

    // MARK: The gate

    @Test("over a threshold: out at once; back after two reports under 90% of it, not at the threshold itself")
    func hysteresis() {
        let clock = ManualClock()
        var gate = BackendLoadGate(policy: BackendLoadPolicy(maxCPU: 0.8, maxMemory: 0.5), now: clock.now())
        #expect(gate.record(BackendLoadReport(cpu: 0.8, memory: 0.5), at: clock.now()) == nil)  // at the threshold: fine
        #expect(gate.admits)
        clock.advance(by: .seconds(1))
        let out = gate.record(BackendLoadReport(cpu: 0.81, memory: 0.1), at: clock.now())
        #expect(out?.to == .overloaded && out?.from == nil)
        #expect(out?.reason == "cpu 0.81 > max 0.8")
        #expect(!gate.admits && gate.overloadCount == 1 && gate.since == clock.now())
        // Just under the threshold is not enough (0.8 x 0.9 = 0.72).
        for _ in 0..<5 {
            clock.advance(by: .seconds(1))
            #expect(gate.record(BackendLoadReport(cpu: 0.75, memory: 0.1), at: clock.now()) == nil)
        }
        #expect(!gate.admits)
        // One report under the mark, then one over it again: the count starts over.
        #expect(gate.record(BackendLoadReport(cpu: 0.7, memory: 0.1), at: clock.now()) == nil)
        #expect(gate.record(BackendLoadReport(cpu: 0.9, memory: 0.1), at: clock.now()) == nil)
        #expect(gate.reason == "cpu 0.9 > max 0.8")
        #expect(gate.record(BackendLoadReport(cpu: 0.7, memory: 0.1), at: clock.now()) == nil)
        clock.advance(by: .seconds(1))
        let back = gate.record(BackendLoadReport(cpu: 0.72, memory: 0.45), at: clock.now())
        #expect(back?.to == nil && back?.from == .overloaded)
        #expect(back?.reason == "2 reports under cpu 0.72, memory 0.45: cpu 0.72, memory 0.45")
        #expect(gate.admits && gate.overloadCount == 1)
        // Memory alone trips it too, both are named.
        let both = gate.record(BackendLoadReport(cpu: 0.95, memory: 0.6), at: clock.now())
        #expect(both?.reason == "cpu 0.95 > max 0.8, memory 0.6 > max 0.5")
        #expect(gate.overloadCount == 2)
    }

    @Test("no thresholds: cpu and memory are recorded but exclude nothing; a backend that stops reporting recovers")
    func noThresholdsAndSilence() {
        let clock = ManualClock()
        var free = BackendLoadGate(policy: BackendLoadPolicy(), now: clock.now())
        #expect(free.record(BackendLoadReport(cpu: 1, memory: 1), at: clock.now()) == nil)
        #expect(free.admits && free.lastReport?.cpu == 1)

        var gate = BackendLoadGate(policy: BackendLoadPolicy(maxMemory: 0.5, recoveryReports: 1), now: clock.now())
        #expect(gate.record(BackendLoadReport(memory: 0.9), at: clock.now())?.to == .overloaded)
        // The backend stops reporting memory: no evidence of overload any more.
        #expect(gate.record(BackendLoadReport(), at: clock.now())?.to == nil)
        #expect(gate.admits)
    }

    @Test("agent drain and down exclude at once and end with ready or with silence; weight scales the share")
    func agentStates() {
        let clock = ManualClock()
        var gate = BackendLoadGate(policy: BackendLoadPolicy(maxCPU: 0.9), now: clock.now())
        #expect(gate.record(BackendLoadReport(agent: .drain), at: clock.now())?.to == .agentDrain)
        #expect(gate.exclusion?.stateName == .draining && gate.reason == "backend reports drain")
        #expect(gate.record(BackendLoadReport(agent: .down), at: clock.now())?.to == .agentDown)
        #expect(gate.exclusion?.stateName == .down)
        #expect(gate.record(BackendLoadReport(agent: .down), at: clock.now()) == nil)
        let ready = gate.record(BackendLoadReport(cpu: 0.1, agent: .ready), at: clock.now())
        #expect(ready?.to == nil && ready?.reason == "backend reports ready")
        #expect(gate.record(BackendLoadReport(agent: .drain), at: clock.now())?.to == .agentDrain)
        #expect(gate.record(BackendLoadReport(cpu: 0.2), at: clock.now())?.reason == "backend no longer reports drain")
        // Leaving drain while still loaded above the mark: stays out as overloaded.
        #expect(gate.record(BackendLoadReport(agent: .drain), at: clock.now())?.to == .agentDrain)
        #expect(gate.record(BackendLoadReport(cpu: 0.85, agent: .ready), at: clock.now())?.to == .overloaded)
        // Weight: a share, and 0% drains.
        var weighted = BackendLoadGate(policy: BackendLoadPolicy(), now: clock.now())
        #expect(weighted.record(BackendLoadReport(weightPercent: 25), at: clock.now()) == nil)
        #expect(weighted.shareFactor == 0.25 && weighted.admits)
        #expect(weighted.record(BackendLoadReport(weightPercent: 0), at: clock.now())?.to == .agentDrain)
        #expect(weighted.record(BackendLoadReport(), at: clock.now())?.to == nil)
        #expect(weighted.shareFactor == 1)
    }

    // MARK: In the cluster

    @Test("cluster: an overloaded backend gets no requests, shows state overloaded, logs one line each way")
    func clusterOverload() throws {
        let (cluster, clock, logs) = makeCluster(count: 2) {
            $0.backendLoad = BackendLoadPolicy(maxCPU: 0.9, recoveryReports: 2)
            $0.activeChecks = true
        }
        cluster.loadReported(1, BackendLoadReport(cpu: 0.95, memory: 0.2))
        #expect(logs.lines == ["[HEALTH] Marking \(Self.b2) as OVERLOADED (cpu 0.95 > max 0.9)"])
        let picks = (0..<6).compactMap { _ in cluster.pick() }
        #expect(picks == Array(repeating: 0, count: 6))
        let snapshot = cluster.snapshot()[1]
        #expect(snapshot.stateName == .overloaded && !snapshot.isEligible && snapshot.state == .healthy)
        #expect(snapshot.reportedLoad?.lastReport?.cpu == 0.95 && snapshot.reportedLoad?.overloadCount == 1)
        // Every backend overloaded: nothing eligible (503), no panic routing.
        cluster.loadReported(0, BackendLoadReport(cpu: 1))
        guard case .noneEligible = cluster.choose() else {
            Issue.record("an all-overloaded cluster must answer noneEligible")
            return
        }
        clock.advance(by: .seconds(2))
        cluster.loadReported(1, BackendLoadReport(cpu: 0.5))
        cluster.loadReported(1, BackendLoadReport(cpu: 0.5))
        #expect(logs.lines.last == "[HEALTH] Marking \(Self.b2) as HEALTHY (2 reports under cpu 0.81: cpu 0.5)")
        #expect(cluster.pick() == 1)
        #expect(logs.lines.count == 3)  // b2 out, b1 out, b2 back
    }

    @Test("cluster: weight:N% scales the share of a weighted backend; agent drain keeps an operator undrain from readmitting it")
    func clusterWeightAndDrain() throws {
        let (cluster, _, logs) = makeCluster(count: 2) { $0.strategy = .weighted }
        cluster.loadReported(1, BackendLoadReport(weightPercent: 25))
        var counts = [0, 0]
        for _ in 0..<100 { if let i = cluster.pick() { counts[i] += 1 } }
        // Smooth weighted round robin with weights 1 and 0.25: exactly 80 / 20.
        #expect(counts == [80, 20])
        #expect(logs.lines.isEmpty)  // a weight is not a state change

        cluster.loadReported(1, BackendLoadReport(agent: .drain))
        #expect(logs.lines == ["[HEALTH] Marking \(Self.b2) as DRAINING (backend reports drain)"])
        cluster.setDraining(1, false)  // an operator's undrain does not override the backend's own word
        #expect((0..<5).compactMap { _ in cluster.pick() } == [0, 0, 0, 0, 0])
        #expect(cluster.snapshot()[1].stateName == .draining)
        cluster.loadReported(1, BackendLoadReport(agent: .ready))
        #expect(logs.lines.last == "[HEALTH] Marking \(Self.b2) as HEALTHY (backend reports ready)")
        #expect(cluster.snapshot()[1].isEligible)
    }

    @Test("cluster: a reload keeps what each remaining backend reported")
    func reloadKeepsReports() {
        let (old, clock, _) = makeCluster(count: 2) { $0.backendLoad = BackendLoadPolicy(maxMemory: 0.5) }
        old.loadReported(1, BackendLoadReport(memory: 0.8))
        let next = BackendCluster(backends: [BackendDescriptor(url: Self.b2)], configuration: old.configuration, clock: clock)
        next.inheritState(from: old)
        #expect(next.snapshot()[0].stateName == .overloaded)
        #expect(next.pick() == nil)
    }
}
