import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy

/// A request that is not replayable is never delivered twice (RFC 9112 9.3.1, RFC 9110 9.2.2),
/// whatever the state of the pooled connection it was written on.
@Suite("No duplicate delivery of non-replayable requests")
struct NoDuplicateDeliveryTests {
    /// Each connection answers its first request and closes on the second after reading it:
    /// exactly the keep-alive race (the backend has the request, we see EOF).
    static func readsThenCloses() -> ScriptedBackend {
        ScriptedBackend { _, n in n == 0 ? ScriptedBackend.ok("first") : nil }
    }

    @Test("client: a POST on a pooled connection that breaks is reported as sent, never re-sent")
    func clientNeverReplaysPost() async throws {
        let backend = Self.readsThenCloses()
        let group = TestLoops.group
        let client = UpstreamClient()
        let endpoint = UpstreamEndpoint(address: try IPSocketAddress(host: "127.0.0.1", port: backend.port), group: group)
        let post = UpstreamRequest(head: RequestHead(method: "POST", target: "/orders"), body: Array("{}".utf8))
        #expect(!post.mayReplay)
        let first = try await client.execute(post, to: endpoint, on: group.loops[0], timeout: .seconds(2))
        #expect(first.head.status == 200)
        do {
            _ = try await client.execute(post, to: endpoint, on: group.loops[0], timeout: .seconds(2))
            Issue.record("expected the broken pooled connection to fail the POST")
        } catch {
            #expect(error.requestSent)
        }
        #expect(backend.requests.load(ordering: .relaxed) == 2)   // delivered once each, never twice
        #expect(backend.connections.load(ordering: .relaxed) == 1)
        backend.stop()
    }

    @Test("client: a GET in the same situation is retried once on a fresh connection")
    func clientReplaysGet() async throws {
        let backend = Self.readsThenCloses()
        let group = TestLoops.group
        let client = UpstreamClient()
        let endpoint = UpstreamEndpoint(address: try IPSocketAddress(host: "127.0.0.1", port: backend.port), group: group)
        let get = UpstreamRequest(head: RequestHead(method: "GET", target: "/"))
        _ = try await client.execute(get, to: endpoint, on: group.loops[0], timeout: .seconds(2))
        let second = try await client.execute(get, to: endpoint, on: group.loops[0], timeout: .seconds(2))
        #expect(second.head.status == 200)
        #expect(backend.requests.load(ordering: .relaxed) == 3)
        backend.stop()
    }

    @Test("balancer: the POST reaches one backend once and the client gets 502, not a second delivery elsewhere")
    func balancerNeverReplaysPost() async throws {
        // Both backends break their pooled connection on its second request, so whichever one
        // the third POST lands on, it lands on a reused connection that breaks after reading it.
        let flaky = Self.readsThenCloses()
        let other = Self.readsThenCloses()
        let urls = [try BackendURL(parsing: "http://127.0.0.1:\(flaky.port)"), try BackendURL(parsing: "http://127.0.0.1:\(other.port)")]
        let lb = try TestBalancer.start(backends: urls) { $0.maxFails = 100 }
        let body = Array(#"{"n":1}"#.utf8)
        // Round robin: A, B, then A again on its pooled connection, which breaks after reading.
        // One client connection, so every exchange runs on the same loop and so the same pool.
        let statuses = try await offload { () -> [Int] in
            let conn = try RawHTTPClient(port: lb.port)
            var out: [Int] = []
            for _ in 0..<3 {
                try conn.send(RawHTTPClient.format(method: "POST", path: "/", body: body))
                out.append(try conn.readResponse().status)
            }
            return out
        }
        #expect(statuses == [200, 200, 502])
        // Three POSTs, three deliveries: the broken one was neither re-sent nor sent elsewhere.
        #expect(flaky.requests.load(ordering: .relaxed) + other.requests.load(ordering: .relaxed) == 3)
        await lb.stop(); flaky.stop(); other.stop()
    }
}

/// The retry and deadline rules, with instants instead of real time.
@Suite("AttemptPlan rules")
struct AttemptPlanTests {
    let t0 = MonotonicInstant(nanoseconds: 1_000_000_000)

    @Test("never-sent failures always move on, outside the budget; sent ones only when replayable")
    func retryRules() {
        var post = AttemptPlan(maxAttempts: 3, replayable: false, requestDeadline: t0 + .seconds(9), attemptTimeout: .seconds(3))
        post.started(0)
        do { let moved = post.retryAfterFailure(sent: false, timedOut: false); #expect(moved) }
        #expect(post.pendingRetry == .connect)
        post.started(1)
        do { let moved = post.retryAfterFailure(sent: true, timedOut: false); #expect(!moved) }
        do { let moved = post.retryAfterResponse(status: 503); #expect(!moved) }

        var get = AttemptPlan(maxAttempts: 2, replayable: true, requestDeadline: t0 + .seconds(9), attemptTimeout: .seconds(3))
        get.started(0)
        do { let moved = get.retryAfterFailure(sent: true, timedOut: true); #expect(moved) }
        #expect(get.pendingRetry == .timeout)
        get.started(1)
        #expect(!get.mayStartAttempt)
        do { let moved = get.retryAfterResponse(status: 502); #expect(!moved) }   // no attempts left
    }

    @Test("attempt deadline is the earlier of attempt timeout and request deadline; past it, refused")
    func deadlines() {
        var plan = AttemptPlan(maxAttempts: 3, replayable: true, requestDeadline: t0 + .milliseconds(4500), attemptTimeout: .seconds(3))
        #expect(plan.admit(now: t0, budget: { _ in true }) == .admitted(deadline: t0 + .seconds(3)))
        plan.started(0)
        _ = plan.retryAfterFailure(sent: true, timedOut: true)
        let later = t0 + .seconds(3)
        #expect(plan.admit(now: later, budget: { _ in true }) == .admitted(deadline: t0 + .milliseconds(4500)))
        #expect(plan.admit(now: t0 + .seconds(5), budget: { _ in true }) == .refusedByDeadline)
        #expect(plan.admit(now: later, budget: { _ in false }) == .refusedByBudget)
    }
}
