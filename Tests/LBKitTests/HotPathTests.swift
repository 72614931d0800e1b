import CLBKitShim
import Glibc
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy

/// The per-request fast paths of Docs/Performance.md keep the behaviour of what they replaced.
@Suite("Per-request fast paths")
struct HotPathTests {
    @Test("isMethod agrees with == for every pair of ASCII method names, and is byte equality beyond ASCII")
    func isMethodMatchesEquality() {
        let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "head", "GETX", "",
                       "PROPFIND", "É", "HEAD\u{301}", "A-VERY-LONG-EXTENSION-METHOD-NAME"]
        for a in methods {
            for b in methods { #expect(a.isMethod(b) == (a == b), "\(a) vs \(b)") }
        }
        #expect("\u{212A}" == "K" && !"\u{212A}".isMethod("K"))
    }

    @Test("namesEqual on names longer than 8 bytes: word skip, then case folding only for ASCII letters")
    func longNames() {
        #expect(HeaderFields.namesEqual("Transfer-Encoding", "transfer-encoding"))
        #expect(HeaderFields.namesEqual("Proxy-Authorization", "PROXY-AUTHORIZATION"))
        #expect(HeaderFields.namesEqual("X-Forwarded-Proto", "X-Forwarded-Proto"))
        #expect(!HeaderFields.namesEqual("X-Forwarded-Prot[", "X-Forwarded-Prot{"))
        #expect(!HeaderFields.namesEqual("Content-Lengtx", "Content-Length"))
        #expect(!HeaderFields.namesEqual("Xontent-Length", "Content-Length"))
    }

    @Test("removeAll asks once per field, in order, and keeps the others in order; nothing removed leaves the list as is")
    func removeAll() {
        var h: HeaderFields = [:]
        for (n, v) in [("A", "1"), ("B", "2"), ("A", "3"), ("C", "4"), ("a", "5")] { h.add(name: n, value: v) }
        var asked: [String] = []
        h.removeAll { name, value in
            asked.append(value)
            return HeaderFields.namesEqual(name, "a")
        }
        #expect(asked == ["1", "2", "3", "4", "5"])
        #expect(h.fields.map(\.value) == ["2", "4"])
        let before = h.fields.map(\.name)
        h.remove(name: "Missing")
        #expect(h.fields.map(\.name) == before)
    }

    @Test("Connection tokens are walked trimmed and without empty elements")
    func connectionTokens() {
        var tokens: [String] = []
        HTTPConnectionHeader.forEachToken(" keep-alive ,, X-Private\t,close") { tokens.append(String($0)) }
        #expect(tokens == ["keep-alive", "X-Private", "close"])
        #expect(HTTPConnectionHeader.hasToken("keep-alive, Upgrade", "upgrade"))
        #expect(!HTTPConnectionHeader.hasToken("keep-alive", "upgrade"))
    }

    @Test("IPv4 text for X-Forwarded-For", arguments: [
        ("0.0.0.0", "0.0.0.0"), ("127.0.0.1", "127.0.0.1"), ("10.20.30.40", "10.20.30.40"),
        ("255.255.255.255", "255.255.255.255"), ("192.168.100.9", "192.168.100.9"),
    ])
    func ipv4Text(input: String, expected: String) {
        #expect(ClientAddress(input)?.description == expected)
        // The forwarding path writes the same text as bytes, with no String.
        var fields = HeaderFields()
        if let v4 = ClientAddress(input)?.ipv4 { fields.appendForwardedFor(ipv4: v4) }
        #expect(fields["X-Forwarded-For"] == [expected])
        #expect(fields.count == 1)
        let head = ForwardingHeaders.upstreamHead(for: RequestHead(method: "POST", target: "/a?b", version: .http1_0, headers: ["Content-Type": "x"]),
                                                  client: ClientAddress(input), peerIsTrustedProxy: false)
        #expect(head.method == "POST" && head.target == "/a?b" && head.version == .http1_1)
        #expect(head.headers.fields.map { "\($0.name): \($0.value)" } == ["Content-Type: x", "X-Forwarded-For: \(expected)", "X-Forwarded-Proto: http"])
    }

