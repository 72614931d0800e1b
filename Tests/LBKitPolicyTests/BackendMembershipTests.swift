import Testing
@testable import LBKitPolicy

/// Backends that come and go: expansion of names into addresses, slow start on join, retiring
/// vanished addresses, failure streaks. Pure rules on a ManualClock.
@Suite("BackendMembership (names, addresses, retiring)")
struct BackendMembershipTests {
    let name = "http://svc.test:8080"
    let a = "http://10.0.0.1:8080", b = "http://10.0.0.2:8080", c = "http://10.0.0.3:8080"

    func membership(_ declared: [DeclaredBackend]? = nil) -> BackendMembership {
        BackendMembership(declared: declared ?? [DeclaredBackend(url: name, weight: 3, healthPath: "/ready")])
    }

    @Test("a name that resolves to several addresses becomes one member per address, with the declaration's settings")
    func expansion() {
        var m = membership([DeclaredBackend(url: name, weight: 3, healthPath: "/ready"), DeclaredBackend(url: "http://10.0.0.9:80")])
        let now = ManualClock().now()
        _ = m.replaceDeclared(m.declared, resolutions: ["http://10.0.0.9:80": .resolved(["http://10.0.0.9:80"])], at: now) { _ in 0 }
        #expect(m.members.map(\.url) == ["http://10.0.0.9:80"])
        let events = m.resolved(name, addresses: [a, b, c, b], at: now) { _ in 0 }
        #expect(m.members.map(\.url) == [a, b, c, "http://10.0.0.9:80"])
        #expect(m.members.filter { $0.origin == name }.allSatisfy { $0.weight == 3 && $0.healthPath == "/ready" && !$0.retiring })
        #expect(m.members.last?.origin == "http://10.0.0.9:80")
        #expect(events.map(\.line) == ["[CONFIG] \(name) resolves to 3 addresses: added \(a), \(b), \(c)"])
        #expect(m.resolution(of: name)?.stateName == "resolved")
    }

    @Test("an address two declarations share belongs to the first")
    func sharedAddress() {
        var m = membership([DeclaredBackend(url: name), DeclaredBackend(url: "http://other.test:8080", weight: 5)])
        let now = ManualClock().now()
        _ = m.resolved("http://other.test:8080", addresses: [a, b], at: now) { _ in 0 }
        #expect(m.members.map(\.origin) == ["http://other.test:8080", "http://other.test:8080"])
        _ = m.resolved(name, addresses: [b], at: now) { _ in 0 }
        #expect(m.members.map(\.url) == [b, a])
        #expect(m.members.map(\.origin) == [name, "http://other.test:8080"])
    }

    @Test("a vanished address retires while it has requests in flight, then is removed; at once when idle")
    func vanishedAddressDrains() {
        var m = membership()
        let now = ManualClock().now()
        _ = m.resolved(name, addresses: [a, b, c], at: now) { _ in 0 }
        var inFlight = [b: 2]
        let events = m.resolved(name, addresses: [a, c], at: now) { inFlight[$0] ?? 0 }
        #expect(m.members.map(\.url) == [a, c, b])
        #expect(m.members.map(\.retiring) == [false, false, true])
        #expect(events.map(\.line) == ["[CONFIG] \(name) resolves to 2 addresses: removed (draining) \(b)"])
        // Still busy: a sweep keeps it.
        let busy = m.sweep { inFlight[$0] ?? 0 }
        #expect(busy.isEmpty)
        #expect(m.members.count == 3)
        inFlight[b] = 0
        let swept = m.sweep { inFlight[$0] ?? 0 }
        #expect(swept.map(\.line) == ["[CONFIG] removed \(b) (drained: no requests in flight)"])
        #expect(m.members.map(\.url) == [a, c])
        // An idle address that vanishes leaves at once.
        let idle = m.resolved(name, addresses: [a], at: now) { _ in 0 }
        #expect(m.members.map(\.url) == [a])
        #expect(idle.map(\.line).contains("[CONFIG] removed \(c) (drained: no requests in flight)"))
    }

    @Test("a retiring address that resolves again is back in service")
    func retiringAddressReturns() {
        var m = membership()
        let now = ManualClock().now()
        _ = m.resolved(name, addresses: [a, b], at: now) { _ in 0 }
        _ = m.resolved(name, addresses: [a], at: now) { _ in 1 }
        #expect(m.members.first { $0.url == b }?.retiring == true)
        let events = m.resolved(name, addresses: [a, b], at: now) { _ in 1 }
        #expect(m.members.map(\.url) == [a, b])
        #expect(m.members.allSatisfy { !$0.retiring })
        #expect(events.map(\.line) == ["[CONFIG] \(name) resolves to 2 addresses: added \(b)"])
    }

