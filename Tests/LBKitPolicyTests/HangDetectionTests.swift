import Testing
@testable import LBKitPolicy

/// A backend that holds requests without answering while others answer is ejected within
/// milliseconds, with no `maxDelay` configured, and returns through a trial request.
@Suite("Hung-backend detection")
struct HangDetectionTests {
    /// Every backend answers one request in 1 ms.
    func warmUp(_ cluster: BackendCluster, _ clock: ManualClock) {
        for i in 0..<cluster.backends.count {
            cluster.attemptStarted(i)
            clock.advance(by: .milliseconds(1))
            cluster.attemptFinished(i, outcome: .success, latency: .milliseconds(1))
        }
    }

    @Test("stalled with others answering: ejected as hung once the stall passes the threshold")
    func detectsHang() {
        let (cluster, clock, logs) = makeCluster(count: 3)
        warmUp(cluster, clock)
        cluster.attemptStarted(0)                       // goes to the backend that hangs
        clock.advance(by: .milliseconds(20))
        cluster.attemptStarted(1)
        cluster.attemptFinished(1, outcome: .success, latency: .milliseconds(1))
        // 20 ms: under the 50 ms floor, still eligible.
        _ = cluster.choose()
        #expect(cluster.snapshot()[0].state == .healthy)
        clock.advance(by: .milliseconds(40))             // 60 ms stalled
        cluster.attemptStarted(2)
        cluster.attemptFinished(2, outcome: .success, latency: .milliseconds(1))   // others answer
        clock.advance(by: .milliseconds(1))
        for _ in 0..<6 {
            if case .backend(let i) = cluster.choose() { #expect(i != 0) } else { Issue.record("no backend") }
        }
        let hung = cluster.snapshot()[0]
        #expect(hung.state == .ejected)
        #expect(hung.reason.contains("hung"))
        #expect(logs.lines.contains { $0.contains("UNHEALTHY") && $0.contains("hung") })
    }

    @Test("nobody answers (the whole system stalled): no ejection")
    func globalStallIsNotAHang() {
        let (cluster, clock, _) = makeCluster(count: 3)
        warmUp(cluster, clock)
        cluster.attemptStarted(0)
        cluster.attemptStarted(1)
        clock.advance(by: .seconds(2))
        _ = cluster.choose()
        #expect(cluster.snapshot().allSatisfy { $0.state == .healthy })
    }

    @Test("a slow but answering backend is not hung")
    func slowButAnswering() {
        let (cluster, clock, _) = makeCluster(count: 2)
        warmUp(cluster, clock)
        for _ in 0..<10 {
            cluster.attemptStarted(0)
            cluster.attemptStarted(0)
            clock.advance(by: .milliseconds(40))
            cluster.attemptFinished(0, outcome: .success, latency: .milliseconds(40))
            cluster.attemptStarted(1)
            cluster.attemptFinished(1, outcome: .success, latency: .milliseconds(1))
            _ = cluster.choose()
            cluster.attemptFinished(0, outcome: .success, latency: .milliseconds(40))
        }
        #expect(cluster.snapshot()[0].state == .healthy)
    }

    @Test("a hung backend returns through the ejection timer and a successful trial")
    func returnsThroughTrial() {
        let (cluster, clock, _) = makeCluster(count: 3)
        warmUp(cluster, clock)
        cluster.attemptStarted(0)
        clock.advance(by: .milliseconds(100))
        cluster.attemptStarted(1)
        cluster.attemptFinished(1, outcome: .success, latency: .milliseconds(1))
        clock.advance(by: .milliseconds(1))
        _ = cluster.choose()
        #expect(cluster.snapshot()[0].state == .ejected)
        cluster.attemptFinished(0, outcome: .success, latency: .milliseconds(101))   // it wakes up
        clock.advance(by: .seconds(6))
        var trial = false
        for _ in 0..<3 {
            if case .backend(0) = cluster.choose() { trial = true; break }
        }
        #expect(trial)
        #expect(cluster.snapshot()[0].state == .probing)
        cluster.attemptStarted(0)
        cluster.attemptFinished(0, outcome: .success, latency: .milliseconds(1))
        #expect(cluster.snapshot()[0].state == .healthy)
    }

    @Test("factor 0 turns detection off")
    func off() {
        let (cluster, clock, _) = makeCluster(count: 2) { $0.hangDetection = HangDetection(factor: 0) }
        warmUp(cluster, clock)
        cluster.attemptStarted(0)
        clock.advance(by: .seconds(1))
        cluster.attemptStarted(1)
        cluster.attemptFinished(1, outcome: .success, latency: .milliseconds(1))
        _ = cluster.choose()
        #expect(cluster.snapshot()[0].state == .healthy)
        #expect(cluster.hangThreshold(0) == nil)
        #expect(cluster.hangThresholdNanoseconds(0) == nil)
    }

    @Test("the threshold in nanoseconds is the Duration threshold: the floor, or factor x the latency EWMA, as it decays")
    func thresholdInNanoseconds() {
        let (cluster, clock, _) = makeCluster(count: 2) { $0.hangDetection = HangDetection(floor: .milliseconds(50), factor: 10) }
        func agree(_ label: String) {
            let duration = cluster.hangThreshold(0).map { UInt64($0.nanosecondsClamped) }
            let ns = cluster.hangThresholdNanoseconds(0)
            #expect(duration != nil && ns != nil, "\(label)")
            // The Duration form truncates the EWMA before multiplying: at most `factor` ns apart.
            if let duration, let ns { #expect(max(duration, ns) - min(duration, ns) <= 10, "\(label): \(duration) vs \(ns)") }
        }
        agree("no samples: the floor")
        #expect(cluster.hangThresholdNanoseconds(0) == 50_000_000)
        for _ in 0..<20 {
            cluster.attemptStarted(0)
            cluster.attemptFinished(0, outcome: .success, latency: .milliseconds(40))
        }
        agree("slow backend: factor x EWMA")
        #expect((cluster.hangThresholdNanoseconds(0) ?? 0) > 300_000_000)
        clock.advance(by: .seconds(3))
        agree("decayed")
        clock.advance(by: .seconds(600))
        agree("long decayed: the floor again")
        #expect(cluster.hangThresholdNanoseconds(0) == 50_000_000)
    }

    @Test("a trial chosen but never sent is released at once (no lock-out for the maximum ejection)")
    func abandonedTrialReleased() {
        let (cluster, clock, _) = makeCluster(count: 2) { $0.maxFails = 1 }
        cluster.attemptStarted(0)
        cluster.attemptFinished(0, outcome: .failure(.status5xx), latency: .milliseconds(1))
        #expect(cluster.snapshot()[0].state == .ejected)
        clock.advance(by: .seconds(6))
        var chosen = false
        for _ in 0..<3 { if case .backend(0) = cluster.choose() { chosen = true; break } }
        #expect(chosen)                        // the trial is now outstanding
        cluster.choiceAbandoned(0)             // ... but the budget refused the attempt
        var again = false
        for _ in 0..<3 { if case .backend(0) = cluster.choose() { again = true; break } }
        #expect(again)
    }
}
