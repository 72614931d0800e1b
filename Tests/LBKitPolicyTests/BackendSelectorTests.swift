import Testing
@testable import LBKitPolicy

@Suite("Backend selectors")
struct BackendSelectorTests {
    @Test("round-robin rotates strictly over three healthy backends")
    func roundRobinStrictOrder() {
        let (cluster, _, _) = makeCluster(count: 3)
        let picks = (0..<6).compactMap { _ in cluster.pick() }
        #expect(picks == [0, 1, 2, 0, 1, 2])
    }

    @Test("round-robin alternates the others when one backend is ineligible")
    func roundRobinSkipsIneligible() {
        let (cluster, _, _) = makeCluster(count: 3)
        for _ in 0..<3 { cluster.attempt(1, .failure(.connect)) }
        #expect(cluster.state(1) == .ejected)
        let picks = (0..<6).compactMap { _ in cluster.pick() }
        #expect(picks == [0, 2, 0, 2, 0, 2])

        var selector = RoundRobinSelector()
        var rng = SplitMix64(seed: 1)
        let candidates = [BackendContext(index: 0), BackendContext(index: 2)]
        let raw = (0..<4).compactMap { _ in selector.choose(from: candidates, using: &rng) }
        #expect(raw == [0, 2, 0, 2])
    }

    @Test("round-robin retry skips the excluded backend and moves the cursor past the chosen one")
    func roundRobinExcluding() {
        let (cluster, _, _) = makeCluster(count: 3)
        #expect(cluster.pick() == 0)
        // Backend 1's turn, but this is a retry that already tried 1: it goes to 2.
        #expect(cluster.pick(excluding: [1]) == 2)
        // Rotation continues after 2.
        #expect(cluster.pick() == 0)
        #expect(cluster.pick(excluding: [0, 1]) == 2)
        #expect(cluster.pick(excluding: [0, 1, 2]) == nil)
        #expect(cluster.snapshot()[2].retries == 2)
    }

    @Test("smooth weighted round-robin gives the exact nginx 5:1:1 pattern")
    func weightedPattern() {
        let (cluster, _, _) = makeCluster(count: 3, weights: [5, 1, 1]) { $0.strategy = .weighted }
        let picks = (0..<14).compactMap { _ in cluster.pick() }
        #expect(picks == [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0])
    }

    @Test("weighted round-robin scales the weight of a backend in slow start")
    func weightedSlowStart() {
        var selector = WeightedRoundRobinSelector(backendCount: 2)
        var rng = SplitMix64(seed: 1)
        let candidates = [BackendContext(index: 0, weight: 1), BackendContext(index: 1, weight: 1, slowStartFactor: 0.25)]
        var counts = [0, 0]
        for _ in 0..<500 { if let i = selector.choose(from: candidates, using: &rng) { counts[i] += 1 } }
        #expect(counts == [400, 100])
    }

    @Test("least-requests (P2C) prefers the less loaded backend")
    func leastRequestsDistribution() {
        var selector = LeastRequestsSelector()
        var rng = SplitMix64(seed: 42)
        let candidates = [
            BackendContext(index: 0, inFlight: 20),
            BackendContext(index: 1, inFlight: 0),
            BackendContext(index: 2, inFlight: 5),
        ]
        var counts = [0, 0, 0]
        for _ in 0..<3000 { if let i = selector.choose(from: candidates, using: &rng) { counts[i] += 1 } }
        #expect(counts[0] == 0)  // the most loaded never wins a pair
        #expect(counts[1] > 1800)  // in two of three pairs: ≈ 2000
        #expect(counts[2] > 800 && counts[2] < 1200)  // ≈ 1000
    }

    @Test("least-requests through the cluster steers away from a backend with requests in flight")
    func leastRequestsCluster() {
        let (cluster, _, _) = makeCluster(count: 2) { $0.strategy = .leastRequests }
        for _ in 0..<5 { cluster.attemptStarted(0) }
        let picks = (0..<50).compactMap { _ in cluster.pick() }
        #expect(picks.allSatisfy { $0 == 1 })
    }

