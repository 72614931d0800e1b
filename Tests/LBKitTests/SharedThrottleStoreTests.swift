import Foundation
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting

/// One LBKit instance's throttle: a table and its store (no balancer).
private struct Instance {
    let table: ThrottleTable
    let store: RedisThrottleStore
    let middleware: ThrottleMiddleware

    init(_ config: ThrottleConfiguration, server: RedisServerProcess, prefix: String, log: @escaping LogSink = { _ in }) throws {
        table = ThrottleTable(configuration: config, clock: SystemClock(), log: log)
        var storeConfig = RedisThrottleStoreConfiguration(url: try RedisURL(parsing: server.url), keyPrefix: prefix)
        storeConfig.commandTimeout = .seconds(5)   // a loaded CI machine is not an outage
        storeConfig.connectTimeout = .seconds(5)
        store = RedisThrottleStore(configuration: storeConfig, table: table, group: RedisTestLoops.group, log: log)
        middleware = ThrottleMiddleware(table: table, identity: ClientIdentityResolver(trustedProxies: []), sharedStore: store)
    }

    /// Whether a request from `client` passes.
    func allows(_ client: ClientAddress) -> Bool {
        middleware.rejection(for: LBRequest(head: RequestHead(method: "GET", target: "/")), context: LBRequestContext(client: client)) == nil
    }
}

@Suite("Shared throttle store in Redis", .serialized, .timeLimit(.minutes(2)),
       .enabled(if: redisAvailable(), "redis-server not installed"))
struct SharedThrottleStoreTests {
    static let client = ClientAddress(ipv4: 0xCB00_7109)  // 203.0.113.9

    @Test("what one instance admitted is charged to the others after a sync")
    func sharedCharges() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let config = ThrottleConfiguration(rate: 1, burst: 5, penaltyDuration: .zero)
        let a = try Instance(config, server: server, prefix: "t1:")
        let b = try Instance(config, server: server, prefix: "t1:")
        defer { a.store.client.close(); b.store.client.close() }
        for _ in 0..<5 { #expect(a.allows(Self.client)) }
        #expect(!a.allows(Self.client))
        #expect(await a.store.syncOnce())
        // b has not seen the client: its first request is judged locally (first contact)...
        #expect(b.allows(Self.client))
        #expect(await b.store.syncOnce())
        // ...then b knows the shared state: 6 admitted for a burst of 5 at 1/s.
        #expect(!b.allows(Self.client))
        // a learns about b's request when it next reports the client.
        #expect(!a.allows(Self.client))
        #expect(await a.store.syncOnce())
        #expect(!a.allows(Self.client))
        // The state is one hash under the prefix, expiring on its own (TAT ~6 s ahead).
        let redis = RedisClient(url: try RedisURL(parsing: server.url), group: RedisTestLoops.group)
        defer { redis.close() }
        #expect(try await redis.send(["KEYS", "*"]) == .array([.bulk("t1:throttle:203.0.113.9")]))
        let ttl = try await redis.send(["PTTL", "t1:throttle:203.0.113.9"]).int64 ?? -1
        #expect(ttl > 4000 && ttl <= 7000, "PTTL \(ttl)")
        #expect(a.store.state == .connected && a.store.syncCount == 2)
        // Nothing to report and a recent contact: no command at all.
        #expect(await a.store.syncOnce())   // the last refusal
        #expect(await a.store.syncOnce())
        #expect(a.store.syncCount == 3)
    }

    @Test("keys expire once the client's state has decayed")
    func keysExpire() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let a = try Instance(ThrottleConfiguration(rate: 2, burst: 5, penaltyDuration: .zero), server: server, prefix: "exp:")
        defer { a.store.client.close() }
        for _ in 0..<3 { #expect(a.allows(Self.client)) }
        #expect(await a.store.syncOnce())
        let redis = RedisClient(url: try RedisURL(parsing: server.url), group: RedisTestLoops.group)
        defer { redis.close() }
        #expect(try await redis.send(["EXISTS", "exp:throttle:203.0.113.9"]) == .integer(1))
        // TAT 1.5 s ahead: gone (by Redis' own expiry) shortly after.
        let gone = await eventually(timeout: .seconds(6)) { (try? await redis.send(["EXISTS", "exp:throttle:203.0.113.9"])) == .integer(0) }
        #expect(gone)
        #expect(try await redis.send(["DBSIZE"]) == .integer(0))
    }

