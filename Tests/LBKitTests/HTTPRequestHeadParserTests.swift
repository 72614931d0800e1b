import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// One request that must be rejected, with the error it must produce.
struct RequestRejectionCase: Sendable, CustomTestStringConvertible {
    var name: String
    var raw: String
    var expected: HTTPParseError
    var testDescription: String { name }
}

@Suite struct HTTPRequestHeadParserTests {
    // MARK: helpers

    static func parse(
        _ bytes: [UInt8], limits: HTTPParserLimits = HTTPParserLimits(), scanFrom: Int = 0
    ) throws(HTTPParseError) -> ParsedRequestHead? {
        let result = bytes.withUnsafeBytes { p in
            Result { () throws(HTTPParseError) in
                try HTTPRequestHeadParser.parse(p, limits: limits, scanFrom: scanFrom)
            }
        }
        return try result.get()
    }

    static func parse(
        _ text: String, limits: HTTPParserLimits = HTTPParserLimits(), scanFrom: Int = 0
    ) throws(HTTPParseError) -> ParsedRequestHead? {
        try parse(Array(text.utf8), limits: limits, scanFrom: scanFrom)
    }

    static func error(_ bytes: [UInt8], limits: HTTPParserLimits = HTTPParserLimits()) -> HTTPParseError? {
        do throws(HTTPParseError) {
            _ = try parse(bytes, limits: limits)
            return nil
        } catch {
            return error
        }
    }

    static func error(_ text: String, limits: HTTPParserLimits = HTTPParserLimits()) -> HTTPParseError? {
        error(Array(text.utf8), limits: limits)
    }

    static func fields(_ head: RequestHead) -> [String] {
        head.headers.fields.map { "\($0.name)=\($0.value)" }
    }

    // MARK: basics

    @Test func simpleGet() throws {
        let raw = "GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1.0\r\n\r\n"
        let parsed = try #require(try Self.parse(raw))
        #expect(parsed.head.method == "GET")
        #expect(parsed.head.target == "/index.html?x=1")
        #expect(parsed.head.version == .http1_1)
        #expect(Self.fields(parsed.head) == ["Host=example.com", "User-Agent=t/1.0"])
        #expect(parsed.headLength == raw.utf8.count)
        #expect(parsed.framing == .none)
        #expect(parsed.keepAlive)
        #expect(!parsed.expectsContinue)
    }

    @Test func postWithContentLengthStopsAtBody() throws {
        let head = "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
        let parsed = try #require(try Self.parse(head + "hello"))
        #expect(parsed.head.method == "POST")
        #expect(parsed.framing == .contentLength(5))
        #expect(parsed.headLength == head.utf8.count)
    }

    @Test func contentLengthZeroAndLarge() throws {
        let zero = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"))
        #expect(zero.framing == .contentLength(0))
        let big = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999\r\n\r\n"))
        #expect(big.framing == .contentLength(999_999_999_999_999_999))
    }

    @Test func chunkedRequest() throws {
        let parsed = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
        #expect(parsed.framing == .chunked)
        let mixedCase = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING:   ChUnKeD  \r\n\r\n"))
        #expect(mixedCase.framing == .chunked)
    }

    @Test func contentLengthIdenticalDuplicatesAccepted() throws {
        let list = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"))
        #expect(list.framing == .contentLength(5))
        let fields = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"))
        #expect(fields.framing == .contentLength(5))
    }

    @Test func valuesAreTrimmedAndCasePreserved() throws {
        let parsed = try #require(try Self.parse("GET / HTTP/1.1\r\nHost: a\r\nX-Thing: \t  a  b \t\r\nX-Empty:\r\n\r\n"))
        #expect(Self.fields(parsed.head) == ["Host=a", "X-Thing=a  b", "X-Empty="])
        #expect(parsed.head.headers.first(name: "x-thing") == "a  b")
    }

    @Test func utf8ValuesAccepted() throws {
        let parsed = try #require(try Self.parse("GET / HTTP/1.1\r\nHost: a\r\nX-Name: café 😀 ü\r\n\r\n"))
        #expect(parsed.head.headers.first(name: "X-Name") == "café 😀 ü")
    }

