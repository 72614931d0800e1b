import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting

/// The data path through the balancer: bodies stream both ways, upgrades become tunnels, and
/// framing follows RFC 9110/9112.
@Suite("Streaming, upgrades and framing through the balancer", .timeLimit(.minutes(1)))
struct StreamingTests {
    @Test("a large download streams through with its Content-Length, byte for byte")
    func largeDownload() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let n = 8 * 1024 * 1024 + 17
        let r = try await rawRequest(port: lb.port, path: "/_echo/bytes?n=\(n)", timeoutMs: 20_000)
        #expect(r.status == 200)
        #expect(r.header("Content-Length") == String(n))
        #expect(r.body.count == n)
        #expect(r.body.allSatisfy { $0 == UInt8(ascii: "a") })
        await lb.stop(); await fleet.stop()
    }

    @Test("a streamed upload over the buffering limit reaches the backend whole, without being buffered")
    func largeUpload() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let body = [UInt8](repeating: 7, count: 5 * 1024 * 1024 + 3)
        let r = try await rawRequest(port: lb.port, method: "POST", path: "/_echo/sink", body: body, timeoutMs: 20_000)
        #expect(r.status == 200)
        #expect(r.bodyText.contains("\"bytes\":\(body.count)"))
        #expect(lb.server.bufferedRequestBodyBytes == 0)
        await lb.stop(); await fleet.stop()
    }

    @Test("server-sent events: the first event reaches the client before the backend has finished")
    func firstByteBeforeTheEnd() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let port = lb.port
        let arrivals = try await offload { () -> [ContinuousClock.Instant] in
            let client = try RawHTTPClient(port: port, timeoutMs: 10_000)
            try client.send(RawHTTPClient.format(method: "GET", path: "/_echo/stream?chunks=3&interval_ms=1000"))
            let head = try client.readHeadOnly()
            guard head.status == 200, head.header("Transfer-Encoding") == "chunked" else { return [] }
            var times: [ContinuousClock.Instant] = []
            while let chunk = try client.readChunk() {
                if String(decoding: chunk, as: UTF8.self).hasPrefix("data:") { times.append(.now) }
            }
            return times
        }
        #expect(arrivals.count == 3)
        if arrivals.count == 3 {
            // Event 0 came at once; the backend was still 2 s from its last event (half of that
            // is the bound: a loaded machine may deliver event 0 late, never event 2 early).
            #expect(arrivals[2] - arrivals[0] >= .milliseconds(1000))
        }
        // Both latencies are tracked: to the head (what health judges) and to the last byte.
        let recorded = await eventually { lb.balancer.cluster.snapshot()[0].lastByteHistogram.count == 1 }
        #expect(recorded)
        let snap = lb.balancer.cluster.snapshot()[0]
        #expect(snap.lastByteHistogram.sum >= 1.5)
        #expect(snap.histogram.sum < snap.lastByteHistogram.sum)
        await lb.stop(); await fleet.stop()
    }

    @Test("a slow but progressing stream is not cut off by the attempt timeout (stall timeouts measure stalls)")
    func stallNotTotal() async throws {
        let fleet = try EchoFleet.start(count: 1)
        // 4 events 1 s apart: 3 s in all, beyond the 2 s attempt timeout; no stall reaches it.
        let lb = try TestBalancer.start(backends: fleet.urls) { $0.attemptTimeout = .seconds(2) }
        let r = try await rawRequest(port: lb.port, path: "/_echo/stream?chunks=4&interval_ms=1000", timeoutMs: 20_000)
        #expect(r.status == 200)
        #expect(r.bodyText.components(separatedBy: "data:").count - 1 == 4)
        await lb.stop(); await fleet.stop()
    }

    @Test("HEAD keeps the backend's Content-Length and carries no body")
    func headLength() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let get = try await rawRequest(port: lb.port, path: "/")
        let head = try await rawRequest(port: lb.port, method: "HEAD", path: "/")
        #expect(head.status == 200)
        #expect(head.header("Content-Length") == String(get.body.count))
        #expect(head.body.isEmpty)
        await lb.stop(); await fleet.stop()
    }

    @Test("CONNECT is refused with 501 and the connection is not taken as a tunnel")
    func connectRefused() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let lb = try TestBalancer.start(backends: fleet.urls)
        let r = try await offload {
            let c = try RawHTTPClient(port: lb.port)
            try c.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return try c.readResponse()
        }
        #expect(r.status == 501)
        #expect(r.header("Connection")?.lowercased() == "close")
        await lb.stop(); await fleet.stop()
    }

    @Test("a 101 to a request that did not ask to upgrade is a bad gateway, never relayed")
    func unexpected101() async throws {
        let backend = ScriptedBackend { _, _ in Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".utf8) }
        let lb = try TestBalancer.start(backends: [try BackendURL(parsing: "http://127.0.0.1:\(backend.port)")])
        let r = try await rawRequest(port: lb.port, method: "POST", body: Array("{}".utf8))
        #expect(r.status == 502)
        #expect(r.bodyText.contains("101"))
        await lb.stop(); backend.stop()
    }

    @Test("a transfer coding other than chunked is passed on, named, not silently stripped")
    func transferCodingKept() async throws {
        let backend = ScriptedBackend { _, _ in
            Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nGZ!\r\n0\r\n\r\n".utf8)
        }
        let lb = try TestBalancer.start(backends: [try BackendURL(parsing: "http://127.0.0.1:\(backend.port)")])
        let r = try await rawRequest(port: lb.port)
        #expect(r.status == 200)
        #expect(r.header("Transfer-Encoding")?.replacingOccurrences(of: " ", with: "") == "gzip,chunked")
        #expect(r.bodyText == "GZ!")
        await lb.stop(); backend.stop()
    }

    @Test("WebSocket: the upgrade is relayed and an echo round trip works through the tunnel")
    func webSocketEcho() async throws {
        let ws = WebSocketEchoBackend()
        let lb = try TestBalancer.start(backends: [try BackendURL(parsing: "http://127.0.0.1:\(ws.port)")])
        let port = lb.port
        let (status, accept, echoed, closeOpcode) = try await offload { () -> (Int, String?, String, UInt8) in
            let c = try RawHTTPClient(port: port, timeoutMs: 5000)
            let key = "dGhlIHNhbXBsZSBub25jZQ=="
            try c.send("GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n")
            let head = try c.readHeadOnly()
            try c.send(WebSocketEchoBackend.frame(opcode: 1, payload: Array("hello through lbserve".utf8), mask: [1, 2, 3, 4]))
            let h = try c.readBytes(2)
            let text = String(decoding: try c.readBytes(Int(h[1] & 0x7F)), as: UTF8.self)
            try c.send(WebSocketEchoBackend.frame(opcode: 8, payload: [], mask: [9, 9, 9, 9]))
            let close = try c.readBytes(2)
            return (head.status, head.header("Sec-WebSocket-Accept"), text, close[0] & 0x0F)
        }
        #expect(status == 101)
        #expect(accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")   // RFC 6455's own example
        #expect(echoed == "hello through lbserve")
        #expect(closeOpcode == 8)
        #expect(ws.upgrades.load(ordering: .relaxed) == 1)
        let counted = await eventually { lb.balancer.counters.tunnelsOpened.load(ordering: .relaxed) == 1 }
        #expect(counted)
        await lb.stop(); ws.stop()
    }

    @Test("the buffered-body budget: over it, 503 with Retry-After instead of more memory")
    func bodyBudget() async throws {
        var config = HTTP1ServerConfiguration(host: "127.0.0.1", port: 0)
        config.bufferedBodyBudget = 64 * 1024
        let server = HTTP1Server(configuration: config, group: TestLoops.group,
                                 handler: ClosureHandler { request, _ in LBResponse(status: 200, body: Array("\(request.body.count)".utf8)) })
        let port = try server.start().port
        let small = try await rawRequest(port: port, method: "POST", body: [UInt8](repeating: 1, count: 32 * 1024))
        #expect(small.status == 200)
        #expect(small.bodyText == "32768")
        // Announced, not yet sent: the budget is checked before buffering starts.
        let big = try await offload {
            let c = try RawHTTPClient(port: port)
            try c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
            return try c.readResponse()
        }
        #expect(big.status == 503)
        #expect(big.header("Retry-After") == "1")
        #expect(server.bufferedRequestBodyBytes == 0)
        await server.shutdown(timeout: .milliseconds(200))
    }
}
