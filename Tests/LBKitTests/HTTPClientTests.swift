import Foundation
import Glibc
import Synchronization
import Testing
@testable import LBKit

/// A blocking raw backend on its own thread whose per-connection behaviour a test scripts:
/// `script(connectionIndex, requestIndexOnConnection)` returns the bytes to answer, or nil to
/// close the connection without answering. An answer with neither Content-Length nor
/// Transfer-Encoding is followed by a close (read-until-close framing).
final class ScriptedBackend: @unchecked Sendable {
    // @unchecked: `listener` and `script` are immutable after init; counters are Atomics.
    let port: Int
    private let listener: Int32
    private let script: @Sendable (Int, Int) -> [UInt8]?
    let connections = Atomic<Int>(0)
    let requests = Atomic<Int>(0)

    init(script: @escaping @Sendable (Int, Int) -> [UInt8]?) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 16)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        listener = fd
        self.script = script
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            let index = connections.add(1, ordering: .relaxed).oldValue
            Thread.detachNewThread { [self] in serve(client, index) }
        }
    }

    private func serve(_ client: Int32, _ connection: Int) {
        defer { close(client) }
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var n = 0
        while true {
            while let r = got.firstRange(of: [13, 10, 13, 10]) {
                got.removeSubrange(0..<r.upperBound)
                requests.add(1, ordering: .relaxed)
                guard let answer = script(connection, n) else { return }
                n += 1
                _ = answer.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                // A response without Content-Length or chunked framing ends at close.
                let text = String(decoding: answer, as: UTF8.self).lowercased()
                if !text.contains("content-length:") && !text.contains("transfer-encoding:") { return }
            }
            let r = buf.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if r <= 0 { return }
            got += buf[0..<r]
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    static func ok(_ body: String, extra: String = "") -> [UInt8] {
        Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)".utf8)
    }
}

@Suite("HTTP client", .timeLimit(.minutes(1)))
struct HTTPClientTests {
    let group = TestLoops.group
    let client = HTTPClient()

    func endpoint(_ port: Int) throws -> HTTPEndpoint {
        HTTPEndpoint(address: try SocketAddress(host: "127.0.0.1", port: port), group: group)
    }

    func get(_ path: String = "/") -> HTTPClientRequest {
        HTTPClientRequest(head: HTTPRequestHead(method: "GET", target: path, headers: ["Host": "t"]))
    }

    @Test("a pooled connection the backend dropped is retried once on a fresh connection")
    func staleConnectionRetried() async throws {
        // Each connection answers its first request only; a second request on it is met with a close.
        let backend = ScriptedBackend { _, n in n == 0 ? ScriptedBackend.ok("fresh") : nil }
        let ep = try endpoint(backend.port)
        let loop = group.loops[0]
        let first = try await client.execute(get(), to: ep, on: loop, timeout: .seconds(2))
        #expect(first.head.status == 200 && !first.reusedConnection)
        let second = try await client.execute(get(), to: ep, on: loop, timeout: .seconds(2))
        #expect(second.head.status == 200)
        #expect(String(decoding: second.body, as: UTF8.self) == "fresh")
        #expect(ep.connectionsOpened == 2)
        #expect(backend.connections.load(ordering: .relaxed) == 2)
        backend.stop()
    }

    @Test("connect refused is reported as never sent")
    func refusedNeverSent() async throws {
        let backend = ScriptedBackend { _, _ in nil }
        let port = backend.port
        backend.stop()
        let ep = try endpoint(port)
        do {
            _ = try await client.execute(get(), to: ep, on: group.loops[0], timeout: .seconds(1))
            Issue.record("expected a failure")
        } catch {
            #expect(error.kind == .connectRefused)
            #expect(!error.requestSent)
        }
    }

    @Test("no answer before the deadline: timedOut, request sent")
    func timeout() async throws {
        let backend = ScriptedBackend { _, _ in
            Thread.sleep(forTimeInterval: 1)
            return ScriptedBackend.ok("late")
        }
        let ep = try endpoint(backend.port)
        let start = ContinuousClock.now
        do {
            _ = try await client.execute(get(), to: ep, on: group.loops[1], timeout: .milliseconds(150))
            Issue.record("expected a timeout")
        } catch {
            #expect(error.kind == .timedOut)
            #expect(error.requestSent)
        }
        #expect(ContinuousClock.now - start < .milliseconds(800))
        backend.stop()
    }

    @Test("chunked and read-until-close responses are de-framed")
    func framing() async throws {
        let chunked = ScriptedBackend { _, _ in
            Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\n".utf8)
        }
        let r1 = try await client.execute(get(), to: try endpoint(chunked.port), on: group.loops[0], timeout: .seconds(2))
        #expect(String(decoding: r1.body, as: UTF8.self) == "wikipedia")
        let untilClose = ScriptedBackend { _, n in n == 0 ? Array("HTTP/1.1 200 OK\r\n\r\nno length".utf8) : nil }
        // The backend closes after its answer (the script returns nil for the next read).
        let r2 = try await client.execute(HTTPClientRequest(head: HTTPRequestHead(method: "GET", target: "/", headers: ["Host": "t", "Connection": "close"])),
                                          to: try endpoint(untilClose.port), on: group.loops[0], timeout: .seconds(2))
        #expect(String(decoding: r2.body, as: UTF8.self) == "no length")
        chunked.stop()
        untilClose.stop()
    }

    @Test("a malformed response is an error, not a crash")
    func malformed() async throws {
        let backend = ScriptedBackend { _, _ in Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".utf8) }
        let ep = try endpoint(backend.port)
        do {
            _ = try await client.execute(get(), to: ep, on: group.loops[0], timeout: .seconds(2))
            Issue.record("expected malformed")
        } catch {
            if case .malformedResponse = error.kind {} else { Issue.record("got \(error.kind)") }
        }
        backend.stop()
    }
}
