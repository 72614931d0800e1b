import Testing
@testable import LBKitPolicy

@Suite("Latency tracker")
struct LatencyTrackerTests {
    @Test("peak EWMA jumps up at once and decays with tau")
    func peakEWMA() throws {
        let clock = ManualClock()
        var tracker = LatencyTracker(decay: .seconds(10), now: clock.now())
        #expect(tracker.peakEWMA == nil)
        tracker.record(.milliseconds(10), at: clock.now())
        clock.advance(by: .milliseconds(100))
        tracker.record(.milliseconds(100), at: clock.now())
        #expect(tracker.peakEWMA == .milliseconds(100))
        clock.advance(by: .seconds(10))
        tracker.record(.milliseconds(10), at: clock.now())
        // 100 e^-1 + 10 (1 - e^-1) ≈ 43.11 ms
        let ewma = try #require(tracker.peakEWMA).milliseconds
        #expect(abs(ewma - 43.109) < 0.01)
        // A sample right after barely moves it (time-based weighting).
        tracker.record(.milliseconds(10), at: clock.now())
        #expect(abs(try #require(tracker.peakEWMA).milliseconds - ewma) < 0.001)
    }

    @Test("read through ewma(at:) the value decays towards zero while idle")
    func idleDecay() {
        let clock = ManualClock()
        var tracker = LatencyTracker(now: clock.now())
        #expect(tracker.ewma(at: clock.now()) == 0)
        tracker.record(.milliseconds(50), at: clock.now())
        #expect(tracker.ewma(at: clock.now()) == 50_000_000)
        clock.advance(by: .seconds(10))
        #expect(abs(tracker.ewma(at: clock.now()) - 50_000_000 * 0.36788) < 1_000)
    }

    @Test("p50 and p99 over the recent window, within bucket precision")
    func quantiles() throws {
        let clock = ManualClock()
        var tracker = LatencyTracker(window: .seconds(30), now: clock.now())
        #expect(tracker.quantile(0.5, at: clock.now()) == nil)
        for i in 0..<100 {
            tracker.record(i < 98 ? .milliseconds(10) : .milliseconds(1000), at: clock.now())
        }
        let p50 = try #require(tracker.quantile(0.5, at: clock.now())).milliseconds
        let p99 = try #require(tracker.quantile(0.99, at: clock.now())).milliseconds
        #expect(abs(p50 - 10) / 10 < 0.13)
        #expect(abs(p99 - 1000) / 1000 < 0.13)
        #expect(tracker.sampleCount == 100)
    }

    @Test("quantile windows rotate: samples count for one to two windows")
    func rotation() {
        let clock = ManualClock()
        var tracker = LatencyTracker(window: .seconds(30), now: clock.now())
        tracker.record(.milliseconds(500), at: clock.now())
        clock.advance(by: .seconds(45))
        #expect(tracker.quantile(0.5, at: clock.now()) != nil)
        tracker.record(.milliseconds(5), at: clock.now())  // rotates: 500 ms is now "previous"
        let p99 = tracker.quantile(0.99, at: clock.now())?.milliseconds ?? 0
        #expect(p99 > 400)
        clock.advance(by: .seconds(30))
        let p99Later = tracker.quantile(0.99, at: clock.now())?.milliseconds ?? 0
        #expect(p99Later < 10)  // the 500 ms sample expired, the 5 ms one remains
        clock.advance(by: .seconds(60))
        #expect(tracker.quantile(0.5, at: clock.now()) == nil)
    }

    @Test("recent latency is the median of the last three samples")
    func recentMedian() {
        let clock = ManualClock()
        var tracker = LatencyTracker(now: clock.now())
        tracker.record(.milliseconds(300), at: clock.now())
        #expect(tracker.recentLatency == nil)
        tracker.record(.milliseconds(100), at: clock.now())
        #expect(tracker.recentLatency == .milliseconds(100))
        tracker.record(.milliseconds(200), at: clock.now())
        #expect(tracker.recentLatency == .milliseconds(200))
        tracker.record(.milliseconds(50), at: clock.now())  // last three: 100, 200, 50
        #expect(tracker.recentLatency == .milliseconds(100))
        tracker.record(.milliseconds(10), at: clock.now())  // 200, 50, 10
        tracker.record(.milliseconds(20), at: clock.now())  // 50, 10, 20
        #expect(tracker.recentLatency == .milliseconds(20))
    }

    @Test("snapshot reports latency statistics in milliseconds")
    func snapshotLatency() {
        let (cluster, _, _) = makeCluster(count: 2)
        cluster.attempt(0, .success, latency: .milliseconds(40))
        let snap = cluster.snapshot()[0]
        #expect(snap.latencyEWMA == 40)
        #expect(abs(snap.latencyP50 - 40) / 40 < 0.13)
        #expect(snap.requests == 1 && snap.successes == 1 && snap.inFlight == 0)
        #expect(cluster.snapshot()[1].latencyP99 == 0)
    }
}

