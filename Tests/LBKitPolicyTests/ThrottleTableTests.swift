import Synchronization
import Testing

@testable import LBKitPolicy

/// Collects log lines from a table.
final class ThrottleLogSink: Sendable {
    private let storage = Mutex<[String]>([])
    var lines: [String] { storage.withLock { $0 } }
    var log: LogSink { { event in self.storage.withLock { $0.append(event.line) } } }
}

@Suite("ThrottleTable")
struct ThrottleTableTests {
    static let client = ClientAddress(ipv4: 0xCB00_7107)  // 203.0.113.7

    @Test func burstThenOnePerInterval() {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 10, burst: 5, penaltyDuration: .zero), clock: clock)
        for expectedRemaining in [4, 3, 2, 1, 0] {
            let decision = table.check(Self.client)
            #expect(decision == .allowed(limit: 5, remaining: expectedRemaining,
                                         resetAfter: .milliseconds(100 * (5 - expectedRemaining))))
        }
        // Sixth request at the same instant: exactly one emission interval (100 ms) to wait.
        #expect(table.check(Self.client) == .throttled(retryAfter: .milliseconds(100), limit: 5, resetAfter: .milliseconds(500)))
        clock.advance(by: .milliseconds(40))
        #expect(table.check(Self.client).retryAfter == .milliseconds(60))
        clock.advance(by: .milliseconds(60))
        #expect(table.check(Self.client) == .allowed(limit: 5, remaining: 0, resetAfter: .milliseconds(500)))
        #expect(table.check(Self.client).retryAfter == .milliseconds(100))

        // Sustained: over 1 s in 10 ms steps exactly rate × 1 s = 10 requests pass.
        var admitted = 0
        for _ in 0..<100 {
            clock.advance(by: .milliseconds(10))
            for _ in 0..<3 where table.check(Self.client).isAllowed { admitted += 1 }
        }
        #expect(admitted == 10)
    }

    @Test func retryAfterHeaderIsExactWholeSeconds() {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 0.5, burst: 1), clock: clock)
        let first = table.check(Self.client)
        #expect(first == .allowed(limit: 1, remaining: 0, resetAfter: .seconds(2)))
        #expect(first.responseHeaders().map { "\($0.name): \($0.value)" }
            == ["RateLimit-Limit: 1", "RateLimit-Remaining: 0", "RateLimit-Reset: 2"])

        let second = table.check(Self.client)
        #expect(second == .throttled(retryAfter: .seconds(2), limit: 1, resetAfter: .seconds(2)))
        #expect(second.responseHeaders().map { "\($0.name): \($0.value)" }
            == ["Retry-After: 2", "RateLimit-Limit: 1", "RateLimit-Remaining: 0", "RateLimit-Reset: 2"])

        clock.advance(by: .milliseconds(500))
        let third = table.check(Self.client)
        #expect(third.retryAfter == .milliseconds(1500))
        #expect(third.retryAfterSeconds == 2)  // rounded up
        clock.advance(by: .milliseconds(1499))
        let fourth = table.check(Self.client)
        #expect(fourth.retryAfter == .milliseconds(1))
        #expect(fourth.retryAfterSeconds == 1)  // never 0
    }

    @Test func recoversExactlyAfterRetryAfter() throws {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 3, burst: 2), clock: clock)
        #expect(table.check(Self.client).isAllowed)
        #expect(table.check(Self.client).isAllowed)
        let retry = try #require(table.check(Self.client).retryAfter)
        #expect(retry == .nanoseconds(333_333_333))
        clock.advance(by: retry - .nanoseconds(1))
        #expect(table.check(Self.client).retryAfter == .nanoseconds(1))
        clock.advance(by: .nanoseconds(1))
        #expect(table.check(Self.client).isAllowed)
        #expect(!table.check(Self.client).isAllowed)

        // After resetAfter the whole burst is back.
        let reset = table.check(Self.client).resetAfter
        clock.advance(by: reset)
        #expect(table.check(Self.client) == .allowed(limit: 2, remaining: 1, resetAfter: .nanoseconds(333_333_333)))
    }

    @Test func keysAreIndependentAndIPv4MappedIsTheSameKey() throws {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 1, burst: 1), clock: clock)
        #expect(table.check(try #require(ClientAddress("198.51.100.1"))).isAllowed)
        #expect(!table.check(try #require(ClientAddress("::ffff:198.51.100.1"))).isAllowed)
        #expect(table.check(try #require(ClientAddress("198.51.100.2"))).isAllowed)
        #expect(table.check(try #require(ClientAddress("2001:db8::1"))).isAllowed)
        #expect(!table.check(try #require(ClientAddress("2001:DB8:0::1"))).isAllowed)
        #expect(table.count == 3)
    }

    @Test func evictionKeepsCountWithinMaxKeys() {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 1, burst: 1, maxKeys: 10_000), clock: clock)
        var maxSeen = 0
        for i in 0..<1_000_000 {
            _ = table.check(ClientAddress(ipv4: UInt32(i) &* 2_654_435_761))
            if i % 50_000 == 0 { maxSeen = max(maxSeen, table.count) }
        }
        #expect(maxSeen <= 10_000)
        #expect(table.count == 10_000)
        #expect(table.approximateBytesPerKey <= 64)
        #expect(table.allocatedBytes <= 10_000 * 64)
    }

    @Test func defaultCapHolds() {
        let table = ThrottleTable(clock: ManualClock())
        #expect(table.configuration.maxKeys == 100_000)
        for i in 0..<150_000 { _ = table.check(ClientAddress(high: 0x2001_0db8_0000_0000, low: UInt64(i))) }
        #expect(table.count == 100_000)
        #expect(table.approximateBytesPerKey <= 64)
    }

    @Test func unevenShardsUseTheWholeCapacity() {
        let table = ThrottleTable(configuration: .init(rate: 1, burst: 2, maxKeys: 128), clock: ManualClock())
        #expect(table.shardCount == 2)
        // 128 keys that all hash to shard 0: the table holds all of them.
        var inShard0: [ClientAddress] = []
        var inShard1: [ClientAddress] = []
        var i: UInt32 = 0
        while inShard0.count < 128 || inShard1.count < 2 {
            let key = ClientAddress(ipv4: i)
            if table.shardIndex(of: key) == 0 { inShard0.append(key) } else { inShard1.append(key) }
            i += 1
        }
        for key in inShard0.prefix(128) { #expect(table.check(key).isAllowed) }
        #expect(table.count == 128)
        // Table full and shard 1 empty: a shard-1 key is judged as new but not stored.
        let stranger = inShard1[0]
        for _ in 0..<3 {
            #expect(table.check(stranger) == .allowed(limit: 2, remaining: 1, resetAfter: .seconds(1)))
        }
        #expect(table.count == 128)
        // Every shard-0 key kept its state (second request allowed, third refused).
        for key in inShard0.prefix(128) { #expect(table.check(key).isAllowed) }
        for key in inShard0.prefix(128) { #expect(!table.check(key).isAllowed) }
    }

    @Test func recentlyUsedKeySurvivesAFlood() {
        let clock = ManualClock()
        let table = ThrottleTable(
            configuration: .init(rate: 1, burst: 1, maxKeys: 1000, penaltyDuration: .zero), clock: clock)
        let vip = ClientAddress(ipv4: 0x0A00_0001)
        let victim = ClientAddress(ipv4: 0x0A00_0002)
        #expect(table.check(vip).isAllowed)
        #expect(!table.check(vip).isAllowed)
        #expect(table.check(victim).isAllowed)
        #expect(!table.check(victim).isAllowed)
        for i in 0..<100_000 {
            _ = table.check(ClientAddress(ipv4: 0xC000_0000 | UInt32(i)))
            if i % 50 == 0 { #expect(!table.check(vip).isAllowed) }
        }
        // The clock never moved: the vip is still throttled (its state survived), the victim was
        // forgotten and starts afresh.
        #expect(!table.check(vip).isAllowed)
        #expect(table.check(victim).isAllowed)
        #expect(table.count == 1000)
    }

    @Test func idleKeysAreReclaimed() {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 10, burst: 1, maxKeys: 100_000), clock: clock)
        var key: UInt32 = 0
        for _ in 0..<50 {
            for _ in 0..<1000 {
                _ = table.check(ClientAddress(ipv4: key))
                key += 1
            }
            clock.advance(by: .seconds(1))  // every key seen so far has fully decayed
        }
        // 50_000 distinct keys, but only about one wave's worth is ever tracked.
        #expect(table.count >= 1000)
        #expect(table.count <= 2000)
        #expect(table.allocatedBytes < 10_000 * 64)  // 50_000 tracked keys would take 2.6 MB
        let tracked = table.count
        #expect(table.purgeIdle() == tracked)
        #expect(table.count == 0)
        // A reclaimed key behaves like a new one.
        #expect(table.check(ClientAddress(ipv4: 0)) == .allowed(limit: 1, remaining: 0, resetAfter: .milliseconds(100)))
    }

    @Test func penaltyBox() {
        let clock = ManualClock()
        let sink = ThrottleLogSink()
        let table = ThrottleTable(
            configuration: .init(rate: 1, burst: 2, penaltyThreshold: 10, penaltyWindow: .seconds(10),
                                 penaltyDuration: .seconds(60), penaltyFactor: 4),
            clock: clock, log: sink.log)
        let start = clock.now()
        #expect(table.check(Self.client).isAllowed)
        #expect(table.check(Self.client).isAllowed)
        for _ in 0..<10 { #expect(!table.check(Self.client).isAllowed) }
        #expect(sink.lines.isEmpty)
        #expect(!table.isPenalised(Self.client))
        #expect(table.penaltiesStarted == 0)

        #expect(!table.check(Self.client).isAllowed)  // 11th throttled request: more than 10
        #expect(sink.lines == ["[THROTTLE] 203.0.113.7 penalised for 60s"])
        #expect(table.isPenalised(Self.client))
        for _ in 0..<100 { _ = table.check(Self.client) }
        #expect(sink.lines.count == 1)
        #expect(table.penaltiesStarted == 1)   // lb_throttle_penalties_total counts it once

        // Penalised: rate 1/4 per second, burst max(1, 2/4) = 1, instead of 1/s with burst 2.
        clock.advance(by: .seconds(10))
        #expect(table.check(Self.client) == .allowed(limit: 1, remaining: 0, resetAfter: .seconds(4)))
        #expect(table.check(Self.client) == .throttled(retryAfter: .seconds(4), limit: 1, resetAfter: .seconds(4)))
        clock.advance(by: .seconds(3))
        #expect(!table.check(Self.client).isAllowed)
        clock.advance(by: .seconds(1))
        #expect(table.check(Self.client).isAllowed)
        #expect(!table.check(Self.client).isAllowed)

        // Idle-looking but penalised: not reclaimed.
        clock.advance(by: .seconds(30))
        table.purgeIdle()
        #expect(table.count == 1)
        #expect(table.isPenalised(Self.client))

        // The penalty ends 60 s after it began.
        clock.set(start + (.seconds(60) - .nanoseconds(1)))
        #expect(table.isPenalised(Self.client))
        clock.set(start + .seconds(60))
        #expect(!table.isPenalised(Self.client))
        #expect(table.check(Self.client) == .allowed(limit: 2, remaining: 1, resetAfter: .seconds(1)))
        #expect(table.check(Self.client).isAllowed)
        #expect(sink.lines.count == 1)

        // A new offence is a new penalty, logged again.
        for _ in 0..<11 { _ = table.check(Self.client) }
        #expect(sink.lines.count == 2)
        #expect(sink.lines.last == "[THROTTLE] 203.0.113.7 penalised for 60s")
    }

    @Test func strikesOutsideTheWindowDoNotAccumulate() {
        let clock = ManualClock()
        let sink = ThrottleLogSink()
        let table = ThrottleTable(configuration: .init(rate: 1, burst: 1), clock: clock, log: sink.log)
        #expect(table.check(Self.client).isAllowed)
        for _ in 0..<10 { _ = table.check(Self.client) }  // 10 strikes: not more than 10
        clock.advance(by: .milliseconds(10_500))           // the window (10 s) has passed
        #expect(table.check(Self.client).isAllowed)
        for _ in 0..<10 { _ = table.check(Self.client) }   // a new window: 10 strikes again
        #expect(sink.lines.isEmpty)
        _ = table.check(Self.client)                       // 11th in this window
        #expect(sink.lines.count == 1)
        #expect(table.isPenalised(Self.client))
    }

    @Test func penaltyCanBeDisabledAndDurationsFormat() {
        let clock = ManualClock()
        let sink = ThrottleLogSink()
        let table = ThrottleTable(
            configuration: .init(rate: 1, burst: 1, penaltyDuration: .zero), clock: clock, log: sink.log)
        for _ in 0..<1000 { _ = table.check(Self.client) }
        #expect(sink.lines.isEmpty)
        #expect(!table.isPenalised(Self.client))

        let v6 = ThrottleTable(
            configuration: .init(rate: 1, burst: 1, penaltyThreshold: 0, penaltyDuration: .milliseconds(1500)),
            clock: clock, log: sink.log)
        let key = ClientAddress(high: 0x2001_0db8_0000_0000, low: 1)
        _ = v6.check(key)
        _ = v6.check(key)  // first throttle: more than 0
        #expect(sink.lines == ["[THROTTLE] 2001:db8::1 penalised for 1500ms"])
    }

    @Test func configurationIsClamped() {
        let table = ThrottleTable(
            configuration: .init(rate: -5, burst: 0, maxKeys: 0, penaltyThreshold: -1, penaltyFactor: 0),
            clock: ManualClock())
        let c = table.configuration
        #expect(c.rate == 1e-6 && c.burst == 1 && c.maxKeys == 1 && c.penaltyThreshold == 0 && c.penaltyFactor == 1)
        #expect(table.check(Self.client).isAllowed)
        #expect(table.check(ClientAddress(ipv4: 1)).isAllowed)
        #expect(table.count == 1)
        #expect(ThrottleTable(configuration: .init(rate: .nan), clock: ManualClock()).configuration.rate == 1e-6)
    }

    @Test func removeAllForgetsEverything() {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 1, burst: 1), clock: clock)
        for i in 0..<500 { _ = table.check(ClientAddress(ipv4: UInt32(i))) }
        #expect(table.count == 500)
        let before = table.allocatedBytes
        table.removeAll()
        #expect(table.count == 0)
        #expect(table.allocatedBytes < before / 4)
        #expect(table.check(ClientAddress(ipv4: 1)).isAllowed)
        #expect(table.count == 1)
    }
}
