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
