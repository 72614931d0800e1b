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
