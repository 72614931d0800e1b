import Foundation
import Glibc
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// Conformance of our HTTP/1.1 server (``HTTP1Server``) against raw bytes on a socket: keep-alive,
/// pipelining, HTTP/1.0, 100-continue, limits, smuggling defences, timeouts, robustness, graceful
/// shutdown and HEAD. Each test runs an in-process server on an ephemeral loopback port.
@Suite("HTTP server conformance", .timeLimit(.minutes(2)))
struct HTTPServerConformanceTests {

    // MARK: Pipelining and keep-alive

    @Test("pipelining: three requests in one send get three responses in order")
    func pipelining() async throws {
        try await withConformanceServer { s in
            let port = s.port
            let requests = RawHTTPClient.format(method: "GET", path: "/first")
                + RawHTTPClient.format(method: "POST", path: "/second", body: Array("payload-2".utf8))
                + RawHTTPClient.format(method: "GET", path: "/third")
            let responses = try await offload { () -> [RawHTTPClient.Response] in
                let client = try RawHTTPClient(port: port)
                try client.send(requests)
                return try (0..<3).map { _ in try client.readResponse() }
            }
            #expect(responses.map(\.status) == [200, 200, 200])
            #expect(responses.map(\.bodyText) == ["GET /first", "POST /second payload-2", "GET /third"])
            #expect(s.calls.value == 3)
        }
    }

