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
    @Test("the hedge point reads the p99 of the request's own snapshot, not of the set a reload installed since")
    func hedgePointUsesTheRequestsSnapshot() throws {
        let clock = ManualClock()
        var config = LoadBalancerConfiguration()
        config.backends = [try BackendURL.loopback(6101), try BackendURL.loopback(6102)]
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
        try balancer.reload(backends: [try BackendURL.loopback(6103), try BackendURL.loopback(6101), try BackendURL.loopback(6102)])
        #expect(balancer.upstreams.cluster.recentP99(0) == nil)
        let now = clock.now()
        let point = try #require(balancer.hedgePoint(for: 0, in: snapshot.cluster, from: now))
        // 2 x the snapshot's p99 (the new set's backend 0 would give max-delay, 1 s).
        #expect(point == now + max(.milliseconds(2), p99 * 2), "hedge after \(point - now), p99 \(p99)")
        #expect(point - now < .milliseconds(500))
    }

    @Test("two concurrent reloads are applied one after the other: the later one builds on the earlier one's set")
    func concurrentReloadsDoNotLoseOne() async throws {
        var config = LoadBalancerConfiguration()
        config.backends = [try BackendURL.loopback(6201)]
        let first = [try BackendURL.loopback(6201), try BackendURL.loopback(6202)]
        let second = [try BackendURL.loopback(6201), try BackendURL.loopback(6202), try BackendURL.loopback(6203)]
        // How many clock reads one such reload makes: the first reload is held at its last one,
        // made while it builds its new set (the new cluster reads the clock), that is after it
        // read the set in effect and before it installs its own.
        let calibration = GatedClock()
        let probe = try LoadBalancer(configuration: config, group: TestLoops.group, clock: calibration)
        let before = calibration.calls
        try probe.reload(backends: first)
        let readsPerReload = calibration.calls - before
        try #require(readsPerReload > 0)

        let clock = GatedClock()
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, clock: clock)
        clock.closeGate(atCall: readsPerReload)
        let firstDone = ThreadResult()
        Thread.detachNewThread {
            firstDone.finish((try? balancer.reload(backends: first)) != nil)
        }
        #expect(await clock.waitUntilHeld(timeout: .seconds(20)), "the first reload never read the clock")
        // The second starts while the first is held. Serialised, it waits for the first; racing,
        // it reads the set the first has not replaced yet and finishes at once. Give it a moment.
        let secondDone = ThreadResult()
        Thread.detachNewThread {
            secondDone.finish((try? balancer.reload(backends: second)) != nil)
        }
        let secondFinishedFirst = await secondDone.wait(timeout: .milliseconds(500)) != nil
        let afterSecond = balancer.upstreams
        clock.openGate()
        #expect(await firstDone.wait(timeout: .seconds(20)) == true)
        #expect(await secondDone.wait(timeout: .seconds(20)) == true)
        let final = balancer.upstreams
        if secondFinishedFirst {
            // The first was held before it read the set in effect: applied last, it must build
            // on the second's set (its endpoint for 6202 is the second's, not a fresh one).
            #expect(final.urls == first, "in effect: \(final.urls)")
            let mine = try #require(final.urls.firstIndex(of: first[1]))
            let theirs = try #require(afterSecond.urls.firstIndex(of: first[1]))
            #expect(final.endpoints[mine] === afterSecond.endpoints[theirs], "the first reload built on a set it read before the second was installed")
        } else {
            // The second waited for the first: its set is in effect.
            #expect(final.urls == second, "in effect: \(final.urls)")
        }
        #expect(balancer.cluster.backends.map(\.url) == final.urls.map(\.description))
    }
}

/// A ``ManualClock`` that counts its reads and can hold, after ``closeGate(atCall:)``, the n-th
/// read until ``openGate()`` (at most 30 s): to stop a reload at a known point inside it.
final class GatedClock: MonotonicClock {
    private let clock = ManualClock()
    private struct Gate {
        var calls = 0
        var holdAt: Int?
        var held = false
    }
    private let gate = Mutex(Gate())
    private let released = DispatchSemaphore(value: 0)

    /// Clock reads so far.
    var calls: Int { gate.withLock { $0.calls } }

    /// Holds the `n`-th read from now on (1 = the next one).
    func closeGate(atCall n: Int) { gate.withLock { $0.holdAt = $0.calls + n; $0.held = false } }

    func openGate() {
        let wasHolding = gate.withLock { g -> Bool in
            let holding = g.held
            g.holdAt = nil
            return holding
        }
        if wasHolding { released.signal() }
    }

    /// Whether a read is held at the gate (polled every millisecond up to `timeout`).
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
            g.calls += 1
            guard let at = g.holdAt, g.calls == at else { return false }
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
