import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite struct ChunkedDecoderTests {
    /// Feeds `wire` in pieces of `step` bytes; returns (body, bytes consumed, complete).
    static func decode(
        _ wire: [UInt8], step: Int = Int.max, limits: HTTPParserLimits = HTTPParserLimits()
    ) throws(HTTPParseError) -> (body: [UInt8], consumed: Int, complete: Bool) {
        var decoder = ChunkedDecoder(limits: limits)
        var body: [UInt8] = []
        var offset = 0
        while offset < wire.count && !decoder.isComplete {
            let end = offset + min(step, wire.count - offset)
            let piece = Array(wire[offset..<end])
            let result = piece.withUnsafeBytes { p in
                Result { () throws(HTTPParseError) in try decoder.decode(p, into: &body) }
            }
            let used = try result.get()
            offset += used
            if used < piece.count {
                #expect(decoder.isComplete, "a partial consume must only happen at completion")
                break
            }
        }
        return (body, offset, decoder.isComplete)
    }

    static func decode(
        _ text: String, step: Int = Int.max, limits: HTTPParserLimits = HTTPParserLimits()
    ) throws(HTTPParseError) -> (body: [UInt8], consumed: Int, complete: Bool) {
        try decode(Array(text.utf8), step: step, limits: limits)
    }

    static func error(_ text: String, step: Int = Int.max, limits: HTTPParserLimits = HTTPParserLimits()) -> HTTPParseError? {
        do throws(HTTPParseError) {
            _ = try decode(Array(text.utf8), step: step, limits: limits)
            return nil
        } catch {
            return error
        }
    }

    static let sample = "5\r\nhello\r\n1;name=value;flag\r\n \r\nB\r\nworld, 1234\r\n0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n"
    static let sampleBody = "hello world, 1234"

    @Test func simpleBody() throws {
        let r = try Self.decode("5\r\nhello\r\n0\r\n\r\n")
        #expect(r.body == Array("hello".utf8))
        #expect(r.complete)
        #expect(r.consumed == 15)
    }

    @Test func multipleChunksExtensionsAndTrailers() throws {
        let r = try Self.decode(Self.sample)
        #expect(String(decoding: r.body, as: UTF8.self) == Self.sampleBody)
        #expect(r.complete)
        #expect(r.consumed == Self.sample.utf8.count)
    }

    @Test func oneByteAtATime() throws {
        let r = try Self.decode(Self.sample, step: 1)
        #expect(String(decoding: r.body, as: UTF8.self) == Self.sampleBody)
        #expect(r.complete)
        #expect(r.consumed == Self.sample.utf8.count)
    }

    @Test func everyTwoWaySplit() throws {
        let wire = Array(Self.sample.utf8)
        for k in 0...wire.count {
            var decoder = ChunkedDecoder()
            var body: [UInt8] = []
            let first = Array(wire[..<k]), second = Array(wire[k...])
            let a = try first.withUnsafeBytes { p in
                try Result { () throws(HTTPParseError) in try decoder.decode(p, into: &body) }.get()
            }
            #expect(a == k)
            #expect(decoder.isComplete == (k == wire.count))
            let b = try second.withUnsafeBytes { p in
                try Result { () throws(HTTPParseError) in try decoder.decode(p, into: &body) }.get()
            }
            #expect(b == wire.count - k)
            #expect(decoder.isComplete)
            #expect(String(decoding: body, as: UTF8.self) == Self.sampleBody)
        }
    }

    @Test func stopsAtEndOfMessage() throws {
        var decoder = ChunkedDecoder()
        var body: [UInt8] = []
        let wire = Array("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n".utf8)
        let used = try wire.withUnsafeBytes { p in
            try Result { () throws(HTTPParseError) in try decoder.decode(p, into: &body) }.get()
        }
        #expect(used == 13)
        #expect(decoder.isComplete)
        #expect(body == Array("abc".utf8))
        let again = try wire.withUnsafeBytes { p in
            try Result { () throws(HTTPParseError) in try decoder.decode(UnsafeRawBufferPointer(rebasing: p[used...]), into: &body) }.get()
        }
        #expect(again == 0)
        #expect(body == Array("abc".utf8))
    }

    @Test func incompleteUntilFinalCRLF() throws {
        let r = try Self.decode("5\r\nhello\r\n0\r\nX: y\r\n")
        #expect(!r.complete)
        #expect(r.body == Array("hello".utf8))
        let r2 = try Self.decode("5\r\nhello\r\n0\r\n\r")
        #expect(!r2.complete)
    }

    @Test func hexSizes() throws {
        let data = String(repeating: "z", count: 0x1F)
        let upper = try Self.decode("1F\r\n" + data + "\r\n0\r\n\r\n")
        #expect(upper.body.count == 0x1F)
        let lower = try Self.decode("001f\r\n" + data + "\r\n0\r\n\r\n")
        #expect(lower.body.count == 0x1F)
        let sixteen = try Self.decode("000000000000000A\r\n0123456789\r\n0000000000000000\r\n\r\n")
        #expect(sixteen.body == Array("0123456789".utf8))
        #expect(sixteen.complete)
    }

    @Test func largeChunkDeliveredInPieces() throws {
        let payload = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var wire = Array("2710\r\n".utf8) + payload + Array("\r\n0\r\n\r\n".utf8)
        let r = try Self.decode(wire, step: 777)
        #expect(r.body == payload)
        #expect(r.complete)
        wire.append(0x47)
        #expect(try Self.decode(wire).consumed == wire.count - 1)
    }

    @Test(arguments: [
        ("\r\nhello\r\n0\r\n\r\n", HTTPParseError.malformed("invalid chunk size")),        // empty size
        (";ext\r\n0\r\n\r\n", .malformed("invalid chunk size")),                          // extension without size
        ("g\r\n", .malformed("invalid chunk size")),
        ("0x5\r\nhello\r\n0\r\n\r\n", .malformed("invalid chunk size")),
        ("-1\r\n", .malformed("invalid chunk size")),
        ("+5\r\nhello\r\n0\r\n\r\n", .malformed("invalid chunk size")),
        (" 5\r\nhello\r\n0\r\n\r\n", .malformed("invalid chunk size")),
        ("5 \r\nhello\r\n0\r\n\r\n", .malformed("invalid chunk size")),
        ("00000000000000005\r\nhello\r\n0\r\n\r\n", .malformed("chunk size too long")),   // 17 hex digits
        ("10000000000000000\r\n", .malformed("chunk size too long")),
        ("8000000000000000\r\n", .malformed("chunk size too large")),                      // > Int.max
        ("FFFFFFFFFFFFFFFF\r\n", .malformed("chunk size too large")),
        ("5\nhello\r\n0\r\n\r\n", .malformed("bare LF")),
        ("5;a=b\nhello\r\n0\r\n\r\n", .malformed("bare LF")),
        ("5\rhello\r\n0\r\n\r\n", .malformed("bare CR")),
        ("5;a\u{1}b\r\nhello\r\n0\r\n\r\n", .malformed("invalid character in chunk extension")),
        ("5;a\u{7F}\r\nhello\r\n0\r\n\r\n", .malformed("invalid character in chunk extension")),
        ("5\r\nhelloX\r\n0\r\n\r\n", .malformed("chunk data not followed by CRLF")),
        ("5\r\nhello\n0\r\n\r\n", .malformed("chunk data not followed by CRLF")),
        ("5\r\nhello\rX0\r\n\r\n", .malformed("chunk data not followed by CRLF")),
        ("5\r\nhell\r\n0\r\n\r\n", .malformed("chunk data not followed by CRLF")),
        ("5\r\nhello\r\n0\r\n\n", .malformed("bare LF")),
        ("5\r\nhello\r\n0\r\n\rX", .malformed("bare CR")),
        ("0\r\nX: a\nY: b\r\n\r\n", .malformed("bare LF")),
        ("0\r\nX: a\rY: b\r\n\r\n", .malformed("bare CR")),
        ("0\r\nBad Name: x\r\n\r\n", .malformed("whitespace before colon in header field")),
        ("0\r\nNoColon\r\n\r\n", .malformed("missing colon in header field")),
        ("0\r\nX: a\r\n b\r\n\r\n", .malformed("obsolete line folding")),
        ("0\r\nX: a\u{0}b\r\n\r\n", .malformed("invalid character in header value")),
        ("0\r\n\tX: a\r\n\r\n", .malformed("obsolete line folding")),
    ])
    func rejects(raw: String, expected: HTTPParseError) {
        #expect(Self.error(raw) == expected, "whole")
        #expect(Self.error(raw, step: 1) == expected, "byte by byte")
    }

    @Test func invalidUTF8InTrailerRejected() {
        let wire = Array("0\r\nX: ".utf8) + [0xC3, 0x28] + Array("\r\n\r\n".utf8)
        var decoder = ChunkedDecoder()
        var body: [UInt8] = []
        let result = wire.withUnsafeBytes { p in
            Result { () throws(HTTPParseError) in try decoder.decode(p, into: &body) }
        }
        #expect(throws: HTTPParseError.malformed("invalid character in header value")) { try result.get() }
    }

    @Test func chunkLineLimit() throws {
        var limits = HTTPParserLimits()
        limits.maxChunkLineBytes = 16
        // "5;" + 14 extension bytes = 16 bytes before CRLF: accepted.
        let ok = try Self.decode("5;" + String(repeating: "e", count: 14) + "\r\nhello\r\n0\r\n\r\n", step: 3, limits: limits)
        #expect(ok.body == Array("hello".utf8))
        #expect(ok.complete)
        #expect(Self.error("5;" + String(repeating: "e", count: 15) + "\r\nhello\r\n0\r\n\r\n", limits: limits)
            == .malformed("chunk-size line too long"))
        // The default limit (4096) applies to extensions too.
        #expect(Self.error("5;" + String(repeating: "e", count: 5000) + "\r\nhello\r\n0\r\n\r\n")
            == .malformed("chunk-size line too long"))
    }

    @Test func extensionAllowsTabAndQuotedStrings() throws {
        let r = try Self.decode("3;\tname=\"quoted value\"\r\nabc\r\n0;last\r\n\r\n")
        #expect(r.body == Array("abc".utf8))
        #expect(r.complete)
    }

    @Test func trailerLimits() throws {
        var limits = HTTPParserLimits()
        limits.maxTrailerBytes = 20
        // "X: 123456789012345\r\n" is 20 bytes; plus the final CRLF = 22 > 20.
        #expect(Self.error("0\r\nX: 123456789012345\r\n\r\n", limits: limits) == .headTooLarge)
        #expect(Self.error("0\r\nX: 123456789012345\r\n\r\n", step: 1, limits: limits) == .headTooLarge)
        // "X: 1234567890123" (16) + CRLF + final CRLF = 20 bytes exactly: accepted.
        let ok = try Self.decode("0\r\nX: 1234567890123\r\n\r\n", limits: limits)
        #expect(ok.complete)
        #expect(Self.error("0\r\nX: 12345678901234\r\n\r\n", limits: limits) == .headTooLarge)
        // Trailer field count.
        var countLimits = HTTPParserLimits()
        countLimits.maxHeaderCount = 2
        #expect(try Self.decode("0\r\nA: 1\r\nB: 2\r\n\r\n", limits: countLimits).complete)
        #expect(Self.error("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits: countLimits) == .headTooLarge)
    }

    @Test func emptyInputConsumesNothing() throws {
        var decoder = ChunkedDecoder()
        var body: [UInt8] = []
        let used = try [UInt8]().withUnsafeBytes { p in
            try Result { () throws(HTTPParseError) in try decoder.decode(p, into: &body) }.get()
        }
        #expect(used == 0)
        #expect(!decoder.isComplete)
    }
}
