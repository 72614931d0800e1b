import LBKitHTTP
import Synchronization

/// Balancer-wide counters (lock-free; read by `/_lb/stats` and `/_lb/metrics`).
final class ProxyCounters: Sendable {
    let requests = Atomic<Int>(0)
    let status1xx = Atomic<Int>(0)
    let status2xx = Atomic<Int>(0)
    let status3xx = Atomic<Int>(0)
    let status4xx = Atomic<Int>(0)
    let status5xx = Atomic<Int>(0)
    let noBackend = Atomic<Int>(0)
    let budgetExhausted = Atomic<Int>(0)
    /// Upgraded connections (WebSocket tunnels) opened so far, and open now.
    let tunnelsOpened = Atomic<Int>(0)
    let tunnelsOpen = Atomic<Int>(0)
    /// Requests inside ``LoadBalancer/handle(_:context:)`` now (drained before shutdown).
    let inFlight = Atomic<Int>(0)
    /// Configuration reloads applied, and refused (invalid file or backend set).
    let reloadsSucceeded = Atomic<Int>(0)
    let reloadsFailed = Atomic<Int>(0)
    /// Client-side request durations (`lb_request_duration_seconds`).
    let requestDurations = RequestDurationHistogram()

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

    func count(status: Int) {
        requests.add(1, ordering: .relaxed)
        switch status {
        case ..<200: status1xx.add(1, ordering: .relaxed)
        case 200..<300: status2xx.add(1, ordering: .relaxed)
        case 300..<400: status3xx.add(1, ordering: .relaxed)
        case 400..<500: status4xx.add(1, ordering: .relaxed)
        default: status5xx.add(1, ordering: .relaxed)
        }
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
/// transfer is not included), whoever answered. Lock-free: one relaxed atomic add per bucket
/// hit, one for the sum.
final class RequestDurationHistogram: Sendable {
    /// Upper bounds in seconds. Sub-millisecond buckets first: a proxied answer from a nearby
    /// backend takes a few hundred microseconds, and a first bucket of 1 ms would hold them all.
    static let bounds: [Double] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private static let boundNanoseconds: [Int64] = bounds.map { Int64(($0 * 1e9).rounded()) }
    /// Per bucket (not cumulative), the last one `+Inf`.
    private let buckets = InlineArray<18, Atomic<Int>> { _ in Atomic(0) }  // bounds.count + 1
    private let sumNanoseconds = Atomic<Int>(0)

    init() {}

    func record(_ duration: Duration) {
        let ns = max(duration.nanosecondsClamped, 0)
        var i = 0
        let bounds = Self.boundNanoseconds
        while i < bounds.count && ns > bounds[i] { i += 1 }
        buckets[i].add(1, ordering: .relaxed)
        sumNanoseconds.add(Int(clamping: ns), ordering: .relaxed)
    }

    /// Cumulative counts per bound, then `+Inf` (= the count), and the sum in seconds.
    var cumulative: (counts: [Int], sum: Double) {
        var running = 0
        var counts: [Int] = []
        counts.reserveCapacity(Self.bounds.count + 1)
        for i in 0...Self.bounds.count {
            running += buckets[i].load(ordering: .relaxed)
            counts.append(running)
        }
        return (counts, Double(sumNanoseconds.load(ordering: .relaxed)) / 1e9)
    }
}