    @Test func absoluteFormTarget() throws {
        let parsed = try #require(try Self.parse("OPTIONS http://h.example/a%20b?q=[1] HTTP/1.1\r\nHost: h.example\r\n\r\n"))
        #expect(parsed.head.target == "http://h.example/a%20b?q=[1]")
        #expect(parsed.head.method == "OPTIONS")
    }

    @Test func leadingEmptyLinesAreSkipped() throws {
        let raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
        let parsed = try #require(try Self.parse(raw))
        #expect(parsed.head.method == "GET")
        #expect(parsed.headLength == raw.utf8.count)
        #expect(try Self.parse("\r") == nil)
        #expect(try Self.parse("\r\n") == nil)
        let tooMany = String(repeating: "\r\n", count: 9) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        #expect(Self.error(tooMany)?.status == 400)
    }

    // MARK: connection management

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", true),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ("GET / HTTP/1.0\r\nConnection: foo, Keep-Alive\r\n\r\n", true),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false),
    ])
    func keepAliveRules(raw: String, expected: Bool) throws {
        let parsed = try #require(try Self.parse(raw))
        #expect(parsed.keepAlive == expected)
    }

    @Test func http10WithoutHostIsAccepted() throws {
        let parsed = try #require(try Self.parse("GET / HTTP/1.0\r\n\r\n"))
        #expect(parsed.head.version == .http1_0)
        #expect(parsed.head.headers.count == 0)
    }

    @Test func expectContinue() throws {
        let yes = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"))
        #expect(yes.expectsContinue)
        let other = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n"))
        #expect(!other.expectsContinue)
        let none = try #require(try Self.parse("POST / HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(!none.expectsContinue)
    }

    // MARK: incremental parsing

    @Test func incrementalAtEveryOffset() throws {
        let raw = Array("\r\nPOST /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n".utf8)
        let full = try #require(try Self.parse(raw))
        for k in 0..<raw.count {
            #expect(try Self.parse(Array(raw[..<k])) == nil, "prefix \(k)")
        }
        // Grow the buffer one byte at a time, resuming the scan where the previous call stopped.
        var scanned = 0
        var result: ParsedRequestHead?
        for k in 1...raw.count {
            result = try Self.parse(Array(raw[..<k]), scanFrom: scanned)
            if result != nil {
                #expect(k == raw.count)
                break
            }
            scanned = k
        }
        let incremental = try #require(result)
        #expect(incremental.head.method == full.head.method)
        #expect(incremental.head.target == full.head.target)
        #expect(Self.fields(incremental.head) == Self.fields(full.head))
        #expect(incremental.headLength == full.headLength)
        #expect(incremental.framing == full.framing)
        // Split into two reads at every offset.
        for k in 0..<raw.count {
            #expect(try Self.parse(Array(raw[..<k])) == nil)
            let second = try #require(try Self.parse(raw, scanFrom: k))
            #expect(second.headLength == full.headLength)
            #expect(Self.fields(second.head) == Self.fields(full.head))
        }
    }

    @Test func bareLFDetectedBeforeHeadIsComplete() {
        #expect(Self.error("GET / HTTP/1.1\nHo") == .malformed("bare LF"))
    }

    // MARK: smuggling and grammar violations

    static let rejections: [RequestRejectionCase] = [
        .init(name: "CL+TE", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
              expected: .malformed("Content-Length and Transfer-Encoding together")),
        .init(name: "TE+CL", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
              expected: .malformed("Content-Length and Transfer-Encoding together")),
        .init(name: "differing CL fields", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
              expected: .malformed("conflicting Content-Length values")),
        .init(name: "CL list 5, 6", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
              expected: .malformed("conflicting Content-Length values")),
        .init(name: "CL plus sign", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
              expected: .malformed("invalid Content-Length")),
        .init(name: "CL minus sign", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
              expected: .malformed("invalid Content-Length")),
        .init(name: "CL inner space", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
              expected: .malformed("invalid Content-Length")),
        .init(name: "CL hex", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
              expected: .malformed("invalid Content-Length")),
        .init(name: "CL suffix", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n",
              expected: .malformed("invalid Content-Length")),
        .init(name: "CL empty", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
              expected: .malformed("invalid Content-Length")),
        .init(name: "CL trailing comma", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n",
              expected: .malformed("invalid Content-Length")),
        .init(name: "CL 19 digits", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n",
              expected: .malformed("Content-Length too large")),
        .init(name: "TE gzip", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
              expected: .malformed("final transfer coding is not chunked")),
        .init(name: "TE identity", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
              expected: .malformed("final transfer coding is not chunked")),
        .init(name: "TE chunked, gzip", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
              expected: .malformed("final transfer coding is not chunked")),
        .init(name: "TE chunked with parameter", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
              expected: .malformed("final transfer coding is not chunked")),
        .init(name: "TE xchunked", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
              expected: .malformed("final transfer coding is not chunked")),
        .init(name: "TE empty", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
              expected: .malformed("empty transfer coding")),
        .init(name: "TE empty element", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n",
              expected: .malformed("empty transfer coding")),
        .init(name: "TE chunked twice", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
              expected: .malformed("chunked applied more than once")),
        .init(name: "TE chunked twice in two fields", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
              expected: .malformed("chunked applied more than once")),
        .init(name: "TE gzip, chunked", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
              expected: .unsupportedTransferCoding("gzip, chunked")),
        .init(name: "TE gzip then chunked fields", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
              expected: .unsupportedTransferCoding("gzip, chunked")),
        .init(name: "TE in HTTP/1.0", raw: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
              expected: .malformed("Transfer-Encoding in HTTP/1.0 request")),
        .init(name: "obs-fold SP", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
              expected: .malformed("obsolete line folding")),
        .init(name: "obs-fold HTAB", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n",
              expected: .malformed("obsolete line folding")),
        .init(name: "bare CR in value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
              expected: .malformed("bare CR")),
        .init(name: "bare CR before CRLF", raw: "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
              expected: .malformed("bare CR")),
        .init(name: "bare CR in name", raw: "GET / HTTP/1.1\r\nHost: a\r\nX\r-A: b\r\n\r\n",
              expected: .malformed("bare CR")),
        .init(name: "bare CR at start", raw: "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("bare CR")),
        .init(name: "bare LF after request line", raw: "GET / HTTP/1.1\nHost: a\r\n\r\n",
              expected: .malformed("bare LF")),
        .init(name: "bare LF after field", raw: "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
              expected: .malformed("bare LF")),
        .init(name: "bare LF terminator", raw: "GET / HTTP/1.1\r\nHost: a\r\n\n",
              expected: .malformed("bare LF")),
        .init(name: "LF-only message", raw: "GET / HTTP/1.1\nHost: a\n\n",
              expected: .malformed("bare LF")),
        .init(name: "leading bare LF", raw: "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("bare LF")),
        .init(name: "space before colon", raw: "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
              expected: .malformed("whitespace before colon in header field")),
        .init(name: "tab before colon", raw: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n",
              expected: .malformed("whitespace before colon in header field")),
        .init(name: "missing Host", raw: "GET / HTTP/1.1\r\nX: y\r\n\r\n",
              expected: .malformed("missing Host")),
        .init(name: "double Host", raw: "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
              expected: .malformed("multiple Host")),
        .init(name: "double Host in 1.0", raw: "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
              expected: .malformed("multiple Host")),
        .init(name: "missing colon", raw: "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
              expected: .malformed("missing colon in header field")),
        .init(name: "empty name", raw: "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",
              expected: .malformed("empty header name")),
        .init(name: "invalid name char", raw: "GET / HTTP/1.1\r\nHost: a\r\nX(a): x\r\n\r\n",
              expected: .malformed("invalid character in header name")),
        .init(name: "NUL in value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n",
              expected: .malformed("invalid character in header value")),
        .init(name: "DEL in value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7F}b\r\n\r\n",
              expected: .malformed("invalid character in header value")),
        .init(name: "control in long value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX: abcdefghijklmnop\u{1}qrstuvwxyz\r\n\r\n",
              expected: .malformed("invalid character in header value")),
        .init(name: "double space after method", raw: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid request target")),
        .init(name: "double space before version", raw: "GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid HTTP version")),
        .init(name: "trailing space", raw: "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
              expected: .malformed("invalid HTTP version")),
        .init(name: "tab separator", raw: "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid character in method")),
        .init(name: "no version", raw: "GET /\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid request line")),
        .init(name: "empty method", raw: " / HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid method")),
        .init(name: "bad method char", raw: "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid character in method")),
        .init(name: "non-ASCII target", raw: "GET /café HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid character in request target")),
        .init(name: "control in long target", raw: "GET /abcdefghijklmnopq\u{1}rstuvwxyz HTTP/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid character in request target")),
        .init(name: "lowercase version", raw: "GET / http/1.1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid HTTP version")),
        .init(name: "short version", raw: "GET / HTTP/1\r\nHost: a\r\n\r\n",
              expected: .malformed("invalid HTTP version")),
        .init(name: "HTTP/2.0", raw: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", expected: .unsupportedVersion),
        .init(name: "HTTP/1.2", raw: "GET / HTTP/1.2\r\nHost: a\r\n\r\n", expected: .unsupportedVersion),
        .init(name: "HTTP/0.9", raw: "GET / HTTP/0.9\r\nHost: a\r\n\r\n", expected: .unsupportedVersion),
    ]

    @Test(arguments: rejections)
    func rejects(_ c: RequestRejectionCase) {
        #expect(Self.error(c.raw) == c.expected)
    }

    @Test(arguments: [
        [0xC3, 0x28],              // bad continuation
        [0xC0, 0xAF],              // overlong
        [0xE0, 0x80, 0xAF],        // overlong 3-byte
        [0xED, 0xA0, 0x80],        // surrogate
        [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
        [0xF5, 0x80, 0x80, 0x80],
        [0xE2, 0x82],              // truncated
        [0x80],                    // lone continuation
        [0xFF],
    ] as [[UInt8]])
    func rejectsInvalidUTF8InValue(_ bad: [UInt8]) {
        let raw = Array("GET / HTTP/1.1\r\nHost: a\r\nX-V: ok".utf8) + bad + Array("tail\r\n\r\n".utf8)
        #expect(Self.error(raw) == .malformed("invalid character in header value"))
    }

    // MARK: Host (RFC 9112 3.2, RFC 3986 3.2.2-3.2.3)

    static let invalidHosts = [
        "user@evil.com", "a b", "a/b", "a, b", "a,b", "a:xyz", "a:", ":80", "a:65536", "a:99999999999999999999",
        "a:-1", "a:+80", "a:8 0", "[::1", "::1", "[1.2.3.4]", "[::1]x", "[::1]:", "[::1]]", "[fe80::1%eth0]", "[]",
        "[v1.x]", "[::1]:65536", "a?b", "a#b", "a\\b", "a%zz", "a%4", "caf\u{E9}.example", "a\"b", "<a>", "a{b}",
        "a|b", "a^b", "a`b", "a[b]", "a]",
    ]
    static let validHosts = [
        "example.com", "EXAMPLE.com:8080", "a", "127.0.0.1", "127.0.0.1:0", "1.2.3.999", "[::1]", "[::1]:8000",
        "[2001:DB8::1]:65535", "[::ffff:192.0.2.1]", "a-b_c~d.e", "a%41b", "xn--bcher-kva.example", "a:080",
        "a!$&'()*+;=b", "h:65535",
    ]

    @Test(arguments: invalidHosts)
    func rejectsInvalidHost(_ host: String) {
        #expect(Self.error("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n") == .malformed("invalid Host"), "\(host)")
        #expect(Self.error("GET / HTTP/1.0\r\nHost: \(host)\r\n\r\n") == .malformed("invalid Host"), "\(host)")
    }

    @Test(arguments: validHosts)
    func acceptsValidHost(_ host: String) throws {
        let parsed = try #require(try Self.parse("GET / HTTP/1.1\r\nUser-Agent: t\r\nHOST:  \(host) \r\n\r\n"))
        #expect(parsed.head.headers.first(name: "host") == host)
    }

    @Test func emptyHostAcceptedAsToday() throws {
        let parsed = try #require(try Self.parse("GET / HTTP/1.1\r\nHost:\r\n\r\n"))
        #expect(parsed.head.headers.first(name: "host") == "")
        #expect(Self.error("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n") == .malformed("multiple Host"))
    }

    @Test func expectContinueIgnoredForHTTP10() throws {
        let old = try #require(try Self.parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"))
        #expect(!old.expectsContinue)
        #expect(old.head.headers.first(name: "expect") == "100-continue")
    }

    // MARK: limits

    /// A complete head of exactly `size` bytes (padded through an X-Pad field).
    static func head(ofSize size: Int) -> [UInt8] {
        let prefix = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
        let suffix = "\r\n\r\n"
        let pad = size - prefix.utf8.count - suffix.utf8.count
        return Array((prefix + String(repeating: "p", count: pad) + suffix).utf8)
    }

    @Test(arguments: [64, 300, 16 * 1024])
    func headSizeBoundary(limit: Int) throws {
        var limits = HTTPParserLimits()
        limits.maxHeadBytes = limit
        let exact = Self.head(ofSize: limit)
        #expect(exact.count == limit)
        let parsed = try #require(try Self.parse(exact, limits: limits))
        #expect(parsed.headLength == limit)
        // Body bytes after the head do not count against the limit.
        let withBody = try #require(try Self.parse(exact + Array(repeating: 0x41, count: 100), limits: limits))
        #expect(withBody.headLength == limit)
        // One byte more is too large.
        #expect(Self.error(Self.head(ofSize: limit + 1), limits: limits) == .headTooLarge)
        #expect(Self.error(Self.head(ofSize: limit + 1), limits: limits)?.status == 431)
        // Incomplete: nil while within the limit, headTooLarge once beyond it.
        let incomplete = Array(Self.head(ofSize: limit + 10)[..<limit])
        #expect(try Self.parse(incomplete, limits: limits) == nil)
        let incompleteOver = Array(Self.head(ofSize: limit + 10)[..<(limit + 1)])
        #expect(Self.error(incompleteOver, limits: limits) == .headTooLarge)
    }

    @Test func defaultLimitIs16KiB() {
        #expect(HTTPParserLimits().maxHeadBytes == 16 * 1024)
        #expect(Self.error(Self.head(ofSize: 16 * 1024 + 1)) == .headTooLarge)
    }

    @Test func headerCountLimit() throws {
        var limits = HTTPParserLimits()
        limits.maxHeaderCount = 10
        func request(fields: Int) -> String {
            var s = "GET / HTTP/1.1\r\nHost: a\r\n"
            for i in 1..<fields { s += "X-\(i): v\r\n" }
            return s + "\r\n"
        }
        let ok = try #require(try Self.parse(request(fields: 10), limits: limits))
        #expect(ok.head.headers.count == 10)
        #expect(Self.error(request(fields: 11), limits: limits) == .headTooLarge)
        #expect(Self.error(request(fields: 101)) == .headTooLarge)
        #expect(try Self.parse(request(fields: 100)) != nil)
    }

    // MARK: error mapping

    @Test func errorStatusAndReason() {
        #expect(HTTPParseError.headTooLarge.status == 431)
        #expect(HTTPParseError.malformed("x").status == 400)
        #expect(HTTPParseError.malformed("missing Host").reason == "missing Host")
        #expect(HTTPParseError.unsupportedVersion.status == 505)
        #expect(HTTPParseError.unsupportedTransferCoding("gzip, chunked").status == 501)
        #expect(HTTPParseError.unsupportedTransferCoding("gzip, chunked").reason.contains("gzip, chunked"))
        #expect(!HTTPParseError.headTooLarge.reason.isEmpty)
        #expect(!HTTPParseError.unsupportedVersion.reason.isEmpty)
    }
}
