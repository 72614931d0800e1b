import Foundation
import Glibc
import Synchronization
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

/// Socket waits: one waiter per direction, each with its own deadline.
@Suite("Socket wait deadlines")
struct SocketWaitDeadlineTests {
    @Test("a read timing out does not time out a concurrent write on the same socket")
    func separateDeadlines() async throws {
        // A listener that never accepts: the kernel completes the handshake, nobody reads, so a
        // large write soon waits for the send buffer to drain.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 4)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let loop = TestLoops.group.loops[0]
        let socket = try await Socket.connect(to: try IPSocketAddress(host: "127.0.0.1", port: port), loop: loop,
                                              deadline: UpstreamClient.deadline(after: .seconds(2)))
        let writeEnded = Mutex<SocketError??>(nil)
        let writer = Task(executorPreference: loop) {
            let big = [UInt8](repeating: 1, count: 64 * 1024 * 1024)
            do throws(SocketError) {
                try await socket.write(big, deadline: UpstreamClient.deadline(after: .seconds(30)))
                writeEnded.withLock { $0 = .some(nil) }
            } catch {
                writeEnded.withLock { $0 = .some(error) }
            }
        }
        try await Task.sleep(for: .milliseconds(100))   // the write is waiting for the send buffer
        var buffer = InboundBuffer(capacity: 1024)
        do throws(SocketError) {
            _ = try await socket.read(into: &buffer, deadline: UpstreamClient.deadline(after: .milliseconds(50)))
            Issue.record("expected the read to time out")
        } catch {
            #expect(error == .timedOut)
        }
        try await Task.sleep(for: .milliseconds(100))
        // The read's deadline must not have ended the write.
        #expect(writeEnded.withLock { $0 } == nil)
        socket.close()
        _ = await writer.value
        #expect(writeEnded.withLock { $0 } != nil)
    }
}
