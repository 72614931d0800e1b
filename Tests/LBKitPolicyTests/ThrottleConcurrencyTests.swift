import Synchronization
import Testing

@testable import LBKitPolicy

@Suite("ThrottleTable under concurrency")
struct ThrottleConcurrencyTests {
    @Test func fixedClockAdmitsExactlyTheBurst() async {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 1, burst: 100), clock: clock)
        let key = ClientAddress(ipv4: 0xC633_6409)
        let admitted = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var n = 0
                    for _ in 0..<5000 where table.check(key).isAllowed { n += 1 }
                    return n
                }
            }
            return await group.reduce(0, +)
        }
        #expect(admitted == 100)
        #expect(table.count == 1)
    }

    @Test func movingClockNeverExceedsBurstPlusRateTimesElapsed() async {
        let clock = ManualClock()
        // T = 1 ms, burst 50; no penalty so the full allowance stays available.
        let table = ThrottleTable(configuration: .init(rate: 1000, burst: 50, penaltyDuration: .zero), clock: clock)
        let key = ClientAddress(ipv4: 0xC633_6409)
        let start = clock.now()
        let admitted = await withTaskGroup(of: Int.self) { group in
            group.addTask {
                for _ in 0..<200 {
                    clock.advance(by: .microseconds(700))
                    await Task.yield()
                }
                return 0
            }
            for _ in 0..<4 {
                group.addTask {
                    var n = 0
                    for i in 0..<20_000 {
                        if table.check(key).isAllowed { n += 1 }
                        if i % 100 == 0 { await Task.yield() }
                    }
                    return n
                }
            }
            return await group.reduce(0, +)
        }
        let elapsed = clock.now() - start
        #expect(elapsed == .milliseconds(140))
        #expect(admitted >= 50)
        #expect(admitted <= 50 + Int(elapsed.nanosecondsClamped / 1_000_000))
    }

    @Test func manyKeysFromManyTasks() async {
        let clock = ManualClock()
        let table = ThrottleTable(configuration: .init(rate: 1, burst: 3, maxKeys: 10_000), clock: clock)
        let perTask = await withTaskGroup(of: Int.self) { group in
            for t in 0..<4 {
                group.addTask {
                    var n = 0
                    for round in 0..<10 {
                        for k in 0..<500 {
                            if table.check(ClientAddress(ipv4: UInt32(t << 16 | k))).isAllowed { n += 1 }
                        }
                        if round % 3 == 0 { await Task.yield() }
                    }
                    return n
                }
            }
            var all: [Int] = []
            for await n in group { all.append(n) }
            return all
        }
        #expect(perTask == [1500, 1500, 1500, 1500])
        #expect(table.count == 2000)
    }
}