@Suite("Retry budget")
struct RetryBudgetTests {
    @Test("the floor allows minRetriesPerSecond x ttl retries without traffic")
    func floor() {
        let clock = ManualClock()
        var budget = RetryBudget(percent: 20, minRetriesPerSecond: 10, ttl: .seconds(10), clock: clock)
        var granted = 0
        while budget.tryWithdraw() && granted < 1000 { granted += 1 }
        #expect(granted == 100)
        let refused = budget.tryWithdraw()
        #expect(!refused)
    }

    @Test("each request earns percent% of a retry")
    func percent() {
        let clock = ManualClock()
        var budget = RetryBudget(percent: 20, minRetriesPerSecond: 0, ttl: .seconds(10), clock: clock)
        let refusedEmpty = budget.tryWithdraw()
        #expect(!refusedEmpty)
        for _ in 0..<4 { budget.deposit() }
        let refusedPartial = budget.tryWithdraw()
        #expect(!refusedPartial)  // 0.8 tokens
        budget.deposit()
        let grantedOne = budget.tryWithdraw()
        #expect(grantedOne)  // 1.0
        for _ in 0..<95 { budget.deposit() }
        var granted = 0
        while budget.tryWithdraw() && granted < 1000 { granted += 1 }
        #expect(granted == 19)  // 100 requests at 20% = 20 retries, one already taken
        let left = budget.balance()
        #expect(left < 1)
    }

    @Test("deposits and withdrawals expire after the TTL")
    func ttlExpiry() {
        let clock = ManualClock()
        var budget = RetryBudget(percent: 20, minRetriesPerSecond: 1, ttl: .seconds(10), clock: clock)
        for _ in 0..<50 { budget.deposit() }  // 10 tokens + 10 of floor
        var granted = 0
        while budget.tryWithdraw() && granted < 1000 { granted += 1 }
        #expect(granted == 20)
        clock.advance(by: .seconds(5))
        let refusedLater = budget.tryWithdraw()
        #expect(!refusedLater)  // withdrawals still count
        clock.advance(by: .seconds(5))
        // Everything expired: only the floor is left.
        let floorOnly = budget.balance()
        #expect(floorOnly == 10)
        granted = 0
        while budget.tryWithdraw() && granted < 1000 { granted += 1 }
        #expect(granted == 10)
    }

    @Test("the cluster consults the budget and counts retries per reason")
    func clusterRetries() {
        let (cluster, _, _) = makeCluster(count: 2) {
            $0.minRetriesPerSecond = 0
            $0.retryBudgetPercent = 50
        }
        #expect(!cluster.tryRetry(reason: .connect))
        for _ in 0..<4 { cluster.requestStarted() }
        #expect(cluster.tryRetry(reason: .connect))
        #expect(cluster.tryRetry(reason: .status5xx))
        #expect(!cluster.tryRetry(reason: .timeout))
        let stats = cluster.retryStatistics()
        #expect(stats.granted[.connect] == 1 && stats.granted[.status5xx] == 1)
        #expect(stats.denied[.connect] == 1 && stats.denied[.timeout] == 1)
        #expect(stats.totalGranted == 2 && stats.totalDenied == 2)
        #expect(RetryReason(FailureKind.reset) == .reset)
    }

    @Test("startAttempt does what requestStarted, choose, attemptStarted and hangThresholdNanoseconds do, in one call")
    func fusedAttemptStart() {
        let (cluster, clock, _) = makeCluster(count: 3) {
            $0.minRetriesPerSecond = 0
            $0.retryBudgetPercent = 50
            $0.hangDetection = HangDetection(floor: .milliseconds(10), factor: 4)
        }
        // Latency history for backend 1: its hang threshold is 4 x its EWMA, above the floor.
        cluster.attemptStarted(1)
        cluster.attemptFinished(1, outcome: .success, latency: .milliseconds(20))
        var chosen: [Int] = []
        for round in 0..<4 {
            var trial = true
            var threshold: UInt64? = nil
            guard case .backend(let index) = cluster.startAttempt(firstOfRequest: true, withHangThreshold: true, trial: &trial,
                                                                  hangThresholdNanoseconds: &threshold) else {
                Issue.record("no backend chosen in round \(round)")
                return
            }
            chosen.append(index)
            #expect(!trial)
            #expect(threshold == cluster.hangThresholdNanoseconds(index))
            let snapshot = cluster.snapshot()[index]
            #expect(snapshot.inFlight == 1)
            cluster.attemptFinished(index, outcome: .success, latency: .milliseconds(1))
            clock.advance(by: .milliseconds(1))
        }
        // Strict rotation, as choose gives.
        #expect(chosen == [chosen[0], (chosen[0] + 1) % 3, (chosen[0] + 2) % 3, chosen[0]])
        #expect(cluster.hangThresholdNanoseconds(1).map { $0 > 10_000_000 } == true)
        // Four requests deposited 50 % of a token each: two retries, not three.
        #expect(cluster.tryRetry(reason: .connect))
        #expect(cluster.tryRetry(reason: .connect))
        #expect(!cluster.tryRetry(reason: .connect))
        // A retry's start deposits nothing, and leaves the threshold alone when not asked.
        var trial = false
        var threshold: UInt64? = 7
        _ = cluster.startAttempt(excluding: BackendIndexSet([0]), firstOfRequest: false, withHangThreshold: false, trial: &trial,
                                 hangThresholdNanoseconds: &threshold)
        #expect(threshold == nil)
        #expect(!cluster.tryRetry(reason: .connect))
    }
}

