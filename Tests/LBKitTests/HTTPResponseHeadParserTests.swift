import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// One response head and the framing / keep-alive it must produce.
struct ResponseFramingCase: Sendable, CustomTestStringConvertible {
    var name: String
    var method: String
    var raw: String
    var framing: HTTPBodyFraming
    var keepAlive: Bool
    var testDescription: String { name }
}

@Suite struct HTTPResponseHeadParserTests {
    static func parse(
        _ bytes: [UInt8], method: String = "GET", limits: HTTPParserLimits = HTTPParserLimits(), scanFrom: Int = 0
    ) throws(HTTPParseError) -> ParsedResponseHead? {
        let result = bytes.withUnsafeBytes { p in
            Result { () throws(HTTPParseError) in
                try HTTPResponseHeadParser.parse(p, requestMethod: method, limits: limits, scanFrom: scanFrom)
            }
        }
        return try result.get()
    }

    static func parse(
        _ text: String, method: String = "GET", limits: HTTPParserLimits = HTTPParserLimits()
    ) throws(HTTPParseError) -> ParsedResponseHead? {
        try parse(Array(text.utf8), method: method, limits: limits)
    }

    static func error(_ text: String, method: String = "GET", limits: HTTPParserLimits = HTTPParserLimits()) -> HTTPParseError? {
        do throws(HTTPParseError) {
            _ = try parse(Array(text.utf8), method: method, limits: limits)
            return nil
        } catch {
            return error
        }
    }

    @Test func simpleOK() throws {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        let parsed = try #require(try Self.parse(head + "hello"))
        #expect(parsed.head.status == 200)
        #expect(parsed.head.reason == "OK")
        #expect(parsed.head.version == .http1_1)
        #expect(parsed.head.headers.first(name: "content-type") == "text/plain")
        #expect(parsed.headLength == head.utf8.count)
        #expect(parsed.framing == .contentLength(5))
        #expect(parsed.keepAlive)
    }

    static let framingCases: [ResponseFramingCase] = [
        .init(name: "CL", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
              framing: .contentLength(12), keepAlive: true),
        .init(name: "chunked", method: "GET", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
              framing: .chunked, keepAlive: true),
        .init(name: "until close", method: "GET", raw: "HTTP/1.1 200 OK\r\n\r\n",
              framing: .untilClose, keepAlive: false),
        .init(name: "HEAD with CL", method: "HEAD", raw: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "HEAD with chunked", method: "HEAD", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "HEAD without length", method: "HEAD", raw: "HTTP/1.1 200 OK\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "204", method: "GET", raw: "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "304", method: "GET", raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "100", method: "POST", raw: "HTTP/1.1 100 Continue\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "101", method: "GET", raw: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "103", method: "GET", raw: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "CONNECT 200", method: "CONNECT", raw: "HTTP/1.1 200 Connection Established\r\n\r\n",
              framing: .none, keepAlive: true),
        .init(name: "CONNECT 407", method: "CONNECT", raw: "HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n",
              framing: .contentLength(0), keepAlive: true),
        .init(name: "TE wins over CL", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
              framing: .chunked, keepAlive: false),
        .init(name: "TE gzip", method: "GET", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
              framing: .untilClose, keepAlive: false),
        .init(name: "TE chunked, gzip", method: "GET", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
              framing: .untilClose, keepAlive: false),
        .init(name: "Connection close", method: "GET", raw: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
              framing: .contentLength(1), keepAlive: false),
        .init(name: "1.0 default", method: "GET", raw: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
              framing: .contentLength(1), keepAlive: false),
        .init(name: "1.0 keep-alive", method: "GET", raw: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
              framing: .contentLength(1), keepAlive: true),
        .init(name: "1.0 keep-alive until close", method: "GET", raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
              framing: .untilClose, keepAlive: false),
        .init(name: "1.0 chunked", method: "GET", raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
              framing: .chunked, keepAlive: false),
        .init(name: "CL list", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
              framing: .contentLength(7), keepAlive: true),
    ]

    @Test(arguments: framingCases)
    func framing(_ c: ResponseFramingCase) throws {
        let parsed = try #require(try Self.parse(c.raw, method: c.method))
        #expect(parsed.framing == c.framing)
        #expect(parsed.keepAlive == c.keepAlive)
        #expect(parsed.headLength == c.raw.utf8.count)
    }