    @Test("peak-EWMA (P2C) prefers the faster backend")
    func peakEWMADistribution() {
        let (cluster, _, _) = makeCluster(count: 3, seed: 9) { $0.strategy = .peakEWMA }
        cluster.attempt(0, .success, latency: .milliseconds(200))
        cluster.attempt(1, .success, latency: .milliseconds(10))
        cluster.attempt(2, .success, latency: .milliseconds(50))
        var counts = [0, 0, 0]
        for _ in 0..<3000 { if let i = cluster.pick() { counts[i] += 1 } }
        #expect(counts[0] == 0)
        #expect(counts[1] > 1800)
        #expect(counts[2] > 800 && counts[2] < 1200)
    }

    @Test("peak-EWMA weighs latency by load: a fast but busy backend loses to an idle slower one")
    func peakEWMALoad() {
        var selector = PeakEWMASelector()
        var rng = SplitMix64(seed: 5)
        let candidates = [
            BackendContext(index: 0, inFlight: 9, latencyEWMA: 10),  // cost 100
            BackendContext(index: 1, inFlight: 0, latencyEWMA: 30),  // cost 30
        ]
        let picks = (0..<100).compactMap { _ in selector.choose(from: candidates, using: &rng) }
        #expect(picks.allSatisfy { $0 == 1 })
    }

    @Test("round-robin skips a backend in slow start with probability 1 - factor")
    func roundRobinSlowStartSkip() {
        func share(factor: Double) -> Double {
            var selector = RoundRobinSelector()
            var rng = SplitMix64(seed: 11)
            let candidates = [BackendContext(index: 0), BackendContext(index: 1, slowStartFactor: factor)]
            var hits = 0
            let total = 4000
            for _ in 0..<total where selector.choose(from: candidates, using: &rng) == 1 { hits += 1 }
            return Double(hits) / Double(total)
        }
        let full = share(factor: 1)
        let tenth = share(factor: 0.1)
        let half = share(factor: 0.55)
        #expect(full == 0.5)
        #expect(tenth > 0.06 && tenth < 0.12)  // ≈ 0.1 / 1.1
        #expect(half > 0.31 && half < 0.40)  // ≈ 0.55 / 1.55
    }

    @Test("strategies parse from their command-line names")
    func strategyNames() {
        #expect(BalancingStrategy(rawValue: "round-robin") == .roundRobin)
        #expect(BalancingStrategy(rawValue: "weighted") == .weighted)
        #expect(BalancingStrategy(rawValue: "least-requests") == .leastRequests)
        #expect(BalancingStrategy(rawValue: "peak-ewma") == .peakEWMA)
        #expect(BalancingStrategy(rawValue: "random") == nil)
    }

    @Test("backend index sets behave like small sets")
    func indexSet() {
        var set: BackendIndexSet = [0, 63, 64, 255]
        #expect(set.count == 4)
        #expect(set.contains(63) && set.contains(64) && set.contains(255))
        #expect(!set.contains(1) && !set.contains(-1) && !set.contains(256))
        set.insert(300)
        set.remove(63)
        #expect(set.count == 3 && !set.contains(63))
        #expect(BackendIndexSet().isEmpty)
        #expect(BackendIndexSet([1, 2]) == [2, 1])
    }
}

@Suite("Least-requests with unequal weights")
struct LeastRequestsWeightRegressionTests {
    @Test("an idle pool with weights 1...4 still sends traffic to every backend")
    func noStarvationWhenIdle() {
        var selector = LeastRequestsSelector()
        var rng = SplitMix64(seed: 11)
        let candidates = (0..<4).map { BackendContext(index: $0, weight: $0 + 1) }
        var counts = [0, 0, 0, 0]
        for _ in 0..<4000 {
            if let pick = selector.choose(from: candidates, using: &rng) { counts[pick] += 1 }
        }
        // Idle, equal load: P2C with random tie-breaks spreads evenly (each ~1000).
        #expect(counts.allSatisfy { $0 > 800 && $0 < 1200 }, "\(counts)")
    }
}