    @Test("decimal Content-Length written without a String")
    func decimal() {
        for value in [0, 7, 9, 10, 19, 99, 100, 1_000_000, Int.max] {
            var out: [UInt8] = []
            HTTPSerializer.appendField("Content-Length", decimal: value, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == "Content-Length: \(value)\r\n")
            var composed: [UInt8] = [0x41]
            HTTPSerializer.appendContentLength(value, to: &composed)
            #expect(String(decoding: composed, as: UTF8.self) == "AContent-Length: \(value)\r\n")
        }
    }

    @Test("status lines composed in words match the plain spelling for every status")
    func statusLines() {
        for status in [0, 7, 99, 1000, 12345] + Array(100...999) {
            for reason in ["", "OK", "A reason phrase longer than sixteen bytes"] {
                var out: [UInt8] = [0x41]  // appended after existing bytes
                HTTPSerializer.appendStatusLine(status: status, reason: reason, to: &out)
                #expect(String(decoding: out, as: UTF8.self) == "AHTTP/1.1 \(status) \(reason)\r\n")
            }
        }
        var line: [UInt8] = [0x41]
        HTTPSerializer.appendRequestLine(method: "DELETE", target: "/a/b?c=d", to: &line)
        #expect(String(decoding: line, as: UTF8.self) == "ADELETE /a/b?c=d HTTP/1.1\r\n")
        for value in [1, 9, 99, 100, 123_456_789, 1 << 40] {
            var out: [UInt8] = []
            HTTPSerializer.appendDecimal(value, to: &out)
            #expect(out == Array(String(value).utf8))
        }
    }

    @Test("parsed common names and values are the bytes as sent, other spellings too")
    func commonStrings() throws {
        let wire = Array("POST /x HTTP/1.1\r\nHost: a\r\ncontent-type: application/json\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n".utf8)
        let parsed = try wire.withUnsafeBytes { try HTTPRequestHeadParser.parse($0, limits: HTTPParserLimits()) }
        let fields = try #require(parsed).head.headers.fields
        #expect(fields.map(\.name) == ["Host", "content-type", "Connection", "Content-Length"])
        #expect(fields.map(\.value) == ["a", "application/json", "Keep-Alive", "0"])
        #expect(parsed?.head.method == "POST")
    }

    @Test("inside a loop's job, up to 8 clock reads share one reading, and the time still advances; the next job reads afresh")
    func jobClock() async throws {
        let loop = TestLoops.group.loops[0]
        let (first, second) = await withCheckedContinuation { (done: CheckedContinuation<([UInt64], [UInt64]), Never>) in
            Task(executorPreference: loop) {
                var first: [UInt64] = []
                for _ in 0..<200 { first.append(lbk_monotonic_ns()) }
                await Task.yield()   // another job
                var second: [UInt64] = []
                for _ in 0..<8 { second.append(lbk_monotonic_ns()) }
                // A job that blocks its loop (it should not) sees the time it blocked for within
                // the reads left on the shared reading: at most 8.
                let before = lbk_monotonic_ns()
                usleep(2000)
                var after: [UInt64] = []
                for _ in 0..<8 { after.append(lbk_monotonic_ns()) }
                second.append(contentsOf: [before, after.last!])
                done.resume(returning: (first, second))
            }
        }
        #expect(Set(first.prefix(8)).count == 1, "the first 8 reads of a job share a reading: \(first.prefix(8))")
        #expect(first.last! > first.first!, "a job polling the clock sees it advance")
        #expect(zip(first, first.dropFirst()).allSatisfy { $0 <= $1 }, "never backwards")
        #expect(second.first! > first.first!, "the next job reads the clock again")
        #expect(second.first! >= first.last!)
        #expect(second[9] >= second[8] + 2_000_000, "8 reads after blocking, the time has caught up")
        // Off the loops (a plain thread), every read is a fresh one.
        let fresh = try await offload { () -> Bool in
            let a = lbk_monotonic_ns()
            usleep(1000)
            return lbk_monotonic_ns() >= a + 1_000_000
        }
        #expect(fresh)
    }