    @Test("refusals on several instances add up to a shared penalty")
    func sharedPenalty() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let log = LogCapture()
        let config = ThrottleConfiguration(rate: 1, burst: 1, penaltyThreshold: 3, penaltyWindow: .seconds(10),
                                           penaltyDuration: .seconds(30), penaltyFactor: 2)
        let a = try Instance(config, server: server, prefix: "pen:", log: log.sink)
        let b = try Instance(config, server: server, prefix: "pen:", log: log.sink)
        defer { a.store.client.close(); b.store.client.close() }
        // 2 refusals on a and 2 on b: 4 > 3 together, though neither instance reached its threshold.
        #expect(a.allows(Self.client))
        #expect(!a.allows(Self.client) && !a.allows(Self.client))
        #expect(b.allows(Self.client))   // first contact on b
        #expect(!b.allows(Self.client) && !b.allows(Self.client))
        #expect(!a.table.isPenalised(Self.client) && !b.table.isPenalised(Self.client))
        #expect(await a.store.syncOnce())
        #expect(await b.store.syncOnce())
        #expect(b.table.isPenalised(Self.client))
        #expect(!b.allows(Self.client))
        // a learns the penalty with its next report of the client.
        #expect(!a.allows(Self.client))
        #expect(await a.store.syncOnce())
        #expect(a.table.isPenalised(Self.client))
        let redis = RedisClient(url: try RedisURL(parsing: server.url), group: RedisTestLoops.group)
        defer { redis.close() }
        let ttl = try await redis.send(["PTTL", "pen:throttle:203.0.113.9"]).int64 ?? -1
        #expect(ttl > 29_000 && ttl <= 30_100, "PTTL \(ttl)")
    }

    @Test("a penalty started on one instance reaches the others")
    func localPenaltyIsShared() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let config = ThrottleConfiguration(rate: 1, burst: 1, penaltyThreshold: 2, penaltyDuration: .seconds(20))
        let a = try Instance(config, server: server, prefix: "lp:")
        let b = try Instance(config, server: server, prefix: "lp:")
        defer { a.store.client.close(); b.store.client.close() }
        #expect(a.allows(Self.client))
        for _ in 0..<3 { #expect(!a.allows(Self.client)) }
        #expect(a.table.isPenalised(Self.client))
        #expect(await a.store.syncOnce())
        _ = b.allows(Self.client)
        #expect(await b.store.syncOnce())
        #expect(b.table.isPenalised(Self.client))
    }
}

@Suite("Shared throttle store with no Redis at all")
struct SharedThrottleStoreUnreachableTests {
    @Test("unreachable from the start: local decisions, one warning, fallback in stats")
    func unreachableFromStart() async throws {
        let holder = try PortHolder()   // bound, not listening: connects are refused
        let log = LogCapture()
        let table = ThrottleTable(configuration: ThrottleConfiguration(rate: 0.01, burst: 2, penaltyDuration: .zero), clock: SystemClock(), log: log.sink)
        let store = RedisThrottleStore(configuration: RedisThrottleStoreConfiguration(url: RedisURL(host: "127.0.0.1", port: holder.port)),
                                       table: table, group: RedisTestLoops.group, log: log.sink)
        defer { store.client.close() }
        let throttle = ThrottleMiddleware(table: table, identity: ClientIdentityResolver(trustedProxies: []), sharedStore: store)
        #expect(store.state == .connecting)
        let client = ClientAddress(ipv4: 0xC633_6401)
        func passes() -> Bool {
            throttle.rejection(for: LBRequest(head: RequestHead(method: "GET", target: "/")), context: LBRequestContext(client: client)) == nil
        }
        #expect(passes() && passes() && !passes())
        for _ in 0..<5 { #expect(await store.syncOnce() == false) }
        #expect(store.state == .fallback && store.fallbackCount == 1 && store.failureCount == 5)
        #expect(log.count(containing: "unavailable") == 1)
        #expect(store.statsJSON().contains(#""state":"fallback""#) && !store.statsJSON().contains(#""last_error":null"#))
        #expect(log.all.first { $0.contains("unavailable") }?.contains("connection refused") == true)
        #expect(store.prometheusText().contains("lb_throttle_store_up 0\n"))
        // Requests are still judged, by the local table alone.
        #expect(!passes())
    }
}
