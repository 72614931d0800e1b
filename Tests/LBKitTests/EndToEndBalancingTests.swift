import Foundation
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// End-to-end: real echo servers and the balancer on ephemeral loopback ports, driven by a raw
/// socket client that does not share code with LBKit's HTTP layer.
@Suite("End to end: balancing", .timeLimit(.minutes(2)))
struct EndToEndBalancingTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    @Test("sequential requests rotate strictly over three backends")
    func rotationOrder() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let lb = try TestBalancer.start(backends: fleet.urls)
        var seen: [Int] = []
        for _ in 0..<6 {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            #expect(r.status == 200)
            #expect(r.header("X-Backend") == "http://127.0.0.1:\(handledBy(r) ?? -1)")
            seen.append(handledBy(r) ?? -1)
        }
        #expect(seen == fleet.ports + fleet.ports)
        await lb.stop(); await fleet.stop()
    }

    @Test("a 1 MiB JSON body makes the round trip intact")
    func largeBody() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let filler = String(repeating: "x", count: 1 << 20)
        let big = Array("{\"data\":\"\(filler)\"}".utf8)
        let r = try await rawRequest(port: lb.port, method: "POST", body: big, timeoutMs: 10_000)
        #expect(r.status == 200)
        let expected = Array("{\"data\":\"\(filler)\",\"handled_by\":\(fleet.ports[0])}".utf8)
        #expect(r.body.count == expected.count)
        #expect(r.body == expected)
        await lb.stop(); await fleet.stop()
    }

    @Test("keep-alive: one client connection, pooled upstream connections are reused")
    func keepAliveReuse() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let port = lb.port
        let statuses = try await offload { () -> [Int] in
            let client = try RawHTTPClient(port: port)
            var statuses: [Int] = []
            for _ in 0..<20 {
                try client.send(RawHTTPClient.format(method: "POST", path: "/", body: Array(#"{"a":1}"#.utf8)))
                statuses.append(try client.readResponse().status)
            }
            return statuses
        }
        #expect(statuses == Array(repeating: 200, count: 20))
        // 20 sequential requests over 2 backends: each backend saw one upstream connection, or
        // two when the client's next request arrived before the first connection was back in
        // the pool (the response is relayed before the exchange releases its connection).
        let opened = lb.balancer.endpoints.map(\.connectionsOpened)
        #expect(opened.allSatisfy { $0 >= 1 && $0 <= 2 }, "\(opened)")
        await lb.stop(); await fleet.stop()
    }

    @Test("a chunked request body is de-chunked and forwarded")
    func chunkedRequest() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let port = lb.port
        let r = try await offload { () -> RawHTTPClient.Response in
            let client = try RawHTTPClient(port: port)
            try client.send("POST /items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
            try client.send("5\r\n{\"a\":\r\n")
            try client.send("3;ext=1\r\n\"b\"\r\n1\r\n}\r\n0\r\n\r\n")
            return try client.readResponse()
        }
        #expect(r.status == 200)
        #expect(r.bodyText == "{\"a\":\"b\",\"handled_by\":\(fleet.ports[0])}")
        await lb.stop(); await fleet.stop()
    }

    @Test("a chunked backend response reaches the client complete")
    func chunkedResponse() async throws {
        var raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        for chunk in ["{\"part\":", "\"one\",", "\"n\":2}"] { raw += String(chunk.utf8.count, radix: 16) + "\r\n" + chunk + "\r\n" }
        raw += "0\r\n\r\n"
        let bytes = Array(raw.utf8)
        let backend = ScriptedBackend { _, _ in bytes }  // LBKit's server never sends chunked bodies
        let lb = try TestBalancer.start(backends: [try BackendURL(parsing: "http://127.0.0.1:\(backend.port)")])
        let r = try await rawRequest(port: lb.port, path: "/chunked")
        #expect(r.status == 200)
        #expect(r.bodyText == "{\"part\":\"one\",\"n\":2}")
        #expect(r.header("Content-Length") == "20")
        await lb.stop()
        backend.stop()
    }

    @Test("200 requests from 16 concurrent tasks: all 200, even spread")
    func concurrentSpread() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let port = lb.port
        let results = try await withThrowingTaskGroup(of: [(Int, Int?)].self) { group in
            for task in 0..<16 {
                let n = 200 / 16 + (task < 200 % 16 ? 1 : 0)
                group.addTask {
                    try await offload { () -> [(Int, Int?)] in
                        let client = try RawHTTPClient(port: port)
                        var out: [(Int, Int?)] = []
                        for _ in 0..<n {
                            try client.send(RawHTTPClient.format(method: "POST", path: "/", body: Array(#"{"k":"v"}"#.utf8)))
                            let r = try client.readResponse()
                            out.append((r.status, handledBy(r)))
                        }
                        return out
                    }
                }
            }
            var all: [(Int, Int?)] = []
            for try await part in group { all += part }
            return all
        }
        var perBackend: [Int: Int] = [:]
        for (_, backend) in results { if let backend { perBackend[backend, default: 0] += 1 } }
        #expect(results.count == 200)
        #expect(results.allSatisfy { $0.0 == 200 })
        #expect(perBackend.values.reduce(0, +) == 200)
        for port in fleet.ports {
            let c = perBackend[port] ?? 0
            #expect(c >= 66 && c <= 67, "backend \(port) got \(c) of 200")
        }
        await lb.stop(); await fleet.stop()
    }

    @Test("a killed backend never surfaces as a client error while others are up")
    func killedBackend() async throws {
        let fleet = try EchoFleet.start(count: 3)
        let lb = try TestBalancer.start(backends: fleet.urls)
        for _ in 0..<3 { #expect(try await rawRequest(port: lb.port, method: "POST", body: body).status == 200) }
        await fleet.backends[1].shutdown(timeout: .milliseconds(100))
        let hold = try PortHolder(port: fleet.ports[1])  // stays down; no parallel test can take the port
        defer { hold.release() }
        var served: Set<Int> = []
        for _ in 0..<30 {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            #expect(r.status == 200)
            if let p = handledBy(r) { served.insert(p) }
        }
        #expect(served == [fleet.ports[0], fleet.ports[2]])
        await lb.stop(); await fleet.stop()
    }

    @Test("every backend refusing: 502 JSON naming the cause, quickly")
    func allRefused() async throws {
        let dead = [try PortHolder(), try PortHolder()]  // bound, not listening: connects are refused
        // A 10 s connect timeout: "quickly" below then rules out waiting for any timeout.
        let lb = try TestBalancer.start(backends: dead.map(\.url)) { $0.connectTimeout = .seconds(10) }
        let start = ContinuousClock.now
        let r = try await rawRequest(port: lb.port, method: "POST", body: body)
        #expect(r.status == 502)
        #expect(r.header("Content-Type") == "application/json")
        #expect(r.bodyText.contains("connection refused"))
        #expect(ContinuousClock.now - start < .seconds(5))
        await lb.stop()
    }

    @Test("hop-by-hop headers are dropped, X-Forwarded-For and -Proto added")
    func forwardingHeaders() async throws {
        let seen = Mutex<HeaderFields?>(nil)
        let group = TestLoops.group
        let backend = HTTP1Server(configuration: .init(host: "127.0.0.1", port: 0), group: group,
                                 handler: ClosureHandler { request, _ in
                                     seen.withLock { $0 = request.headers }
                                     return .json(status: 200, "{}")
                                 })
        let address = try backend.start()
        let lb = try TestBalancer.start(backends: [try BackendURL(parsing: "http://127.0.0.1:\(address.port)")])
        let r = try await rawRequest(port: lb.port, headers: [("Connection", "X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"),
                                                              ("X-Forwarded-For", "198.51.100.9"), ("X-Custom", "kept")])
        #expect(r.status == 200)
        let headers = try #require(seen.withLock { $0 })
        #expect(headers.first(name: "X-Secret") == nil)
        #expect(headers.first(name: "Keep-Alive") == nil)
        #expect(headers.first(name: "X-Custom") == "kept")
        #expect(headers.first(name: "X-Forwarded-For") == "198.51.100.9, 127.0.0.1")
        #expect(headers.first(name: "X-Forwarded-Proto") == "http")
        await lb.stop()
        await backend.shutdown(timeout: .milliseconds(200))
    }

    @Test("reserved endpoint /_lb/health answers JSON")
    func lbHealth() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let r = try await rawRequest(port: lb.port, path: "/_lb/health")
        #expect(r.status == 200)
        #expect(r.bodyText.contains("\"status\":\"ok\""))
        #expect(r.bodyText.contains("\"eligible\":2"))
        await lb.stop(); await fleet.stop()
    }
}