    @Test("HTTP/1.0 without keep-alive: one response, then the server closes")
    func http10Close() async throws {
        try await withConformanceServer { s in
            let port = s.port
            let raw = try await offload { () -> [UInt8] in
                let client = try RawHTTPClient(port: port, timeoutMs: 3000)
                try client.send("GET /old HTTP/1.0\r\n\r\n")
                return try client.readToEnd()  // throws .timeout if the server keeps the connection open
            }
            let text = String(decoding: raw, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 200 "))
            #expect(text.lowercased().contains("\r\nconnection: close\r\n"))
            #expect(text.hasSuffix("\r\n\r\nGET /old"))
        }
    }

    @Test("HTTP/1.0 with Connection: keep-alive: response says keep-alive and a second request works")
    func http10KeepAlive() async throws {
        try await withConformanceServer { s in
            let port = s.port
            let (first, second) = try await offload { () -> (RawHTTPClient.Response, RawHTTPClient.Response) in
                let client = try RawHTTPClient(port: port)
                try client.send("GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let first = try client.readResponse()
                try client.send("GET /two HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                return (first, try client.readResponse())
            }
            #expect(first.status == 200)
            #expect(first.header("Connection")?.lowercased() == "keep-alive")
            #expect(first.bodyText == "GET /one")
            #expect(second.status == 200)
            #expect(second.bodyText == "GET /two")
        }
    }

    // MARK: Expect: 100-continue

    @Test("Expect: 100-continue: interim 100 before the body, then 200")
    func expectContinue() async throws {
        try await withConformanceServer { s in
            let port = s.port
            let (interim, final) = try await offload { () -> (String, RawHTTPClient.Response) in
                let client = try RawHTTPClient(port: port, timeoutMs: 3000)
                try client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
                let interim = try client.receiveExactly(25)  // "HTTP/1.1 100 Continue\r\n\r\n"
                try client.send("hello")
                return (String(decoding: interim, as: UTF8.self), try client.readResponse())
            }
            #expect(interim == "HTTP/1.1 100 Continue\r\n\r\n")
            #expect(final.status == 200)
            #expect(final.bodyText == "POST /upload hello")
        }
    }

    @Test("Expect: 100-continue from an HTTP/1.0 client is ignored: no interim 100 (RFC 9110 10.1.1)")
    func expectContinueHTTP10Ignored() async throws {
        try await withConformanceServer { s in
            let port = s.port
            let (early, final) = try await offload { () -> ([UInt8], RawHTTPClient.Response) in
                let client = try RawHTTPClient(port: port, timeoutMs: 500)
                try client.send("POST /upload HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
                // An HTTP/1.0 client would take a 100 for the final response; nothing may arrive yet.
                let early = (try? client.receiveExactly(1)) ?? []
                client.setReceiveTimeout(ms: 10_000)   // the final answer may be slow on a loaded machine
                try client.send("hello")
                return (early, try client.readResponse())
            }
            #expect(early.isEmpty, "the server sent \(String(decoding: early, as: UTF8.self).debugDescription) before the body")
            #expect(final.status == 200)
            #expect(final.bodyText == "POST /upload hello")
        }
    }

    // MARK: Limits

    @Test("a header block over 16 KiB gets 431 and the connection closes")
    func headerTooLarge() async throws {
        try await withConformanceServer { s in
            let big = String(repeating: "a", count: 17 * 1024)
            let outcome = try await sendExpectingError(
                port: s.port, Array("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(big)\r\n\r\n".utf8))
            outcome.expectJSONError(status: 431)
            #expect(s.calls.value == 0)
        }
    }

    @Test("Content-Length over maxBodyBytes gets 413 and the connection closes")
    func contentLengthTooLarge() async throws {
        try await withConformanceServer(configure: { $0.maxBodyBytes = 1024 }) { s in
            let outcome = try await sendExpectingError(
                port: s.port, Array("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n".utf8))
            outcome.expectJSONError(status: 413)
            #expect(s.calls.value == 0)
        }
    }

    @Test("a body of exactly maxBodyBytes is accepted")
    func bodyAtLimitAccepted() async throws {
        try await withConformanceServer(configure: { $0.maxBodyBytes = 1024 }) { s in
            let r = try await rawRequest(port: s.port, method: "POST", path: "/edge", body: Array(repeating: UInt8(ascii: "b"), count: 1024))
            #expect(r.status == 200)
            #expect(r.body.count == "POST /edge ".utf8.count + 1024)
        }
    }

    @Test("a chunked body that grows over maxBodyBytes gets 413 and the connection closes")
    func chunkedTooLarge() async throws {
        try await withConformanceServer(configure: { $0.maxBodyBytes = 1024 }) { s in
            let chunk = "258\r\n" + String(repeating: "c", count: 0x258) + "\r\n"  // 600 bytes each
            let outcome = try await sendExpectingError(
                port: s.port,
                Array("POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(chunk)\(chunk)".utf8))
            outcome.expectJSONError(status: 413)
            #expect(s.calls.value == 0)
        }
    }

    // MARK: Smuggling shapes and malformed requests

    static let smuggling: [(name: String, request: String)] = [
        ("Content-Length with Transfer-Encoding",
         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two different Content-Length",
         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("Transfer-Encoding: gzip",
         "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
        ("obs-fold",
         "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n"),
        ("bare CR in a header",
         "GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n"),
        ("invalid chunk size",
         "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ]

    @Test("smuggling shapes get a 400 JSON error and the connection closes",
          arguments: HTTPServerConformanceTests.smuggling)
    func smugglingRejected(_ shape: (name: String, request: String)) async throws {
        try await withConformanceServer { s in
            // A valid request pipelined after the bad one must not be answered.
            let follow = String(decoding: RawHTTPClient.format(method: "GET", path: "/after"), as: UTF8.self)
            let outcome = try await sendExpectingError(port: s.port, Array((shape.request + follow).utf8))
            outcome.expectJSONError(status: 400, shape.name)
            #expect(s.calls.value == 0, "\(shape.name): the handler must not see the request")
        }
    }

    static let badHosts: [(name: String, request: String)] = [
        ("userinfo", "GET / HTTP/1.1\r\nHost: user@evil.com\r\n\r\n"),
        ("space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        ("slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        ("list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"),
        ("non-numeric port", "GET / HTTP/1.1\r\nHost: a:xyz\r\n\r\n"),
        ("port over 65535", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n"),
        ("unclosed IPv6", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"),
        ("bare IPv6", "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n"),
        ("two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("two identical Host fields", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        ("HTTP/1.0 with userinfo", "GET / HTTP/1.0\r\nHost: user@evil.com\r\n\r\n"),
        ("missing Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n"),
    ]

    @Test("an invalid or repeated Host gets a 400 JSON error, is never handled, and the connection closes",
          arguments: HTTPServerConformanceTests.badHosts)
    func badHostRejected(_ shape: (name: String, request: String)) async throws {
        try await withConformanceServer { s in
            let follow = String(decoding: RawHTTPClient.format(method: "GET", path: "/after"), as: UTF8.self)
            let outcome = try await sendExpectingError(port: s.port, Array((shape.request + follow).utf8))
            outcome.expectJSONError(status: 400, shape.name)
            #expect(outcome.response.bodyText.contains("Host"), "\(shape.name): \(outcome.response.bodyText)")
            #expect(s.calls.value == 0, "\(shape.name): the handler must not see the request")
        }
    }

    @Test("valid Host forms reach the handler", arguments: [
        "example.com", "example.com:8080", "127.0.0.1:80", "[::1]", "[2001:db8::1]:443", "",
    ])
    func goodHostAccepted(_ host: String) async throws {
        try await withConformanceServer { s in
            let port = s.port
            let response = try await offload { () -> RawHTTPClient.Response in
                let client = try RawHTTPClient(port: port)
                try client.send("GET /h HTTP/1.1\r\nHost: \(host)\r\n\r\n")
                return try client.readResponse()
            }
            #expect(response.status == 200, "Host: \(host)")
            #expect(s.calls.value == 1)
        }
    }

    @Test("HTTP/2.0 request line gets 505 and the connection closes")
    func unsupportedVersion() async throws {
        try await withConformanceServer { s in
            let outcome = try await sendExpectingError(port: s.port, Array("GET / HTTP/2.0\r\nHost: x\r\n\r\n".utf8))
            outcome.expectJSONError(status: 505)
            #expect(s.calls.value == 0)
        }
    }

    // MARK: Timeouts

    @Test("slow header sender: 408 after headerTimeout, then close")
    func headerTimeout() async throws {
        try await withConformanceServer(configure: { $0.headerTimeout = .milliseconds(300) }) { s in
            let port = s.port
            let (response, rest, elapsed) = try await offload { () -> (RawHTTPClient.Response, [UInt8], Duration) in
                let client = try RawHTTPClient(port: port, timeoutMs: 3000)
                let clock = ContinuousClock()
                let start = clock.now
                try client.send("GET /slow-head HTTP/1.1\r\nHost: x\r\nX-Half: ")
                let response = try client.readResponse()
                let elapsed = clock.now - start
                return (response, try client.readToEnd(), elapsed)
            }
            #expect(response.status == 408)
            #expect(response.header("Connection")?.lowercased() == "close")
            #expect(rest.isEmpty)
            #expect(elapsed >= .milliseconds(250), "408 must not come before the header timeout")
            #expect(elapsed < .seconds(2))
            #expect(s.calls.value == 0)
        }
    }

    @Test("idle keep-alive connection is closed after idleTimeout without a response")
    func idleTimeout() async throws {
        try await withConformanceServer(configure: { $0.idleTimeout = .milliseconds(300) }) { s in
            let port = s.port
            let (first, rest, idle) = try await offload { () -> (RawHTTPClient.Response, [UInt8], Duration) in
                let client = try RawHTTPClient(port: port, timeoutMs: 3000)
                try client.send(RawHTTPClient.format(method: "GET", path: "/once"))
                let first = try client.readResponse()
                let clock = ContinuousClock()
                let start = clock.now
                let rest = try client.readToEnd()  // throws .timeout if never closed
                return (first, rest, clock.now - start)
            }
            #expect(first.status == 200)
            #expect(first.header("Connection") == nil, "an HTTP/1.1 response on a kept-alive connection")
            #expect(rest.isEmpty, "an idle close sends nothing")
            #expect(idle < .seconds(2))
            #expect(idle >= .milliseconds(200))
        }
    }

    // MARK: Robustness

    @Test("garbage and aborted connections do not disturb other clients")
    func survivesGarbage() async throws {
        try await withConformanceServer { s in
            let port = s.port
            try await offload {
                // 1. Binary noise (deterministic).
                var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
                let noise = (0..<4096).map { _ -> UInt8 in
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    return UInt8(truncatingIfNeeded: seed >> 56)
                }
                let a = try RawHTTPClient(port: port, timeoutMs: 2000)
                try? a.send(noise)
                _ = try? a.readToEnd()
                // 2. Too many empty lines before the request line.
                let b = try RawHTTPClient(port: port, timeoutMs: 2000)
                try? b.send(String(repeating: "\r\n", count: 20) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                _ = try? b.readToEnd()
                // 3. Body cut short by the client closing.
                let c = try RawHTTPClient(port: port, timeoutMs: 2000)
                try c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
                c.shutdownWrite()
                _ = try? c.readToEnd()
                // 4. Reset in the middle of a head.
                let d = try RawHTTPClient(port: port, timeoutMs: 2000)
                try d.send("GET / HTTP/1.1\r\nHo")
                d.abortWithReset()
                // 5. Connect and go away.
                _ = try RawHTTPClient(port: port, timeoutMs: 2000)
            }
            let r = try await rawRequest(port: port, path: "/still-alive")
            #expect(r.status == 200)
            #expect(r.bodyText == "GET /still-alive")
            let drained = await eventually(timeout: .seconds(3)) { s.server.connectionCount == 0 }
            #expect(drained, "connections left open: \(s.server.connectionCount)")
        }
    }

    // MARK: Graceful shutdown

    @Test("graceful shutdown: in-flight request completes with Connection: close, idle ones close, new connects refused")
    func gracefulShutdown() async throws {
        let inHandler = CallCounter()
        let idleReady = CallCounter()
        // The slow handler answers only once the shutdown has begun (not after a fixed sleep that
        // a loaded machine can outlast before the test even starts the shutdown).
        let serverBox = ServerBox()
        let s = try ConformanceServer.start(handler: { request, _ in
            if request.head.path == "/slow" {
                inHandler.increment()
                for _ in 0..<1000 where serverBox.server?.isDraining != true {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                try? await Task.sleep(for: .milliseconds(50))
                return LBResponse(status: 200, body: Array("done".utf8))
            }
            return LBResponse(status: 200, body: Array("fast".utf8))
        })
        serverBox.server = s.server
        let port = s.port
        // An idle keep-alive connection: must be closed by the shutdown, not wait out the timeout.
        async let idle = offload { () -> (Int, [UInt8]) in
            let client = try RawHTTPClient(port: port, timeoutMs: 4000)
            try client.send(RawHTTPClient.format(method: "GET", path: "/fast"))
            let status = try client.readResponse().status
            idleReady.increment()
            return (status, try client.readToEnd())
        }
        async let inFlight = offload { () -> RawHTTPClient.Response in
            let client = try RawHTTPClient(port: port, timeoutMs: 4000)
            try client.send(RawHTTPClient.format(method: "GET", path: "/slow"))
            return try client.readResponse()
        }
        let ready = await eventually { inHandler.value == 1 && idleReady.value == 1 }
        #expect(ready)
        let clock = ContinuousClock()
        let start = clock.now
        await s.server.shutdown(timeout: .seconds(5))
        let shutdownTook = clock.now - start

        let response = try await inFlight
        #expect(response.status == 200)
        #expect(response.bodyText == "done")
        #expect(response.header("Connection")?.lowercased() == "close")
        let (idleStatus, idleRest) = try await idle
        #expect(idleStatus == 200)
        #expect(idleRest.isEmpty)
        #expect(shutdownTook < .seconds(3), "shutdown waited \(shutdownTook) although everything finished in ~300 ms")

        let refused = try await offload { () -> Int32? in
            do {
                _ = try RawHTTPClient(port: port, timeoutMs: 1000)
                return nil
            } catch RawHTTPClient.Failure.connect(let code) {
                return code
            }
        }
        #expect(refused == ECONNREFUSED)
    }

    // MARK: HEAD

    @Test("HEAD: headers including Content-Length, no body")
    func headHasNoBody() async throws {
        try await withConformanceServer { s in
            let port = s.port
            let (head, next) = try await offload { () -> (RawHTTPClient.Response, RawHTTPClient.Response) in
                let client = try RawHTTPClient(port: port)
                // Pipelined: if a body followed the HEAD response, the second parse would see it.
                try client.send(RawHTTPClient.format(method: "HEAD", path: "/doc") + RawHTTPClient.format(method: "GET", path: "/doc"))
                return (try client.readResponse(headRequest: true), try client.readResponse())
            }
            #expect(head.status == 200)
            #expect(head.header("Content-Length") == String("HEAD /doc".utf8.count))
            #expect(head.body.isEmpty)
            #expect(next.status == 200)
            #expect(next.bodyText == "GET /doc")
        }
    }
}

// MARK: - Support

/// Thread-safe counter for handler invocations.
final class CallCounter: Sendable {
    private let n = Atomic<Int>(0)
    func increment() { n.add(1, ordering: .relaxed) }
    var value: Int { n.load(ordering: .relaxed) }
}

/// An ``HTTP1Server`` on an ephemeral loopback port.
struct ConformanceServer {
    let server: HTTP1Server
    let port: Int
    let calls: CallCounter

    /// Default handler: 200 with body `"<METHOD> <target>"` plus `" <body>"` when there is one.
    static func start(configure: (inout HTTP1ServerConfiguration) -> Void = { _ in },
                      handler: (@Sendable (LBRequest, LBRequestContext) async -> LBResponse)? = nil) throws -> ConformanceServer {
        var config = HTTP1ServerConfiguration(host: "127.0.0.1", port: 0)
        configure(&config)
        let calls = CallCounter()
        let handle: @Sendable (LBRequest, LBRequestContext) async -> LBResponse = handler ?? { request, _ in
            var text = "\(request.method) \(request.target)"
            if !request.body.isEmpty { text += " " + String(decoding: request.body, as: UTF8.self) }
            return LBResponse(status: 200, headers: ["Content-Type": "text/plain"], body: Array(text.utf8))
        }
        let server = HTTP1Server(configuration: config, group: TestLoops.group, handler: ClosureHandler { request, context in
            calls.increment()
            return await handle(request, context)
        })
        let address = try server.start()
        return ConformanceServer(server: server, port: address.port, calls: calls)
    }

    func stop() async { await server.shutdown(timeout: .milliseconds(500)) }
}

/// Runs `body` against a fresh server and always shuts it down.
func withConformanceServer(configure: (inout HTTP1ServerConfiguration) -> Void = { _ in },
                           _ body: (ConformanceServer) async throws -> Void) async throws {
    let s = try ConformanceServer.start(configure: configure)
    do {
        try await body(s)
    } catch {
        await s.stop()
        throw error
    }
    await s.stop()
}

/// What came back for a request the server must reject.
struct ErrorOutcome: Sendable {
    var response: RawHTTPClient.Response
    /// Bytes after the response (a second response would show up here).
    var rest: [UInt8]
    /// Whether the server closed the connection (EOF/reset before the client's read timeout).
    var closed: Bool

    func expectJSONError(status: Int, _ label: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(response.status == status, "\(label)", sourceLocation: sourceLocation)
        #expect(response.header("Content-Type")?.lowercased().hasPrefix("application/json") == true,
                "\(label)", sourceLocation: sourceLocation)
        let json = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        #expect(json?["error"] is String, "\(label): body \(response.bodyText)", sourceLocation: sourceLocation)
        #expect(response.header("Connection")?.lowercased() == "close", "\(label)", sourceLocation: sourceLocation)
        #expect(closed, "\(label): the server must close the connection after an error", sourceLocation: sourceLocation)
        #expect(rest.isEmpty, "\(label): nothing may follow the error response, got \(String(decoding: rest, as: UTF8.self).debugDescription)",
                sourceLocation: sourceLocation)
    }
}

/// Sends `bytes` on a fresh connection, reads one response, then waits for the close.
func sendExpectingError(port: Int, _ bytes: [UInt8]) async throws -> ErrorOutcome {
    try await offload {
        let client = try RawHTTPClient(port: port, timeoutMs: 3000)
        try? client.send(bytes)  // the server may answer and close before reading everything
        let response = try client.readResponse()
        do {
            let rest = try client.readToEnd()
            return ErrorOutcome(response: response, rest: rest, closed: true)
        } catch {
            return ErrorOutcome(response: response, rest: [], closed: false)
        }
    }
}

extension RawHTTPClient {
    /// Reads exactly `n` bytes straight from the socket (only before any `readResponse`).
    func receiveExactly(_ n: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: n)
        while out.count < n {
            let want = n - out.count
            let got = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, want, 0) }
            if got < 0 { throw errno == EAGAIN || errno == EWOULDBLOCK ? Failure.timeout : Failure.closed }
            if got == 0 { throw Failure.closed }
            out.append(contentsOf: buf[0..<got])
        }
        return out
    }

    /// Half-closes the sending side (the server sees EOF).
    func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Makes the eventual close send RST instead of FIN.
    func abortWithReset() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
    }
}

/// Hands a server to a handler created before it (the handler reads it once requests arrive).
final class ServerBox: Sendable {
    private let stored = Mutex<HTTP1Server?>(nil)
    var server: HTTP1Server? {
        get { stored.withLock { $0 } }
        set { stored.withLock { $0 = newValue } }
    }
}
