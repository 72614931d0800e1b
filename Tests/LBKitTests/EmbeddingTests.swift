import Dispatch
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting

/// A `TaskExecutor` that is not ours: jobs run on one Dispatch queue (as a host server's own
/// executor would).
final class QueueExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: the only state is an immutable serial queue, which is thread-safe.
    private let queue = DispatchQueue(label: "test-executor")
    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { unowned.runSynchronously(on: executor) }
    }
}

/// The balancer called the way an embedder calls it: no event loop of ours, from the global
/// executor or from a custom executor, with the client address in whatever form they have.
@Suite("Embedding: the balancer called from any executor", .timeLimit(.minutes(1)))
struct EmbeddingTests {
    static func post(_ body: String = #"{"msg":"embedded"}"#) -> LBRequest {
        LBRequest(head: RequestHead(method: "POST", target: "/api/items", headers: ["Host": "app.example", "Content-Type": "application/json"]),
                  body: Array(body.utf8))
    }

    static func port(of response: LBResponse) -> Int? {
        let text = String(decoding: response.body, as: UTF8.self)
        guard let r = text.range(of: "\"handled_by\":") else { return nil }
        return Int(text[r.upperBound...].prefix { $0.isNumber })
    }

    static func balancer(_ fleet: EchoFleet, logs: LogCapture = LogCapture(),
                         configure: (inout LoadBalancerConfiguration) -> Void = { _ in }) throws -> LoadBalancer {
        var config = LoadBalancerConfiguration()
        config.backends = fleet.urls
        config.healthInterval = .zero
        config.loopCount = 2
        configure(&config)
        return try LoadBalancer(configuration: config, log: logs.sink)   // owns its loops
    }

    /// Round robin, then failover after one backend stops, all from the calling executor.
    static func rotationAndFailover(_ fleet: EchoFleet, _ balancer: LoadBalancer) async -> (rotation: [Int?], afterStop: [Int]) {
        let handler = balancer.responder()
        let client = LBRequestContext(client: ClientAddress("203.0.113.9"))
        var rotation: [Int?] = []
        for _ in 0..<6 { rotation.append(port(of: await handler.handle(post(), context: client))) }
        await fleet.backends[1].shutdown(timeout: .milliseconds(200))
        var statuses: [Int] = []
        for _ in 0..<6 { statuses.append(await handler.handle(post(), context: client).status) }
        return (rotation, statuses)
    }

