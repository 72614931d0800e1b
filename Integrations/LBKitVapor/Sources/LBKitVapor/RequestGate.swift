import Synchronization

/// Counts requests inside the balancer and, once closed, turns new ones away; shutdown waits
/// for the count to reach zero before the balancer stops its event loops.
///
/// One atomic word: the low bits count requests, the top bit says "closed". Entering is a single
/// read-modify-write, so a request either is counted before `close()` (and waited for) or sees
/// the closed bit (and is refused): none can slip into a balancer whose loops are gone.
final class RequestGate: Sendable {
    private static let closedBit = 1 << (Int.bitWidth - 2)
    private let word = Atomic<Int>(0)

    /// Counts one request in; false (and nothing counted) once the gate is closed.
    func enter() -> Bool {
        let value = word.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue
        if value & Self.closedBit != 0 {
            word.wrappingSubtract(1, ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    /// Counts one request out.
    func leave() {
        word.wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }

    /// Refuses every later `enter()`.
    func close() {
        word.bitwiseOr(Self.closedBit, ordering: .sequentiallyConsistent)
    }

    /// Whether `close()` was called.
    var isClosed: Bool { word.load(ordering: .sequentiallyConsistent) & Self.closedBit != 0 }

    /// Requests counted in and not yet out.
    var inFlight: Int { word.load(ordering: .sequentiallyConsistent) & ~Self.closedBit }

    /// Waits (polling every 5 ms of real time) until no request is inside, at most `timeout`.
    /// Returns whether the gate emptied in time.
    func waitUntilEmpty(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while inFlight > 0 {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(5), clock: .continuous)
        }
        return true
    }
}
