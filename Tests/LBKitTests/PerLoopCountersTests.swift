import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy

/// Docs/Performance.md step 50: what every request writes is kept per event loop (counters,
/// attempts in flight, the backend set's copy) and summed or refreshed when read. The sums must
/// be exact whichever loop, or none, did the counting.
@Suite("Per-loop request state", .timeLimit(.minutes(1)))
struct PerLoopCountersTests {
    @Test("currentLoopIndex is the index of the group's loop running the caller, nil off the group's loops")
    func currentLoopIndex() async throws {
        let group = try LBEventLoopGroup(loopCount: 2, namePrefix: "per-loop-test")
        defer { group.shutdown() }
        let other = try LBEventLoopGroup(loopCount: 1, namePrefix: "per-loop-other")
        defer { other.shutdown() }
        #expect(group.currentLoopIndex == nil)
        for i in 0..<2 {
            let seen = await Task(executorPreference: group.loops[i]) { group.currentLoopIndex }.value
            #expect(seen == i)
        }
        // Loop 0 of another group has index 0 too, but is not this group's.
        let foreign = await Task(executorPreference: other.loops[0]) { group.currentLoopIndex }.value
        #expect(foreign == nil)
    }

    @Test("a loop's slot is its own; no loop, or an index beyond the loops, gets the shared last slot")
    func slotIndices() {
        #expect(LoopSlots.count(forLoops: 2) == 3)
        #expect(LoopSlots.count(forLoops: 0) == 1)
        #expect(LoopSlots.index(of: 0, among: 3) == 0)
        #expect(LoopSlots.index(of: 1, among: 3) == 1)
        #expect(LoopSlots.index(of: 2, among: 3) == 2)
        #expect(LoopSlots.index(of: 7, among: 3) == 2)
        #expect(LoopSlots.index(of: -1, among: 3) == 2)
        #expect(LoopSlots.index(of: nil, among: 3) == 2)
        #expect(LoopSlots.index(of: 0, among: 1) == 0)
    }

    @Test("counters kept per loop sum exactly: requests by class, in flight, the duration histogram")
    func countersSum() {
        let counters = ProxyCounters(loopCount: 2)
        #expect(counters.shards.count == 3)
        counters.count(status: 200, elapsedNanoseconds: 40_000, loopIndex: 0)          // bucket 0 (50 µs)
        counters.count(status: 204, elapsedNanoseconds: 300_000, loopIndex: 1)         // bucket 3 (500 µs)
        counters.count(status: 503, elapsedNanoseconds: 2_000_000_000, loopIndex: nil) // bucket 14 (2.5 s)
        counters.count(status: 101, elapsedNanoseconds: -5, loopIndex: 9)              // no such loop: shared shard
        #expect(counters.requests == 4)
        #expect(counters.responses(ofClass: 1) == 1)
        #expect(counters.responses(ofClass: 2) == 2)
        #expect(counters.responses(ofClass: 5) == 1)
        #expect(counters.responses(ofClass: 4) == 0)
        #expect(counters.shards[2].requests.load(ordering: .relaxed) == 2)
        let durations = counters.requestDurations
        #expect(durations.counts.count == RequestDurationHistogram.bounds.count + 1)
        #expect(durations.counts[0] == 2)   // 40 µs and the negative one (clamped to 0)
        #expect(durations.counts[3] == 3)
        #expect(durations.counts[13] == 3)
        #expect(durations.counts[14] == 4)
        #expect(durations.counts.last == 4)
        #expect(abs(durations.sum - 2.00034) < 1e-9)
        // A request that entered on loop 0 and left (after resuming elsewhere) leaves it on loop 0.
        counters.requestEntered(loopIndex: 0)
        counters.requestEntered(loopIndex: nil)
        #expect(counters.inFlight == 2)
        counters.requestLeft(loopIndex: 0)
        counters.requestLeft(loopIndex: nil)
        #expect(counters.inFlight == 0)
    }

    @Test("attempts in flight per backend: started on one loop and ended on another, the total is exact")
    func attemptCounterAcrossLoops() {
        let counter = AttemptCounter(loopCount: 2)
        counter.started(onLoop: 0)
        counter.started(onLoop: nil)
        counter.started(onLoop: 5)
        #expect(counter.total == 3)
        counter.ended(onLoop: 1)   // the attempt of loop 0 ended on loop 1
        counter.ended(onLoop: nil)
        #expect(counter.total == 1)
        counter.ended(onLoop: 5)
        #expect(counter.total == 0)
    }

    @Test("a loop's copy of the backend set follows every reload; callers off the loops read the set in effect")
    func publishedSetFollowsReloads() async throws {
        var config = LoadBalancerConfiguration()
        config.backends = [try BackendURL.loopback(6301)]
        let group = try LBEventLoopGroup(loopCount: 2, namePrefix: "per-loop-set")
        defer { group.shutdown() }
        let balancer = try LoadBalancer(configuration: config, group: group)
        @Sendable func namesSeen(onLoop i: Int) async -> [String] {
            await Task(executorPreference: group.loops[i]) { balancer.upstreamSet.read(onLoop: i).names }.value
        }
        #expect(await namesSeen(onLoop: 0) == ["http://127.0.0.1:6301"])
        #expect(await namesSeen(onLoop: 1) == ["http://127.0.0.1:6301"])
        try balancer.reload(backends: [try BackendURL.loopback(6301), try BackendURL.loopback(6302)])
        #expect(await namesSeen(onLoop: 0) == ["http://127.0.0.1:6301", "http://127.0.0.1:6302"])
        #expect(balancer.upstreamSet.read(onLoop: nil).names.count == 2)
        try balancer.reload(backends: [try BackendURL.loopback(6303)])
        #expect(await namesSeen(onLoop: 1) == ["http://127.0.0.1:6303"])
        #expect(await namesSeen(onLoop: 0) == ["http://127.0.0.1:6303"])
        // The copy is the set in effect itself, not a rebuilt one.
        let onLoop = await Task(executorPreference: group.loops[0]) { balancer.upstreamSet.read(onLoop: 0) }.value
        #expect(onLoop === balancer.upstreams)
    }
}