    @Test func reasonPhraseForms() throws {
        let empty = try #require(try Self.parse("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"))
        #expect(empty.head.reason == "")
        #expect(empty.head.status == 200)
        let missing = try #require(try Self.parse("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"))
        #expect(missing.head.reason == "")
        #expect(missing.head.status == 404)
        let spaced = try #require(try Self.parse("HTTP/1.1 500 Internal  Server\tError\r\nContent-Length: 0\r\n\r\n"))
        #expect(spaced.head.reason == "Internal  Server\tError")
    }

    @Test(arguments: [
        ("HTTP/1.1 600 Nope\r\n\r\n", HTTPParseError.malformed("invalid status code")),
        ("HTTP/1.1 099 Nope\r\n\r\n", .malformed("invalid status code")),
        ("HTTP/1.1 20 OK\r\n\r\n", .malformed("invalid status line")),
        ("HTTP/1.1 2000 OK\r\n\r\n", .malformed("invalid status line")),
        ("HTTP/1.1  200 OK\r\n\r\n", .malformed("invalid status line")),
        ("HTTP/1.1 2x0 OK\r\n\r\n", .malformed("invalid status line")),
        ("HTTP/1.1\r\n\r\n", .malformed("invalid status line")),
        ("HTTP/1.1 200 O\u{1}K\r\n\r\n", .malformed("invalid reason phrase")),
        ("HTTP/2.0 200 OK\r\n\r\n", .unsupportedVersion),
        ("HTTP/1.2 200 OK\r\n\r\n", .unsupportedVersion),
        ("http/1.1 200 OK\r\n\r\n", .malformed("invalid HTTP version")),
        ("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", .malformed("bare LF")),
        ("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", .malformed("bare CR")),
        ("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", .malformed("obsolete line folding")),
        ("HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n", .malformed("whitespace before colon in header field")),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", .malformed("conflicting Content-Length values")),
        ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", .malformed("invalid Content-Length")),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", .malformed("chunked applied more than once")),
        ("\r\nHTTP/1.1 200 OK\r\n\r\n", .malformed("empty line before status line")),
        ("\nHTTP/1.1 200 OK\r\n\r\n", .malformed("bare LF")),
    ])
    func rejects(raw: String, expected: HTTPParseError) {
        #expect(Self.error(raw) == expected)
    }

    @Test("codings before chunked belong to the body: framing is chunked, the codings are passed on")
    func codingsBeforeChunked() throws {
        let parsed = try #require(try Self.parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"))
        #expect(parsed.framing == .chunked)
        #expect(parsed.keepAlive)
    }

    @Test func hostNotRequired() throws {
        let parsed = try #require(try Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(parsed.head.headers.count == 1)
    }

    @Test func incrementalAtEveryOffset() throws {
        let raw = Array("HTTP/1.1 200 OK\r\nServer: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".utf8)
        let headCount = raw.count - "5\r\nhello\r\n".utf8.count
        let full = try #require(try Self.parse(raw))
        #expect(full.headLength == headCount)
        #expect(full.framing == .chunked)
        for k in 0..<headCount {
            #expect(try Self.parse(Array(raw[..<k])) == nil, "prefix \(k)")
            let resumed = try #require(try Self.parse(raw, scanFrom: k))
            #expect(resumed.headLength == headCount)
            #expect(resumed.head.headers.fields.map(\.name) == ["Server", "Transfer-Encoding"])
        }
    }

    @Test func headSizeLimit() throws {
        var limits = HTTPParserLimits()
        limits.maxHeadBytes = 100
        func response(size: Int) -> String {
            let prefix = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: "
            return prefix + String(repeating: "p", count: size - prefix.utf8.count - 4) + "\r\n\r\n"
        }
        #expect(response(size: 100).utf8.count == 100)
        #expect(try Self.parse(response(size: 100), limits: limits)?.headLength == 100)
        #expect(Self.error(response(size: 101), limits: limits) == .headTooLarge)
    }

    @Test func headerCountLimit() throws {
        var limits = HTTPParserLimits()
        limits.maxHeaderCount = 3
        #expect(try Self.parse("HTTP/1.1 204 No\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits: limits) != nil)
        #expect(Self.error("HTTP/1.1 204 No\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", limits: limits) == .headTooLarge)
    }
}