    @Test("failed resolutions keep the last known addresses, log once per streak, and the recovery once")
    func failureKeepsLastSet() {
        var m = membership()
        let clock = ManualClock()
        _ = m.resolved(name, addresses: [a, b], at: clock.now()) { _ in 0 }
        let streakStart = clock.now()
        let first = m.resolutionFailed(name, reason: "cannot resolve svc.test: Name or service not known", at: clock.now()) { _ in 0 }
        #expect(first.count == 1)
        #expect(first.first?.level == .warning)
        #expect(first.first?.line == "[CONFIG] cannot resolve \(name) (cannot resolve svc.test: Name or service not known): "
            + "keeping its last known addresses (\(a), \(b)); logged once until it resolves again")
        clock.advance(by: .seconds(5))
        let later = m.resolutionFailed(name, reason: "timeout", at: clock.now()) { _ in 0 }
        #expect(later.isEmpty)
        clock.advance(by: .seconds(5))
        let later2 = m.resolutionFailed(name, reason: "timeout", at: clock.now()) { _ in 0 }
        #expect(later2.isEmpty)
        #expect(m.members.map(\.url) == [a, b])
        #expect(m.members.allSatisfy { !$0.retiring })
        #expect(m.resolution(of: name) == ResolutionStatus(addresses: [a, b], failures: 3, failingSince: streakStart, lastError: "timeout"))
        #expect(m.resolution(of: name)?.stateName == "failing")
        clock.advance(by: .seconds(5))
        let back = m.resolved(name, addresses: [a, b], at: clock.now()) { _ in 0 }
        #expect(back.map(\.line) == ["[CONFIG] \(name) resolves again after 3 failed resolutions over 15 s"])
        // A new streak is logged again.
        let again = m.resolutionFailed(name, reason: "timeout", at: clock.now()) { _ in 0 }
        #expect(again.count == 1)
    }

    @Test("a name that never resolved has no members and says so once")
    func pendingName() {
        var m = membership()
        let events = m.replaceDeclared(m.declared, resolutions: [name: .failed("no such host")], at: .zero) { _ in 0 }
        #expect(m.members.isEmpty)
        #expect(events.map(\.line) == ["[CONFIG] cannot resolve \(name) (no such host): it has no backends until it resolves; logged once until it resolves again"])
        #expect(m.resolution(of: name)?.stateName == "pending")
    }

    @Test("replacing the declarations keeps known addresses, retires removed ones and applies weights")
    func replaceDeclared() {
        var m = membership([DeclaredBackend(url: name), DeclaredBackend(url: "http://10.0.0.9:80")])
        _ = m.replaceDeclared(m.declared, resolutions: [name: .resolved([a, b]), "http://10.0.0.9:80": .resolved(["http://10.0.0.9:80"])],
                              at: .zero) { _ in 0 }
        #expect(m.members.count == 3)
        // The name stays declared (its addresses are kept without a new resolution); the literal goes.
        _ = m.replaceDeclared([DeclaredBackend(url: name, weight: 4)], at: .zero) { $0 == "http://10.0.0.9:80" ? 1 : 0 }
        #expect(m.members.map(\.url) == [a, b, "http://10.0.0.9:80"])
        #expect(m.members.map(\.retiring) == [false, false, true])
        #expect(m.members.prefix(2).allSatisfy { $0.weight == 4 })
        let known = m.setWeight(7, of: name)
        let unknown = m.setWeight(7, of: "http://nope:1")
        #expect(known && !unknown)
        #expect(m.members.prefix(2).allSatisfy { $0.weight == 7 })
        #expect(m.resolution(of: "http://10.0.0.9:80") == nil)
    }

    @Test("a backend that joins a running cluster starts in slow start; kept ones keep their state")
    func joinWithSlowStart() {
        var config = ClusterConfiguration()
        config.slowStart = .seconds(10)
        let clock = ManualClock()
        let old = BackendCluster(backends: [BackendDescriptor(url: a)], configuration: config, clock: clock)
        // At boot nothing warms up.
        #expect(old.snapshot()[0].stateName == .healthy)
        clock.advance(by: .seconds(1))
        let new = BackendCluster(backends: [BackendDescriptor(url: a), BackendDescriptor(url: b)], configuration: config, clock: clock)
        new.inheritState(from: old)
        var snapshot = new.snapshot()
        #expect(snapshot[0].stateName == .healthy && snapshot[0].slowStartFactor == 1)
        #expect(snapshot[1].stateName == .warming)
        #expect(abs(snapshot[1].slowStartFactor - 0.1) < 1e-9)
        clock.advance(by: .seconds(5))
        #expect(abs(new.snapshot()[1].slowStartFactor - 0.55) < 1e-9)
        clock.advance(by: .seconds(5))
        snapshot = new.snapshot()
        #expect(snapshot[1].stateName == .healthy && snapshot[1].slowStartFactor == 1)
    }

    @Test("a retiring backend is drained quietly: no new requests, eligible again when it returns")
    func retiringIsDraining() {
        let clock = ManualClock()
        let logs = LogCollector()
        let cluster = BackendCluster(backends: [BackendDescriptor(url: a), BackendDescriptor(url: b)], clock: clock, log: logs.sink)
        cluster.setDrainFlag(1, true)
        #expect(cluster.snapshot()[1].stateName == .draining)
        for _ in 0..<4 { #expect(cluster.choose() == .backend(0)) }
        cluster.setDrainFlag(1, false)
        #expect(cluster.snapshot()[1].isEligible)
        #expect(logs.lines.isEmpty)
    }
}
