import Testing

@testable import LBKitPolicy

@Suite("ThrottleTable: charges and merges for a shared store")
struct ThrottleSharedStateTests {
    static let client = ClientAddress(ipv4: 0xCB00_7107)  // 203.0.113.7

    @Test("checkCharging decides exactly like check and reports the TAT advance")
    func chargesMatchDecisions() {
        let config = ThrottleConfiguration(rate: 10, burst: 3, penaltyThreshold: 2, penaltyWindow: .seconds(10),
                                           penaltyDuration: .seconds(5), penaltyFactor: 4)
        let clockA = ManualClock(), clockB = ManualClock()
        let plain = ThrottleTable(configuration: config, clock: clockA)
        let charging = ThrottleTable(configuration: config, clock: clockB)
        var charges: [UInt64] = []
        var started = 0
        for step in 0..<40 {
            let expected = plain.check(Self.client)
            let charge = charging.checkCharging(Self.client)
            #expect(charge.decision == expected, "step \(step)")
            charges.append(charge.charged)
            if charge.penaltyStarted { started += 1 }
            clockA.advance(by: .milliseconds(25))
            clockB.advance(by: .milliseconds(25))
        }
        // Allowed requests cost T = 100 ms, or T x 4 while penalised; refused ones cost nothing.
        #expect(Set(charges).isSubset(of: [0, 100_000_000, 400_000_000]))
        #expect(charges.prefix(3) == [100_000_000, 100_000_000, 100_000_000])
        #expect(charges.contains(400_000_000))
        #expect(started == 1)
    }

    @Test("merge raises the TAT to the shared one, never lowers it")
    func mergeTightensOnly() {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 10, burst: 5, penaltyDuration: .zero), clock: clock)
        // Other instances admitted 5 requests: shared TAT is 500 ms ahead, the bucket is empty.
        table.merge(Self.client, ahead: .milliseconds(500), penaltyRemaining: .zero, now: clock.now())
        #expect(table.check(Self.client).retryAfter == .milliseconds(100))
        // A smaller shared TAT changes nothing.
        table.merge(Self.client, ahead: .milliseconds(100), penaltyRemaining: .zero, now: clock.now())
        #expect(table.check(Self.client).retryAfter == .milliseconds(100))
        // Debt beyond the burst window is repaid before anything passes: 900 ms ahead = 400 ms wait.
        table.merge(Self.client, ahead: .milliseconds(900), penaltyRemaining: .zero, now: clock.now())
        #expect(table.check(Self.client).retryAfter == .milliseconds(500))
        clock.advance(by: .milliseconds(500))
        #expect(table.check(Self.client).isAllowed)
        // Negative or zero "ahead" (fully decayed shared state) leaves a fresh key fresh.
        let other = ClientAddress(ipv4: 0xC000_0201)
        table.merge(other, ahead: .milliseconds(-5), penaltyRemaining: .zero, now: clock.now())
        #expect(table.check(other) == .allowed(limit: 5, remaining: 4, resetAfter: .milliseconds(100)))
    }

    @Test("a shared penalty puts the client in the penalty box until it ends")
    func mergePenalty() {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 10, burst: 8, penaltyThreshold: 3,
                                                       penaltyDuration: .seconds(2), penaltyFactor: 4), clock: clock)
        table.merge(Self.client, ahead: .zero, penaltyRemaining: .milliseconds(1500), now: clock.now())
        #expect(table.isPenalised(Self.client))
        // Penalised: burst 8 / 4 = 2.
        #expect(table.check(Self.client).limit == 2)
        // A shorter remaining penalty does not shorten it.
        table.merge(Self.client, ahead: .zero, penaltyRemaining: .milliseconds(10), now: clock.now())
        clock.advance(by: .milliseconds(1400))
        #expect(table.isPenalised(Self.client))
        clock.advance(by: .milliseconds(200))
        #expect(!table.isPenalised(Self.client))
        // With the penalty box off, shared penalties are ignored.
        let lenient = ThrottleTable(configuration: .init(rate: 10, burst: 8, penaltyDuration: .zero), clock: clock)
        lenient.merge(Self.client, ahead: .zero, penaltyRemaining: .seconds(5), now: clock.now())
        #expect(!lenient.isPenalised(Self.client))
    }
}