@Suite("Concurrency")
struct ClusterConcurrencyTests {
    @Test("many tasks choosing and finishing concurrently keep the counts consistent")
    func concurrentSmoke() async {
        for strategy in BalancingStrategy.allCases {
            let backends = (0..<4).map { BackendDescriptor(url: "http://127.0.0.1:\(6000 + $0)", weight: $0 + 1) }
            var configuration = ClusterConfiguration()
            configuration.strategy = strategy
            let cluster = BackendCluster(
                backends: backends, configuration: configuration, clock: ManualClock(),
                random: SplitMix64(seed: 3), log: { _ in })
            let tasks = 8
            let perTask = 500
            await withTaskGroup(of: Int.self) { group in
                for t in 0..<tasks {
                    group.addTask {
                        var done = 0
                        for i in 0..<perTask {
                            cluster.requestStarted()
                            guard case .backend(let index) = cluster.choose(excluding: []) else { continue }
                            cluster.attemptStarted(index)
                            cluster.attemptFinished(index, outcome: .success, latency: .microseconds(100 + (i % 7) * 50))
                            if i % 50 == 0 { cluster.probeFinished(t % 4, success: true, latency: .milliseconds(1)) }
                            if i % 100 == 0 { _ = cluster.snapshot() }
                            done += 1
                        }
                        return done
                    }
                }
                var total = 0
                for await done in group { total += done }
                #expect(total == tasks * perTask)
            }
            let snapshot = cluster.snapshot()
            #expect(snapshot.map(\.requests).reduce(0, +) == tasks * perTask)
            #expect(snapshot.map(\.successes).reduce(0, +) == tasks * perTask)
            #expect(snapshot.allSatisfy { $0.inFlight == 0 && $0.state == .healthy })
            // Latency-blind strategies must use every backend. Peak-EWMA may legitimately starve the
            // backend with the worst sample here: the manual clock never moves, so nothing decays.
            if strategy != .peakEWMA {
                #expect(snapshot.allSatisfy { $0.requests > 0 }, "strategy \(strategy)")
            }
        }
    }
}

@Suite("Peak-EWMA after re-admission")
struct PeakEWMAReadmissionTests {
    @Test("a backend re-admitted as fast gets traffic again under peak-ewma (its old slowness is forgotten)")
    func readmittedBackendIsUsed() {
        let (cluster, clock, _) = makeCluster(count: 3) {
            $0.strategy = .peakEWMA
            $0.maxDelay = .milliseconds(100)
            $0.activeChecks = true
        }
        for i in [0, 2] { cluster.attempt(i, .success, latency: .milliseconds(1)) }
        for _ in 0..<3 { cluster.attempt(1, .success, latency: .milliseconds(500)) }
        #expect(cluster.state(1) == .slow)
        // Real requests were slow: fast checks alone do not bring it back, two fast trials do.
        for _ in 0..<2 {
            clock.advance(by: .milliseconds(250))
            cluster.probeFinished(1, success: true, latency: .milliseconds(1))
        }
        #expect(cluster.state(1) == .slow)
        clock.advance(by: .seconds(5))
        for _ in 0..<2 {
            #expect(cluster.pick(excluding: [0, 2]) == 1)
            cluster.attempt(1, .success, latency: .milliseconds(1))
        }
        #expect(cluster.state(1) == .healthy)
        let ewma = cluster.snapshot()[1].latencyEWMA
        #expect(ewma < 5, "EWMA after re-admission: \(ewma) ms")
        clock.advance(by: .seconds(10))  // past slow start
        var picks = [0, 0, 0]
        for _ in 0..<3000 {
            guard case .backend(let i) = cluster.choose(excluding: []) else { continue }
            picks[i] += 1
            cluster.attempt(i, .success, latency: .milliseconds(1))
        }
        #expect(picks[1] > 600, "picks \(picks)")
    }
}
