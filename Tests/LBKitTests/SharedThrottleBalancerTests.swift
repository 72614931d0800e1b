import Foundation
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting

/// N in-process balancers (each with its own table and store) over one echo backend.
private struct BalancerFleet {
    let balancers: [LoadBalancer]
    let handlers: [any HTTPHandler]
    let logs: [LogCapture]
    let runs: [Task<Void, Never>]

    static func start(count: Int, backend: BackendURL, store: String?, prefix: String, rate: Double, burst: Int,
                      storeTimeout: Duration = .seconds(1)) throws -> BalancerFleet {
        var balancers: [LoadBalancer] = []
        var logs: [LogCapture] = []
        for _ in 0..<count {
            var config = LoadBalancerConfiguration()
            config.backends = [backend]
            config.healthInterval = .zero
            config.rateLimit = rate
            config.burst = burst
            config.penaltyThreshold = 0
            config.throttleStore = try store.map { try RedisURL(parsing: $0) }
            config.throttleKeyPrefix = prefix
            config.throttleStoreTimeout = storeTimeout
            let log = LogCapture()
            balancers.append(try LoadBalancer(configuration: config, group: RedisTestLoops.group, log: log.sink))
            logs.append(log)
        }
        let runs = balancers.map { b in Task { _ = try? await b.run() } }
        return BalancerFleet(balancers: balancers, handlers: balancers.map { $0.responder(admin: true) }, logs: logs, runs: runs)
    }

    func stop() async {
        for b in balancers { b.shutdown() }
        for r in runs { await r.value }
    }

    var states: [ThrottleStoreState?] { balancers.map { $0.throttleMiddleware?.sharedStore?.state } }

    func stats(_ i: Int) throws -> [String: Any] {
        let json = try JSONSerialization.jsonObject(with: Data(balancers[i].statsJSON().utf8)) as? [String: Any]
        return try #require(json?["throttle_store"] as? [String: Any])
    }
}

/// What a stretch of traffic from one client, spread round robin over the balancers, got.
private struct TrafficResult: Sendable {
    /// Start of each request (monotonic ns), the balancer it went to, its status and latency.
    var requests: [Request] = []

    struct Request: Sendable {
        var time: UInt64
        var instance: Int
        var status: Int
        var ms: Double
    }

    var total: Int { requests.count }
    var accepted: Int { requests.filter { $0.status != 429 }.count }
    var statuses: [Int: Int] { requests.reduce(into: [:]) { $0[$1.status, default: 0] += 1 } }
    var maxLatencyMs: Double { requests.map(\.ms).max() ?? 0 }
    /// Seconds from the first to the last request.
    var span: Double {
        let times = requests.map(\.time)
        guard let first = times.min(), let last = times.max() else { return 0 }
        return Double(last - first) / 1e9
    }

    /// What one ideal limiter (a single GCRA table, rate and burst as given, starting fresh)
    /// admits of exactly these arrivals.
    func allowedByOneLimiter(rate: Double, burst: Int) -> Int {
        Self.allowed(requests.map(\.time), rate: rate, burst: burst)
    }

    /// What `instances` independent limiters admit, each of the arrivals it received.
    func allowedByIndependentLimiters(_ instances: Int, rate: Double, burst: Int) -> Int {
        (0..<instances).reduce(0) { sum, i in sum + Self.allowed(requests.filter { $0.instance == i }.map(\.time), rate: rate, burst: burst) }
    }

    static func allowed(_ times: [UInt64], rate: Double, burst: Int) -> Int {
        let table = ThrottleTable(configuration: ThrottleConfiguration(rate: rate, burst: burst, penaltyDuration: .zero), clock: ManualClock())
        let key = ClientAddress(ipv4: 1)
        return times.sorted().filter { table.check(key, now: MonotonicInstant(nanoseconds: $0)).isAllowed }.count
    }
}