    @Test("from a plain Task on the global executor: strict round robin, then failover")
    func globalExecutor() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let balancer = try Self.balancer(fleet)
        let result = await Task.detached { await Self.rotationAndFailover(fleet, balancer) }.value
        let p = fleet.ports
        #expect(result.rotation == [p[0], p[1], p[2], p[0], p[1], p[2]])
        #expect(result.afterStop.allSatisfy { $0 == 200 }, "\(result.afterStop)")
        balancer.shutdown()
        try await balancer.run()
        await fleet.stop()
    }

    @Test("from a custom TaskExecutor: strict round robin, then failover")
    func customExecutor() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let balancer = try Self.balancer(fleet)
        let executor = QueueExecutor()
        let result = await Task(executorPreference: executor) { await Self.rotationAndFailover(fleet, balancer) }.value
        let p = fleet.ports
        #expect(result.rotation == [p[0], p[1], p[2], p[0], p[1], p[2]])
        #expect(result.afterStop.allSatisfy { $0 == 200 }, "\(result.afterStop)")
        balancer.shutdown()
        try await balancer.run()
        await fleet.stop()
    }

    @Test("on the balancer's own loops (eventLoopGroup as task executor): strict round robin, then failover; the exchange stays on the caller's loop")
    func onBalancerLoops() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let balancer = try Self.balancer(fleet)
        let group = balancer.eventLoopGroup
        #expect(group.currentLoop == nil)   // the test's own thread is not one of the loops
        let (result, onLoopAfter) = await withTaskExecutorPreference(group) { () async -> ((rotation: [Int?], afterStop: [Int]), Bool) in
            let result = await Self.rotationAndFailover(fleet, balancer)
            // Resumed by its upstream socket's loop and still running there: no hop back off it.
            return (result, group.currentLoop != nil)
        }
        let p = fleet.ports
        #expect(result.rotation == [p[0], p[1], p[2], p[0], p[1], p[2]])
        #expect(result.afterStop.allSatisfy { $0 == 200 }, "\(result.afterStop)")
        #expect(onLoopAfter)
        let loop = group.loops[1]
        let seen = await Task(executorPreference: loop) { group.currentLoop === loop }.value
        #expect(seen)
        balancer.shutdown()
        try await balancer.run()
        await fleet.stop()
    }

    @Test("per-client throttling by the address the caller passes (text or bytes); none = not throttled, said once")
    func perClientThrottle() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let logs = LogCapture()
        let balancer = try Self.balancer(fleet, logs: logs) {
            $0.rateLimit = 0.5
            $0.burst = 2
        }
        let handler = balancer.responder()
        let a = LBRequestContext(client: ClientAddress("198.51.100.7"))
        let sameA = LBRequestContext(client: ClientAddress(bytes: [198, 51, 100, 7]))
        let b = LBRequestContext(client: ClientAddress("2001:db8::42"))
        let statuses = await Task.detached { () -> [Int] in
            var s: [Int] = []
            s.append(await handler.handle(Self.post(), context: a).status)
            s.append(await handler.handle(Self.post(), context: sameA).status)
            s.append(await handler.handle(Self.post(), context: a).status)      // over A's burst
            s.append(await handler.handle(Self.post(), context: b).status)      // B is another client
            for _ in 0..<4 { s.append(await handler.handle(Self.post(), context: LBRequestContext(client: nil)).status) }
            return s
        }.value
        #expect(statuses == [200, 200, 429, 200, 200, 200, 200, 200])
        #expect(balancer.throttleMiddleware?.unidentifiedRequests == 4)
        #expect(logs.count(containing: "without a client address") == 1)
        balancer.shutdown()
        try await balancer.run()
        await fleet.stop()
    }

    @Test("a cancelled request aborts its upstream attempt and frees the connection")
    func cancellationAbortsUpstream() async throws {
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .seconds(10))
        let balancer = try Self.balancer(slow) { $0.attemptTimeout = .seconds(20) }
        let handler = balancer.responder()
        let request = Task.detached {
            await handler.handle(LBRequest(head: RequestHead(method: "GET", target: "/")), context: LBRequestContext(client: nil))
        }
        let sent = await eventually { balancer.cluster.snapshot()[0].inFlight == 1 }
        #expect(sent)
        request.cancel()
        let response = await request.value   // well before the backend's 10 s answer
        #expect(response.status == 502)
        let freed = await eventually { balancer.cluster.snapshot()[0].inFlight == 0 && balancer.endpoints[0].openConnectionCount == 0 }
        #expect(freed)
        balancer.shutdown()
        try await balancer.run()
        await slow.stop()
    }

    @Test("after run() returned, a request is answered 503 at once (the balancer's loops are gone)")
    func requestAfterStop() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let balancer = try Self.balancer(fleet)
        balancer.shutdown()
        try await balancer.run()
        #expect(balancer.isStopped)
        let r = await balancer.responder().handle(Self.post(), context: LBRequestContext(client: nil))
        #expect(r.status == 503)
        await fleet.stop()
    }

    @Test("a task that prefers a stopped loop still runs (on the global executor), its sockets closed")
    func stoppedLoopStillRunsJobs() async throws {
        let group = try LBEventLoopGroup(loopCount: 1, namePrefix: "stopped-test")
        let loop = group.loops[0]
        group.shutdown()
        let ran = await Task(executorPreference: loop) { 42 }.value
        #expect(ran == 42)
    }

    @Test("run() returns on shutdown() and on cancellation")
    func lifecycle() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let first = try Self.balancer(fleet) { $0.healthInterval = .milliseconds(50) }
        let running = Task { try await first.run() }
        first.shutdown()
        try await running.value

        let second = try Self.balancer(fleet) { $0.healthInterval = .milliseconds(50) }
        let cancelled = Task { try await second.run() }
        try await Task.sleep(for: .milliseconds(20))
        cancelled.cancel()
        try await cancelled.value
        await fleet.stop()
    }
}
