import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite("Hedged requests", .timeLimit(.minutes(1)))
struct HedgingTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    @Test("a GET stuck on a slow backend is hedged to a fast one and answered quickly; the slow attempt still reports its true latency")
    func getIsHedged() async throws {
        let fast = try EchoFleet.start(count: 1)
        // The slow backend answers after 3 s and the attempt timeout is longer still, so an answer
        // before 3 s can only come from the hedge (no wall-clock race with a loaded machine).
        let slowDelay = Duration.seconds(3)
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: slowDelay)
        let lb = try TestBalancer.start(backends: [slow.urls[0], fast.urls[0]]) {
            $0.hedgeAfter = .milliseconds(30)
            $0.attemptTimeout = .seconds(10)
            $0.hangDetection = HangDetection(factor: 0)   // hedging alone (a 600 ms stall would count as a hang)
        }
        for _ in 0..<4 {
            let start = ContinuousClock.now
            let r = try await rawRequest(port: lb.port, method: "GET")
            let elapsed = ContinuousClock.now - start
            #expect(r.status == 200)
            #expect(handledBy(r) == fast.ports[0])
            #expect(elapsed < slowDelay, "took \(elapsed)")
        }
        let stats = lb.balancer.cluster.retryStatistics()
        #expect(stats.granted[.hedge] ?? 0 >= 2)
        // The losing slow attempts finish in the background: successes with their real latency.
        let settled = await eventually(timeout: .seconds(15)) { lb.balancer.cluster.snapshot()[0].inFlight == 0 }
        #expect(settled)
        let slowStats = lb.balancer.cluster.snapshot()[0]
        #expect(slowStats.failures.total == 0)
        #expect(slowStats.latencyP50 >= 2500, "p50 \(slowStats.latencyP50) ms")
        await lb.stop(); await fast.stop(); await slow.stop()
    }

    @Test("a plain POST is never hedged: it waits for the backend it was sent to")
    func postIsNotHedged() async throws {
        let fast = try EchoFleet.start(count: 1)
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .milliseconds(300))
        let lb = try TestBalancer.start(backends: [slow.urls[0], fast.urls[0]]) {
            $0.hedgeAfter = .milliseconds(30)
            $0.attemptTimeout = .seconds(2)
        }
        let start = ContinuousClock.now
        let r = try await rawRequest(port: lb.port, method: "POST", body: body)
        #expect(r.status == 200)
        #expect(handledBy(r) == slow.ports[0])
        #expect(ContinuousClock.now - start >= .milliseconds(280))
        #expect(lb.balancer.cluster.retryStatistics().granted[.hedge] ?? 0 == 0)
        await lb.stop(); await fast.stop(); await slow.stop()
    }

    @Test("race rules: first good answer wins; a failure waits for the other; two failures decide")
    func raceRules() async {
        let ok = UpstreamResponse(head: ResponseHead(status: 200), body: [], reusedConnection: false)
        let bad = UpstreamResponse(head: ResponseHead(status: 503), body: [], reusedConnection: false)
        let race1 = HedgeRace()
        #expect(!race1.offer(.init(index: 0, start: .zero, result: .success(bad))))   // waits for the other
        #expect(race1.offer(.init(index: 1, start: .zero, result: .success(ok))))
        #expect(await race1.winner().index == 1)

        let race2 = HedgeRace()
        #expect(!race2.offer(.init(index: 0, start: .zero, result: .failure(UpstreamError(kind: .timedOut, requestSent: true)))))
        #expect(race2.offer(.init(index: 1, start: .zero, result: .success(bad))))     // both failed: the later decides
        #expect(await race2.winner().index == 1)
        #expect(!race2.offer(.init(index: 0, start: .zero, result: .success(ok))))    // decided: late offers lose
    }
}
