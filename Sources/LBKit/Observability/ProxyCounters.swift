import LBKitHTTP
import Synchronization

/// Balancer-wide counters (lock-free; read by `/_lb/stats` and `/_lb/metrics`).
///
/// The ones every request touches (requests by status class, in flight, the duration histogram)
/// are kept per event loop, in ``ProxyCounterShard``s on cache lines of their own, and summed
/// when read: one set of atomics written by both loops of a two-loop balancer moved those cache
/// lines between the cores on every request (`Docs/Performance.md` step 50; on 2 shared cores
/// the gain was within the noise). The rare ones (no backend, reloads, tunnels) stay shared.
final class ProxyCounters: Sendable {
    /// One per loop of the balancer's group, then one for callers on no loop of it (``LoopSlots``).
    let shards: [ProxyCounterShard]
    let noBackend = Atomic<Int>(0)
    let budgetExhausted = Atomic<Int>(0)
    /// Upgraded connections (WebSocket tunnels) opened so far, and open now.
    let tunnelsOpened = Atomic<Int>(0)
    let tunnelsOpen = Atomic<Int>(0)
    /// Configuration reloads applied, and refused (invalid file or backend set).
    let reloadsSucceeded = Atomic<Int>(0)
    let reloadsFailed = Atomic<Int>(0)

    /// - Parameter loopCount: loops in the balancer's group (a shard each, plus one).
    init(loopCount: Int) {
        shards = (0..<LoopSlots.count(forLoops: loopCount)).map { _ in ProxyCounterShard() }
    }

    @inline(__always)
    private func shardIndex(_ loopIndex: Int?) -> Int { LoopSlots.index(of: loopIndex, among: shards.count) }

    /// A request entered the balancer on loop `loopIndex`; ``requestLeft(loopIndex:)`` is given
    /// the same index.
    @inline(__always)
    func requestEntered(loopIndex: Int?) { shards[shardIndex(loopIndex)].inFlight.add(1, ordering: .relaxed) }

    @inline(__always)
    func requestLeft(loopIndex: Int?) { shards[shardIndex(loopIndex)].inFlight.subtract(1, ordering: .relaxed) }

    /// Counts a response by status class and records its duration, on loop `loopIndex`'s shard.
    @inline(__always)
    func count(status: Int, elapsedNanoseconds: Int64, loopIndex: Int?) {
        shards[shardIndex(loopIndex)].count(status: status, elapsedNanoseconds: elapsedNanoseconds)
    }

    /// Client requests counted so far.
    var requests: Int { shards.reduce(0) { $0 + $1.requests.load(ordering: .relaxed) } }
    /// Requests inside ``LoadBalancer/handle(_:context:)`` now (drained before shutdown).
    var inFlight: Int { shards.reduce(0) { $0 + $1.inFlight.load(ordering: .relaxed) } }
    /// Responses of status class `digit`xx (1 ... 5) counted so far.
    func responses(ofClass digit: Int) -> Int {
        shards.reduce(0) { $0 + $1.statusClasses[min(max(digit, 1), 5) - 1].load(ordering: .relaxed) }
    }
    /// Client-side request durations (`lb_request_duration_seconds`), all shards together.
    var requestDurations: (counts: [Int], sum: Double) { RequestDurationHistogram.cumulative(of: shards) }

    /// `1xx` ... `5xx`.
    static func statusClass(_ status: Int) -> String {
        switch status {
        case ..<200: "1xx"
        case 200..<300: "2xx"
        case 300..<400: "3xx"
        case 400..<500: "4xx"
        default: "5xx"
        }
    }
}

/// One loop's share of ``ProxyCounters``: written by that loop's thread alone (apart from a task
/// that moved between loops mid-request), read by the stats endpoints; padded on both sides
/// (``CacheLinePadding``).
final class ProxyCounterShard: Sendable {
    private let leadingPad = CacheLinePadding()
    let requests = Atomic<Int>(0)
    /// Requests answered, by status class: 1xx at 0 ... 5xx at 4.
    let statusClasses = InlineArray<5, Atomic<Int>> { _ in Atomic(0) }
    let inFlight = Atomic<Int>(0)
    /// ``RequestDurationHistogram/bounds`` buckets (not cumulative), the last one `+Inf`.
    let durationBuckets = InlineArray<18, Atomic<Int>> { _ in Atomic(0) }  // bounds.count + 1
    let durationSumNanoseconds = Atomic<Int>(0)
    private let trailingPad = CacheLinePadding()

    init() {}

    /// Counts a response by status class and records its duration.
    func count(status: Int, elapsedNanoseconds: Int64) {
        requests.add(1, ordering: .relaxed)
        let digit = status < 200 ? 0 : status < 300 ? 1 : status < 400 ? 2 : status < 500 ? 3 : 4
        statusClasses[digit].add(1, ordering: .relaxed)
        let ns = max(elapsedNanoseconds, 0)
        durationBuckets[RequestDurationHistogram.bucket(ns)].add(1, ordering: .relaxed)
        durationSumNanoseconds.add(Int(clamping: ns), ordering: .relaxed)
    }
}

/// A tunnel counted in ``ProxyCounters`` while it runs.
struct CountedTunnel: ConnectionTunnel {
    let inner: any ConnectionTunnel
    let counters: ProxyCounters

    init(_ inner: any ConnectionTunnel, counters: ProxyCounters) {
        self.inner = inner
        self.counters = counters
    }

    nonisolated(nonsending) func run(client: Socket, pending: [UInt8], idleTimeout: Duration) async {
        counters.tunnelsOpened.add(1, ordering: .relaxed)
        counters.tunnelsOpen.add(1, ordering: .relaxed)
        await inner.run(client: client, pending: pending, idleTimeout: idleTimeout)
        counters.tunnelsOpen.subtract(1, ordering: .relaxed)
    }

    func cancel() { inner.cancel() }
}

/// The client-side request duration histogram (`lb_request_duration_seconds`): from the request
/// entering the balancer's chain to its response being ready (headers; a streamed body's
/// transfer is not included), whoever answered. Its buckets live in the loops'
/// ``ProxyCounterShard``s: one relaxed atomic add per bucket hit, one for the sum.
enum RequestDurationHistogram {
    /// Upper bounds in seconds. Sub-millisecond buckets first: a proxied answer from a nearby
    /// backend takes a few hundred microseconds, and a first bucket of 1 ms would hold them all.
    static let bounds: [Double] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private static let boundNanoseconds: [Int64] = bounds.map { Int64(($0 * 1e9).rounded()) }

    /// The bucket of a duration of `ns` nanoseconds (the last one is `+Inf`).
    static func bucket(_ ns: Int64) -> Int {
        var i = 0
        let bounds = boundNanoseconds
        while i < bounds.count && ns > bounds[i] { i += 1 }
        return i
    }

    /// Cumulative counts per bound, then `+Inf` (= the count), and the sum in seconds.
    static func cumulative(of shards: [ProxyCounterShard]) -> (counts: [Int], sum: Double) {
        var running = 0
        var counts: [Int] = []
        counts.reserveCapacity(bounds.count + 1)
        for i in 0...bounds.count {
            for shard in shards { running += shard.durationBuckets[i].load(ordering: .relaxed) }
            counts.append(running)
        }
        let sum = shards.reduce(0) { $0 + $1.durationSumNanoseconds.load(ordering: .relaxed) }
        return (counts, Double(sum) / 1e9)
    }
}
