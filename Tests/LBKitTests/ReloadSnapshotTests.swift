import Foundation
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy

/// Issue 14 item 8: a request works against the backend set it started with, and reloads build
/// one on the other. Both tests use a ``ManualClock`` (time only moves when told) and need no
/// backend process: nothing is sent.
@Suite("Reload snapshots", .timeLimit(.minutes(1)))
struct ReloadSnapshotTests {
    static func url(_ port: Int) throws -> BackendURL { try BackendURL(parsing: "http://127.0.0.1:\(port)") }

    @Test("the hedge point reads the p99 of the request's own snapshot, not of the set a reload installed since")
    func hedgePointUsesTheRequestsSnapshot() throws {
        let clock = ManualClock()
        var config = LoadBalancerConfiguration()
        config.backends = [try Self.url(6101), try Self.url(6102)]
        config.maxDelay = .seconds(1)
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, clock: clock)
        // The snapshot a request took: backend 0 (6101) answers in about 40 ms.
        let snapshot = balancer.upstreams
        for _ in 0..<20 {
            snapshot.cluster.attemptStarted(0)
            snapshot.cluster.attemptFinished(0, outcome: .success, latency: .milliseconds(40))
        }
        let p99 = try #require(snapshot.cluster.recentP99(0))
        // A reload puts a new backend (no latency samples) at index 0.
        try balancer.reload(backends: [try Self.url(6103), try Self.url(6101), try Self.url(6102)])
        #expect(balancer.upstreams.cluster.recentP99(0) == nil)
        let now = clock.now()
        let point = try #require(balancer.hedgePoint(for: 0, in: snapshot.cluster, from: now))
        // 2 x the snapshot's p99 (the new set's backend 0 would give max-delay, 1 s).
        #expect(point == now + max(.milliseconds(2), p99 * 2), "hedge after \(point - now), p99 \(p99)")
        #expect(point - now < .milliseconds(500))
    }

    @Test("two concurrent reloads are applied one after the other: the second builds on the first's set")
    func concurrentReloadsDoNotLoseOne() async throws {
        let clock = GatedClock()
        var config = LoadBalancerConfiguration()
        config.backends = [try Self.url(6201)]
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, clock: clock)
        let first = [try Self.url(6201), try Self.url(6202)]
        let second = [try Self.url(6201), try Self.url(6202), try Self.url(6203)]

        // The first reload stops inside the set it is building (its cluster reads the clock).
        clock.closeGate()
        let firstDone = ThreadResult()
        Thread.detachNewThread {
            firstDone.finish((try? balancer.reload(backends: first)) != nil)
        }
        #expect(await clock.waitUntilHeld(timeout: .seconds(20)), "the first reload never reached the clock")
        // The second starts while the first is held. Applied one after the other, it must wait
        // for the first; racing, it reads the set the first has not replaced yet.
        let secondDone = ThreadResult()
        Thread.detachNewThread {
            secondDone.finish((try? balancer.reload(backends: second)) != nil)
        }
        // Serialised, the second cannot finish while the gate is closed: give it a moment to show
        // that it does not (racing, it finishes at once), then let the first go on.
        _ = await secondDone.wait(timeout: .milliseconds(500))
        clock.openGate()
        #expect(await firstDone.wait(timeout: .seconds(20)) == true)
        #expect(await secondDone.wait(timeout: .seconds(20)) == true)
        // The set in effect is the second reload's, built on the first's: nothing was lost.
        #expect(balancer.upstreams.urls == second, "in effect: \(balancer.upstreams.urls)")
        #expect(balancer.cluster.backends.map(\.url) == second.map(\.description))
    }
}

/// A ``ManualClock`` whose `now()` can hold its first caller after ``closeGate()`` until
/// ``openGate()`` (at most 30 s): to stop a reload at a known point inside it.
final class GatedClock: MonotonicClock {
    private let clock = ManualClock()
    private struct Gate {
        var closed = false
        var held = false
    }
    private let gate = Mutex(Gate())
    private let released = DispatchSemaphore(value: 0)

    func closeGate() { gate.withLock { $0 = Gate(closed: true, held: false) } }

    func openGate() {
        let wasHolding = gate.withLock { g -> Bool in
            let holding = g.held
            g.closed = false
            return holding
        }
        if wasHolding { released.signal() }
    }

    /// Whether a caller is held at the gate (polled every millisecond up to `timeout`).
    func waitUntilHeld(timeout: Duration) async -> Bool {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if gate.withLock({ $0.held }) { return true }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return false
    }

    func now() -> MonotonicInstant {
        let hold = gate.withLock { g -> Bool in
            guard g.closed && !g.held else { return false }
            g.held = true
            return true
        }
        if hold { _ = released.wait(timeout: .now() + 30) }
        return clock.now()
    }
}

/// The outcome of work on a plain thread, awaited with a bound.
final class ThreadResult: Sendable {
    private let value = Mutex<Bool?>(nil)

    func finish(_ ok: Bool) { value.withLock { $0 = ok } }

    /// The outcome, or nil if none within `timeout` (polled every millisecond).
    func wait(timeout: Duration) async -> Bool? {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if let v = value.withLock({ $0 }) { return v }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return value.withLock { $0 }
    }
}