/// Sends requests from `client` round robin over `handlers` from `senders` concurrent senders
/// (each pinned to one of the Redis tests' own loops, so a saturated global pool cannot starve
/// the traffic), each pausing `pause` between requests, for `duration` or until `until` holds.
private func drive(_ handlers: [any HTTPHandler], client: ClientAddress, for duration: Duration, senders: Int = 3,
                   pause: Duration = .milliseconds(12), until: @escaping @Sendable () -> Bool = { false }) async -> TrafficResult {
    let end = ContinuousClock.now + duration
    let body = Array(#"{"n":1}"#.utf8)
    let clock = SystemClock()
    let loops = RedisTestLoops.group.loops
    var result = TrafficResult()
    await withTaskGroup(of: [TrafficResult.Request].self) { group in
        for s in 0..<senders {
            group.addTask(executorPreference: loops[s % loops.count]) {
                var mine: [TrafficResult.Request] = []
                var i = s
                while ContinuousClock.now < end && !until() {
                    let t0 = clock.now()
                    let instance = i % handlers.count
                    let response = await handlers[instance].handle(
                        LBRequest(head: RequestHead(method: "POST", target: "/"), body: body), context: LBRequestContext(client: client))
                    let t1 = clock.now()
                    mine.append(.init(time: t0.nanoseconds, instance: instance, status: response.status,
                                      ms: Double(t1.nanoseconds - t0.nanoseconds) / 1e6))
                    i += 1
                    try? await Task.sleep(for: pause)
                }
                return mine
            }
        }
        for await part in group { result.requests += part }
    }
    return result
}

@Suite("Shared throttling across balancers through Redis", .serialized, .timeLimit(.minutes(3)),
       .enabled(if: redisAvailable(), "redis-server not installed"))
struct SharedThrottleBalancerTests {
    static let client = ClientAddress(ipv4: 0xCB00_710A)  // 203.0.113.10

    /// An echo backend on the Redis tests' own loops (the shared test loops carry heavy tests).
    static func backend() throws -> EchoFleet {
        let b = EchoBackend(configuration: EchoBackendConfiguration(host: "127.0.0.1", ports: [0]), group: RedisTestLoops.group)
        return EchoFleet(backends: [b], ports: try b.start())
    }

    @Test("3 balancers, one client spread over all: accepted within 10% of what the limit allows")
    func multiInstanceAccuracy() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let backend = try Self.backend()
        let rate = 40.0, burst = 10
        let shared = try BalancerFleet.start(count: 3, backend: try BackendURL(parsing: "http://127.0.0.1:\(backend.ports[0])"),
                                             store: server.url, prefix: "acc:", rate: rate, burst: burst)
        let r = await drive(shared.handlers, client: Self.client, for: .seconds(3))
        // "What L allows": one ideal limiter fed exactly these arrivals (at most B + span x r).
        let allowed = Double(r.allowedByOneLimiter(rate: rate, burst: burst))
        let independent = r.allowedByIndependentLimiters(3, rate: rate, burst: burst)
        print("[shared throttle] 3 instances, rate \(rate)/s burst \(burst): \(r.accepted) accepted of \(r.total) in \(r.span) s; one limiter allows \(allowed), three independent ones \(independent); statuses \(r.statuses)")
        #expect(abs(Double(r.accepted) - allowed) <= 0.1 * allowed, "accepted \(r.accepted), allowed \(allowed)")
        if Double(r.total) < 2 * allowed {
            print("[shared throttle] WARNING: the machine let the test offer only \(r.total) requests; the limit was barely exercised")
        }
        #expect(Set(r.statuses.keys).isSubset(of: [200, 429]))
        #expect(shared.states == [.connected, .connected, .connected])
        for i in 0..<3 {
            let s = try shared.stats(i)
            #expect(s["kind"] as? String == "redis" && s["state"] as? String == "connected" && s["key_prefix"] as? String == "acc:")
            #expect((s["syncs"] as? Int ?? 0) > 0 && s["sync_failures"] as? Int == 0)
        }
        #expect(shared.balancers[0].prometheusText().contains("lb_throttle_store_up 1\n"))
        await shared.stop()

        // The same traffic without the store: every instance applies the limit alone (about 3x).
        let local = try BalancerFleet.start(count: 3, backend: try BackendURL(parsing: "http://127.0.0.1:\(backend.ports[0])"),
                                            store: nil, prefix: "acc:", rate: rate, burst: burst)
        let l = await drive(local.handlers, client: ClientAddress(ipv4: 0xCB00_710B), for: .seconds(3))
        let localOne = l.allowedByOneLimiter(rate: rate, burst: burst)
        let localThree = Double(l.allowedByIndependentLimiters(3, rate: rate, burst: burst))
        print("[shared throttle] same traffic, local tables only: \(l.accepted) accepted of \(l.total); one limiter allows \(localOne), three independent ones \(localThree)")
        // Without the store each instance limits alone: what three independent limiters allow.
        #expect(abs(Double(l.accepted) - localThree) <= 0.1 * localThree, "accepted \(l.accepted), three limiters allow \(localThree)")
        if Double(l.total) >= 2 * localThree { #expect(localThree > 2 * Double(localOne)) }
        #expect(try local.stats(0)["kind"] as? String == "local")
        await local.stop()
        await backend.stop()
    }

    @Test("Redis hung, stopped and restarted mid-run: no request fails or waits for it; shared limiting resumes")
    func redisFault() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let backend = try Self.backend()
        let rate = 40.0, burst = 10
        let fleet = try BalancerFleet.start(count: 3, backend: try BackendURL(parsing: "http://127.0.0.1:\(backend.ports[0])"),
                                            store: server.url, prefix: "fault:", rate: rate, burst: burst)
        var all: [TrafficResult] = []
        func phase(_ name: String, _ duration: Duration, until: @escaping @Sendable () -> Bool = { false }) async -> TrafficResult {
            let r = await drive(fleet.handlers, client: Self.client, for: duration, until: until)
            print("[shared throttle fault] \(name): \(r.accepted)/\(r.total) accepted in \(r.span) s, slowest \(r.maxLatencyMs) ms, states \(fleet.states.map { $0?.rawValue ?? "-" })")
            all.append(r)
            return r
        }
        let connected: @Sendable () -> Bool = { fleet.states == [.connected, .connected, .connected] }
        let fallback: @Sendable () -> Bool = { fleet.states == [.fallback, .fallback, .fallback] }

        _ = await phase("healthy", .seconds(1))
        #expect(connected())

        server.pause()  // hung: connections stay open, nothing is answered
        _ = await phase("redis hung (SIGSTOP)", .milliseconds(2000))
        #expect(fallback())
        #expect(try fleet.stats(0)["state"] as? String == "fallback")
        #expect(fleet.balancers[0].prometheusText().contains("lb_throttle_store_up 0\n"))
        server.resume()
        _ = await phase("redis resumed, until shared again", .seconds(5), until: connected)
        #expect(connected())

        await server.stop()
        _ = await phase("redis stopped", .seconds(1))
        #expect(fallback())
        try await server.restart()
        _ = await phase("redis restarted, until shared again", .seconds(5), until: connected)
        #expect(connected())

        let after = await phase("shared again", .milliseconds(2500))
        // The client enters this window already over its limit, so it gets between what one
        // limiter allows these arrivals minus the burst and what it allows them (each +-10%).
        let ceiling = Double(after.allowedByOneLimiter(rate: rate, burst: burst)), floor = ceiling - Double(burst)
        #expect(Double(after.accepted) >= 0.9 * floor && Double(after.accepted) <= 1.1 * ceiling,
                "accepted \(after.accepted), expected \(floor)...\(ceiling)")

        // No request failed or waited for Redis: every answer was the backend's 200 or a 429, and
        // none took anywhere near the store's 1 s command timeout that the hung Redis ran into.
        for r in all {
            #expect(Set(r.statuses.keys).isSubset(of: [200, 429]), "\(r.statuses)")
            #expect(r.maxLatencyMs < 500, "a request took \(r.maxLatencyMs) ms")
        }
        // Each instance logged each outage once, and each return once.
        for log in fleet.logs {
            let lines = log.all
            #expect(lines.filter { $0.hasPrefix("[THROTTLE]") && $0.contains("unavailable") }.count == 2, "\(lines)")
            #expect(lines.filter { $0.hasPrefix("[THROTTLE]") && $0.contains("is back:") }.count == 2, "\(lines)")
        }
        let s = try fleet.stats(1)
        #expect(s["state"] as? String == "connected" && s["fallbacks"] as? Int == 2)
        await fleet.stop()
        await backend.stop()
    }
}
