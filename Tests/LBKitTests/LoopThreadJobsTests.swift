import Dispatch
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
import LBKitTesting

/// `LBEventLoopGroup.keepGlobalJobsOnLoopThreads()`: a task with no executor preference stays on
/// the loop whose thread starts or resumes it, as a task that prefers the loop would, and runs on
/// the global executor otherwise. lbserve installs it at start-up; this suite installs it in the
/// test process too (it is process-wide), so the in-process servers of the other suites run
/// their LBKit-only chains the way lbserve does from then on.
@Suite("Global jobs from loop threads stay on their loop", .timeLimit(.minutes(1)))
struct LoopThreadJobsTests {
    /// Where an unpreferred task started on `loop`'s thread runs: at its start, after a wait
    /// resumed from the loop's thread, after a wait resumed from a thread of the global pool.
    private func placements(on loop: LBEventLoop) async -> [String] {
        await withCheckedContinuation { (done: CheckedContinuation<[String], Never>) in
            loop.execute {
                Task {   // unstructured, started on the loop's thread: no executor preference
                    func here() -> String {
                        guard let current = LBEventLoop.current else { return "pool" }
                        return current === loop ? "loop" : "other loop"
                    }
                    var seen = [here()]
                    await withCheckedContinuation { (resumed: CheckedContinuation<Void, Never>) in
                        loop.execute { resumed.resume() }
                    }
                    seen.append(here())
                    await withCheckedContinuation { (resumed: CheckedContinuation<Void, Never>) in
                        DispatchQueue.global().async { resumed.resume() }
                    }
                    seen.append(here())
                    done.resume(returning: seen)
                }
            }
        }
    }

    @Test("installed: a task started or resumed on a loop's thread runs there; resumed elsewhere, on the pool")
    func staysOnTheLoop() async {
        #expect(LBEventLoopGroup.keepGlobalJobsOnLoopThreads())
        #expect(LBEventLoopGroup.keepGlobalJobsOnLoopThreads(), "installing twice is harmless")
        #expect(LBEventLoop.keepsGlobalJobsOnLoopThreads)
        for loop in TestLoops.group.loops {
            #expect(await placements(on: loop) == ["loop", "loop", "pool"])
        }
    }

    @Test("embedded: a task on the global pool that calls the balancer goes on, after the answer, on the loop that read it")
    func embeddedCallerContinuesOnTheLoop() async throws {
        let fleet = try EchoFleet.start(count: 1)
        var config = LoadBalancerConfiguration()
        config.backends = fleet.urls
        config.healthInterval = .zero
        config.loopCount = 2
        let balancer = try LoadBalancer(configuration: config)   // owns its loops, as when embedded
        #expect(LBEventLoop.keepsGlobalJobsOnLoopThreads, "keepsResumedTasksOnLoops is on by default")
        let placement = await Task.detached { () -> (before: Bool, status: Int, after: Bool) in
            let before = LBEventLoop.current == nil
            let response = await balancer.responder().handle(
                LBRequest(head: RequestHead(method: "GET", target: "/x", headers: HeaderFields())),
                context: LBRequestContext(client: nil))
            let after = LBEventLoop.current.map { loop in balancer.eventLoopGroup.loops.contains { $0 === loop } } ?? false
            return (before, response.status, after)
        }.value
        #expect(placement.before, "the caller starts on the global pool")
        #expect(placement.status == 200)
        #expect(placement.after, "after the backend answered, the caller runs on one of the balancer's loops")
        balancer.shutdown()
        try await balancer.run()
        await fleet.stop()
    }

    @Test("our server starts connections without a preference only when every step of its chain is LBKit's own")
    func serverChoosesByChain() throws {
        var config = LoadBalancerConfiguration()
        config.backends = [try BackendURL(parsing: "http://127.0.0.1:9")]
        config.healthInterval = .zero
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, log: LogCapture().sink)
        struct Passing: LBMiddleware {
            func handle(_ request: LBRequest, context: LBRequestContext,
                        next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
                await next(request, context)
            }
        }
        func stays(_ handler: any HTTPHandler) -> Bool {
            HTTP1Server(configuration: .init(host: "127.0.0.1", port: 0), group: TestLoops.group, handler: handler)
                .handlerStaysOnCallerExecutor
        }
        #expect(stays(balancer))
        #expect(stays(balancer.responder(admin: true)))
        #expect(!stays(balancer.responder(middlewares: [Passing()])), "an embedder's middleware is a concurrent function")
        #expect(!stays(ClosureHandler { _, _ in .json(status: 200, "{}") }))
    }
}
