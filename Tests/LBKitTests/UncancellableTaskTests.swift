import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
import LBKitTesting

/// An upstream exchange skips its cancellation handler only in the task of one of our server's
/// connections, which nothing can cancel; from any other task (an embedder's, or a task a
/// handler starts) a cancelled request still aborts its exchange at once.
@Suite("Cancellation handler only where cancellation can happen", .timeLimit(.minutes(1)))
struct UncancellableTaskTests {
    @Test("a server connection's own task is recognised; a task it starts, a child task and a context without the mark are not")
    func marks() async throws {
        let seen = Mutex<[String: Bool]>([:])
        let server = HTTP1Server(configuration: .init(host: "127.0.0.1", port: 0), group: TestLoops.group,
                                 handler: ClosureHandler { _, context in
            let own = context.runsInUncancellableTask
            let started = await Task { context.runsInUncancellableTask }.value
            async let child = context.runsInUncancellableTask
            let inChild = await child
            let unmarked = LBRequestContext(client: nil).runsInUncancellableTask
            seen.withLock { $0 = ["own": own, "started": started, "child": inChild, "unmarked": unmarked] }
            return .json(status: 200, "{}")
        })
        let port = try server.start().port
        let response = try await rawRequest(port: port)
        #expect(response.status == 200)
        #expect(seen.withLock { $0 } == ["own": true, "started": false, "child": false, "unmarked": false])
        await server.shutdown(timeout: .milliseconds(200))
    }

    @Test("the task mark read from the runtime is the stdlib's current task, and differs between tasks")
    func markIsTheCurrentTask() async {
        func stdlibMark() -> Int? { withUnsafeCurrentTask { $0.map { unsafeBitCast($0, to: Int.self) } } }
        let here = LBRequestContext.currentTaskMark()
        #expect(here != nil && here == stdlibMark())
        let other = await Task.detached { (LBRequestContext.currentTaskMark(), stdlibMark()) }.value
        #expect(other.0 != nil && other.0 == other.1 && other.0 != here)
    }

    @Test("behind our server, a request a handler forwards from a task it then cancels is aborted at once")
    func cancelledTaskStillAborts() async throws {
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .seconds(10))
        var config = LoadBalancerConfiguration()
        config.backends = slow.urls
        config.healthInterval = .zero
        config.attemptTimeout = .seconds(20)
        let balancer = try LoadBalancer(configuration: config, log: LogCapture().sink)
        let responder = balancer.responder()
        let server = HTTP1Server(configuration: .init(host: "127.0.0.1", port: 0), group: TestLoops.group,
                                 handler: ClosureHandler { request, context in
            let forwarding = Task { await responder.handle(request, context: context) }
            let sent = await eventually { balancer.cluster.snapshot()[0].inFlight == 1 }
            forwarding.cancel()
            let answer = await forwarding.value
            return .json(status: 200, "{\"sent\":\(sent),\"status\":\(answer.status)}")
        })
        let port = try server.start().port
        // A POST: never hedged, so the one exchange runs in the task that is cancelled.
        let response = try await rawRequest(port: port, method: "POST", headers: [("Content-Type", "application/json")],
                                            body: Array(#"{"msg":"cancel me"}"#.utf8), timeoutMs: 15_000)
        // 502, not the backend's 200 ten seconds later: the cancelled task's exchange was aborted.
        #expect(String(decoding: response.body, as: UTF8.self) == "{\"sent\":true,\"status\":502}")
        await server.shutdown(timeout: .milliseconds(200))
        balancer.shutdown()
        try await balancer.run()
        await slow.stop()
    }
}
