import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// Regression: data and FIN arriving in one epoll edge. A short read used to mark the socket
/// drained, so the next read waited for an edge that never came and the EOF was only noticed
/// at the idle timeout (server) or the response deadline (client, read-until-close bodies).
@Suite("Half-close and EOF delivery", .timeLimit(.minutes(1)))
struct HalfCloseTests {
    @Test("request then half-close: response, then the server closes promptly", arguments: 0..<5)
    func serverSeesEOF(round: Int) async throws {
        var config = HTTP1ServerConfiguration(host: "127.0.0.1", port: 0)
        config.idleTimeout = .seconds(30)
        let server = HTTP1Server(configuration: config, group: TestLoops.group,
                                handler: ClosureHandler { _, _ in .json(status: 200, #"{"ok":true}"#) })
        let port = try server.start().port
        let start = ContinuousClock.now
        let all = try await offload { () -> [UInt8] in
            let client = try RawHTTPClient(port: port, timeoutMs: 3000)
            // Request and FIN back to back so they often share one edge.
            try client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            shutdown(client.fd, Int32(SHUT_WR))
            return try client.readToEnd()
        }
        let text = String(decoding: all, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK"))
        #expect(text.hasSuffix(#"{"ok":true}"#))
        #expect(ContinuousClock.now - start < .seconds(2))
        await server.shutdown(timeout: .milliseconds(200))
    }

    @Test("read-until-close response bodies end at EOF, repeatedly", arguments: 0..<10)
    func clientSeesEOF(round: Int) async throws {
        let backend = ScriptedBackend { _, _ in Array("HTTP/1.1 200 OK\r\n\r\nuntil close \(round)".utf8) }
        let endpoint = UpstreamEndpoint(address: try IPSocketAddress(host: "127.0.0.1", port: backend.port), group: TestLoops.group)
        let response = try await UpstreamClient().execute(
            UpstreamRequest(head: RequestHead(method: "GET", target: "/", headers: ["Host": "t"])),
            to: endpoint, on: TestLoops.group.loops[round % 2], timeout: .seconds(2))
        #expect(String(decoding: response.body, as: UTF8.self) == "until close \(round)")
        backend.stop()
    }
}

@Suite("Pipelining fairness", .timeLimit(.minutes(1)))
struct PipeliningFairnessTests {
    @Test("200 pipelined requests in one write are all answered, in order")
    func manyPipelined() async throws {
        let server = HTTP1Server(configuration: .init(host: "127.0.0.1", port: 0), group: TestLoops.group,
                                handler: ClosureHandler { request, _ in .json(status: 200, "{\"t\":\"\(request.target)\"}") })
        let port = try server.start().port
        let targets = try await offload { () -> [String] in
            let client = try RawHTTPClient(port: port)
            var batch: [UInt8] = []
            for i in 0..<200 { batch += Array("GET /\(i) HTTP/1.1\r\nHost: x\r\n\r\n".utf8) }
            try client.send(batch)
            return try (0..<200).map { _ in try client.readResponse().bodyText }
        }
        #expect(targets == (0..<200).map { "{\"t\":\"/\($0)\"}" })
        await server.shutdown(timeout: .milliseconds(200))
    }
}