    @Test("Duration.nanosecondsClamped below and above the 64-bit attosecond range")
    func nanoseconds() {
        #expect(Duration.milliseconds(1500).nanosecondsClamped == 1_500_000_000)
        #expect(Duration.seconds(30).nanosecondsClamped == 30_000_000_000)
        #expect(Duration.nanoseconds(-7).nanosecondsClamped == -7)
        #expect(Duration.seconds(-20).nanosecondsClamped == -20_000_000_000)
        #expect(Duration.seconds(Int64.max).nanosecondsClamped == .max)
        #expect((Duration.seconds(20) + .nanoseconds(5)).nanosecondsClamped == 20_000_000_005)
        #expect((Duration.seconds(-20) - .nanoseconds(5)).nanosecondsClamped == -20_000_000_005)
        // Seconds beyond an Int64 (`components` traps on these): clamped, not a crash.
        #expect((Duration.seconds(Int64.max) * 10).nanosecondsClamped == .max)
        #expect((Duration.seconds(Int64.min) * 10).nanosecondsClamped == .min)
    }

    /// Records the order of its hooks in a shared log.
    struct Probe: SynchronousMiddleware {
        let name: String
        let answers: Bool
        let log: Log

        final class Log: Sendable {
            let entries = Mutex<[String]>([])
            func add(_ s: String) { entries.withLock { $0.append(s) } }
            var all: [String] { entries.withLock { $0 } }
        }

        func handle(_ request: LBRequest, context: LBRequestContext,
                    next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
            log.add("handle \(name)")
            return await next(request, context)
        }

        func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
            log.add("before \(name)")
            return answers ? .answer(LBResponse(status: 418)) : .pass(mark: UInt64(name.utf8.count))
        }

        func after(_ response: LBResponse, request: LBRequest, context: LBRequestContext, mark: UInt64) {
            log.add("after \(name) \(response.status) \(mark)")
        }
    }

    /// An embedder's middleware: only the public requirement.
    struct Outside: LBMiddleware {
        let log: Probe.Log
        func handle(_ request: LBRequest, context: LBRequestContext,
                    next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
            log.add("outside in")
            let response = await next(request, context)
            log.add("outside out \(response.status)")
            return response
        }
    }

    @Test("a row of synchronous middlewares behaves like nested calls, around an embedder's middleware")
    func middlewareRow() async {
        let log = Probe.Log()
        let chain = LBMiddlewareChain(
            [Probe(name: "a", answers: false, log: log), Probe(name: "bb", answers: false, log: log),
             Outside(log: log), Probe(name: "ccc", answers: false, log: log)],
            responder: ClosureHandler { _, _ in LBResponse(status: 200) })
        let response = await chain.handle(LBRequest(head: RequestHead(method: "GET", target: "/")), context: LBRequestContext(client: nil))
        #expect(response.status == 200)
        #expect(log.all == ["before a", "before bb", "outside in", "before ccc", "after ccc 200 3", "outside out 200",
                            "after bb 200 2", "after a 200 1"])
    }

    @Test("a synchronous middleware that answers stops the chain; only those before it see the answer")
    func middlewareAnswers() async {
        let log = Probe.Log()
        let chain = LBMiddlewareChain(
            [Probe(name: "a", answers: false, log: log), Probe(name: "b", answers: true, log: log),
             Probe(name: "c", answers: false, log: log)],
            responder: ClosureHandler { _, _ in LBResponse(status: 200) })
        let response = await chain.handle(LBRequest(head: RequestHead(method: "GET", target: "/")), context: LBRequestContext(client: nil))
        #expect(response.status == 418)
        #expect(log.all == ["before a", "before b", "after a 418 1"])
    }
}
