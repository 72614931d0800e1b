import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite struct HTTPSerializerTests {
    static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test func requestHead() {
        var out: [UInt8] = []
        let head = RequestHead(method: "GET", target: "/x?y=1", headers: ["Host": "example.com", "X-A": "b c"])
        HTTPSerializer.appendRequestHead(head, to: &out)
        #expect(Self.text(out) == "GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\nX-A: b c\r\n\r\n")
    }

    @Test func requestHeadAppendsAndKeepsExistingBytes() {
        var out: [UInt8] = Array("prefix".utf8)
        HTTPSerializer.appendRequestHead(RequestHead(method: "DELETE", target: "*", version: .http1_0), to: &out)
        #expect(Self.text(out) == "prefixDELETE * HTTP/1.0\r\n\r\n")
    }

    @Test func responseHead() {
        var out: [UInt8] = []
        HTTPSerializer.appendResponseHead(ResponseHead(status: 404, headers: ["Content-Length": "0"]), to: &out)
        #expect(Self.text(out) == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        out.removeAll()
        HTTPSerializer.appendResponseHead(ResponseHead(status: 299, reason: "", version: .http1_0), to: &out)
        #expect(Self.text(out) == "HTTP/1.0 299 \r\n\r\n")
    }

    @Test func chunks() {
        var out: [UInt8] = []
        Array("hello".utf8).withUnsafeBytes { HTTPSerializer.appendChunk($0, to: &out) }
        #expect(Self.text(out) == "5\r\nhello\r\n")
        out.removeAll()
        [UInt8]().withUnsafeBytes { HTTPSerializer.appendChunk($0, to: &out) }
        #expect(out.isEmpty)
        [UInt8](repeating: 0x61, count: 0x1F).withUnsafeBytes { HTTPSerializer.appendChunk($0, to: &out) }
        #expect(Self.text(Array(out[..<4])) == "1f\r\n")
        #expect(out.count == 4 + 0x1F + 2)
        out.removeAll()
        [UInt8](repeating: 0, count: 4096).withUnsafeBytes { HTTPSerializer.appendChunk($0, to: &out) }
        #expect(Self.text(Array(out[..<6])) == "1000\r\n")
        #expect(Self.text(Array(out.suffix(2))) == "\r\n")
        out.removeAll()
        HTTPSerializer.appendLastChunk(to: &out)
        #expect(Self.text(out) == "0\r\n\r\n")
    }

    @Test func requestRoundTrip() throws {
        let original = RequestHead(
            method: "POST", target: "/api/v1/items?sort=desc&x=%20",
            headers: HeaderFields([("Host", "api.example"), ("Content-Length", "11"), ("X-Unicode", "naïve ☃"),
                                  ("x-dup", "1"), ("X-Dup", "2"), ("X-Empty", "")]))
        var out: [UInt8] = []
        HTTPSerializer.appendRequestHead(original, to: &out)
        let parsed = try #require(try out.withUnsafeBytes { p in
            try Result { () throws(HTTPParseError) in try HTTPRequestHeadParser.parse(p, limits: HTTPParserLimits()) }.get()
        })
        #expect(parsed.headLength == out.count)
        #expect(parsed.head.method == original.method)
        #expect(parsed.head.target == original.target)
        #expect(parsed.head.version == original.version)
        #expect(parsed.head.headers.fields.map { "\($0.name)=\($0.value)" }
            == original.headers.fields.map { "\($0.name)=\($0.value)" })
        #expect(parsed.framing == .contentLength(11))
    }

    @Test(arguments: [100, 200, 204, 302, 404, 503, 599])
    func responseRoundTrip(status: Int) throws {
        let original = ResponseHead(status: status, headers: ["Transfer-Encoding": "chunked", "Server": "lbkit"])
        var out: [UInt8] = []
        HTTPSerializer.appendResponseHead(original, to: &out)
        let parsed = try #require(try out.withUnsafeBytes { p in
            try Result { () throws(HTTPParseError) in
                try HTTPResponseHeadParser.parse(p, requestMethod: "GET", limits: HTTPParserLimits())
            }.get()
        })
        #expect(parsed.headLength == out.count)
        #expect(parsed.head.status == status)
        #expect(parsed.head.reason == original.reason)
        #expect(parsed.head.headers.fields.map(\.value) == ["chunked", "lbkit"])
        let bodyless = status < 200 || status == 204
        #expect(parsed.framing == (bodyless ? .none : .chunked))
    }

    @Test func chunkedRoundTrip() throws {
        let pieces: [[UInt8]] = [Array("a".utf8), [], (0..<300).map { UInt8(truncatingIfNeeded: $0) }, Array("tail".utf8)]
        var wire: [UInt8] = []
        for piece in pieces { piece.withUnsafeBytes { HTTPSerializer.appendChunk($0, to: &wire) } }
        HTTPSerializer.appendLastChunk(to: &wire)
        for step in [1, 2, 7, wire.count] {
            var decoder = ChunkedDecoder()
            var body: [UInt8] = []
            var offset = 0
            while offset < wire.count {
                let end = min(offset + step, wire.count)
                let used = try Array(wire[offset..<end]).withUnsafeBytes { p in
                    try Result { () throws(HTTPParseError) in try decoder.decode(p, into: &body) }.get()
                }
                offset += used
            }
            #expect(decoder.isComplete)
            #expect(body == pieces.flatMap { $0 })
        }
    }
}
