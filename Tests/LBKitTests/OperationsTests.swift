import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite("Operations: drain and reload", .timeLimit(.minutes(2)))
struct OperationsTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    @Test("drain stops new traffic to a backend while its in-flight request completes; undrain restores it")
    func drainAndUndrain() async throws {
        // A 2 s answer: the in-flight window the test observes is wide enough for a loaded machine
        // (at 300 ms, a stalled parallel suite could miss it entirely).
        let slow = try EchoFleet.start(count: 1, mode: .slow, delay: .seconds(2))
        let fast = try EchoFleet.start(count: 1)
        let lb = try TestBalancer.start(backends: [slow.urls[0], fast.urls[0]]) { $0.attemptTimeout = .seconds(10) }
        let port = lb.port
        // The first request goes to the slow backend (rotation order) and is in flight while we drain it.
        let inFlight = Task { try await rawRequest(port: port, method: "POST", body: body) }
        let started = await eventually(timeout: .seconds(2)) { lb.balancer.cluster.snapshot()[0].inFlight == 1 }
        #expect(started)
        let drained = try await rawRequest(port: port, method: "POST", path: "/_lb/backends/drain?url=http%3A%2F%2F127.0.0.1%3A\(slow.ports[0])")
        #expect(drained.status == 200)
        #expect(drained.bodyText.contains("\"draining\":true"))
        let first = try await inFlight.value
        #expect(first.status == 200)
        #expect(handledBy(first) == slow.ports[0])
        for _ in 0..<6 {
            let r = try await rawRequest(port: port, method: "POST", body: body)
            #expect(handledBy(r) == fast.ports[0])
        }
        let stats = try await rawRequest(port: port, path: "/_lb/stats")
        #expect(stats.bodyText.contains("\"state\":\"draining\""))
        let undrained = try await rawRequest(port: port, method: "POST", path: "/_lb/backends/undrain?url=http://127.0.0.1:\(slow.ports[0])")
        #expect(undrained.status == 200)
        #expect(lb.balancer.cluster.snapshot()[0].draining == false)
        await lb.stop(); await slow.stop(); await fast.stop()
    }

    @Test("drain from a non-loopback peer: proxied like any path without the admin token, allowed with it")
    func drainAuthorisation() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let lb = try TestBalancer.start(backends: fleet.urls) { $0.adminToken = "s3cret-token" }
        let remote = LBRequestContext(peer: try IPSocketAddress(host: "192.0.2.10", port: 40000), localPort: lb.port,
                                    eventLoop: TestLoops.group.loops[0])
        var head = RequestHead(method: "POST", target: "/_lb/backends/drain?url=http://127.0.0.1:\(fleet.ports[0])", headers: ["Host": "x"])
        // Not an admin client: the admin surface does not exist for it; the request is proxied.
        let refused = await lb.balancer.responder(admin: true).handle(LBRequest(head: head), context: remote)
        #expect(refused.head.headers.first(name: "X-Backend") != nil)
        head.headers.add(name: "X-Admin-Token", value: "wrong-token!")
        #expect(await lb.balancer.responder(admin: true).handle(LBRequest(head: head), context: remote).head.headers.first(name: "X-Backend") != nil)
        #expect(lb.balancer.cluster.snapshot().allSatisfy { !$0.draining })
        head.headers.replaceOrAdd(name: "X-Admin-Token", value: "s3cret-token")
        #expect(await lb.balancer.responder(admin: true).handle(LBRequest(head: head), context: remote).status == 200)
        let unknown = RequestHead(method: "POST", target: "/_lb/backends/drain?url=http://127.0.0.1:1", headers: ["Host": "x"])
        let local = LBRequestContext(peer: try IPSocketAddress(host: "127.0.0.1", port: 40000), localPort: lb.port, eventLoop: TestLoops.group.loops[0])
        #expect(await lb.balancer.responder(admin: true).handle(LBRequest(head: unknown), context: local).status == 404)
        await lb.stop(); await fleet.stop()
    }

    @Test("drain cannot be hijacked through a trusted local proxy: the forwarded client is judged, not the proxy")
    func drainThroughTrustedProxy() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let loopback = try #require(CIDRRange("127.0.0.1/32"))
        let lb = try TestBalancer.start(backends: fleet.urls) { $0.trustedProxies = [loopback] }
        let proxy = LBRequestContext(peer: try IPSocketAddress(host: "127.0.0.1", port: 40000), localPort: lb.port)
        let relayed = RequestHead(method: "POST", target: "/_lb/backends/drain?url=http://127.0.0.1:\(fleet.ports[0])",
                                  headers: ["Host": "x", "X-Forwarded-For": "203.0.113.9"])
        // Not an admin client: the admin surface does not exist for it, the request is proxied.
        let answer = await lb.balancer.responder(admin: true).handle(LBRequest(head: relayed), context: proxy)
        #expect(answer.head.headers.first(name: "X-Backend") != nil)
        #expect(lb.balancer.cluster.snapshot()[0].draining == false)
        // The proxy's own request (no forwarded client) is a local one.
        let own = RequestHead(method: "POST", target: "/_lb/backends/drain?url=http://127.0.0.1:\(fleet.ports[0])", headers: ["Host": "x"])
        #expect(await lb.balancer.responder(admin: true).handle(LBRequest(head: own), context: proxy).status == 200)
        await lb.stop(); await fleet.stop()
    }

    @Test("X-Forwarded-Proto is set from the connection; a client cannot claim https unless it is a trusted proxy")
    func forwardedProto() {
        let plain = ForwardingHeaders.upstreamHead(for: RequestHead(method: "GET", target: "/", headers: ["X-Forwarded-Proto": "https"]),
                                                   client: ClientAddress("198.51.100.1"), peerIsTrustedProxy: false)
        #expect(plain.headers["X-Forwarded-Proto"] == ["http"])
        let trusted = ForwardingHeaders.upstreamHead(for: RequestHead(method: "GET", target: "/", headers: ["X-Forwarded-Proto": "https"]),
                                                     client: ClientAddress("10.0.0.1"), peerIsTrustedProxy: true)
        #expect(trusted.headers["X-Forwarded-Proto"] == ["https"])
    }

    @Test("more backends than a request can track are refused at configuration, not silently mis-tracked")
    func tooManyBackends() throws {
        var config = LoadBalancerConfiguration()
        config.backends = try (0..<257).map { try BackendURL(parsing: "http://127.0.0.1:\(20000 + $0)") }
        config.healthInterval = .zero
        #expect(throws: LoadBalancerError.self) { try LoadBalancer(configuration: config, group: TestLoops.group) }
    }

    @Test("reload adds and removes a backend under concurrent load with zero failed requests")
    func reloadUnderLoad() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let log = LogCapture()
        // No slow start: the backend that joins must get its full share in the six requests below.
        let lb = try TestBalancer.start(backends: [fleet.urls[0], fleet.urls[1]], log: log) { $0.slowStart = .zero }
        let port = lb.port
        let results = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try await offload { () -> [Int] in
                        let client = try RawHTTPClient(port: port)
                        var statuses: [Int] = []
                        for _ in 0..<150 {
                            try client.send(RawHTTPClient.format(method: "POST", path: "/", body: Array(#"{"k":1}"#.utf8)))
                            statuses.append(try client.readResponse().status)
                        }
                        return statuses
                    }
                }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(30))
                try lb.balancer.reload(backends: [fleet.urls[0], fleet.urls[2]])
                return []
            }
            var all: [Int] = []
            for try await part in group { all += part }
            return all
        }
        #expect(results.count == 600)
        #expect(results.allSatisfy { $0 == 200 })
        #expect(log.all.contains { $0.contains("[CONFIG] reloaded") && $0.contains("removed (draining) http://127.0.0.1:\(fleet.ports[1])") })
        var seen: Set<Int> = []
        for _ in 0..<6 {
            if let p = handledBy(try await rawRequest(port: port, method: "POST", body: body)) { seen.insert(p) }
        }
        #expect(seen == [fleet.ports[0], fleet.ports[2]])
        await lb.stop(); await fleet.stop()
    }

    @Test("reload keeps the health state of unchanged backends")
    func reloadKeepsState() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let lb = try TestBalancer.start(backends: fleet.urls)
        await fleet.backends[1].shutdown(timeout: .milliseconds(100))
        let hold = try PortHolder(port: fleet.ports[1])  // stays down; no parallel test can take the port
        defer { hold.release() }
        for _ in 0..<8 { _ = try await rawRequest(port: lb.port, method: "POST", body: body) }
        #expect(lb.balancer.cluster.snapshot()[1].state == .ejected)
        let before = lb.balancer.cluster.snapshot()[0].requests
        let extra = try EchoFleet.start(count: 1)
        try lb.balancer.reload(backends: [fleet.urls[1], fleet.urls[0], extra.urls[0]], weights: [1, 1, 1])
        let after = lb.balancer.cluster.snapshot()
        #expect(after[0].url == fleet.urls[1].description && after[0].state == .ejected)
        #expect(after[1].requests == before)
        #expect(after[2].state == .healthy && after[2].requests == 0)
        // A backend that joins a running balancer starts in slow start; the others do not.
        #expect(after[2].stateName == .warming && after[0].stateName != .warming)
        await lb.stop(); await fleet.stop(); await extra.stop()
    }
}
