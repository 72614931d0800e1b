import Testing
@testable import LBKit
@testable import LBKitHTTP

/// `HeaderFields` keeps wire lines in one buffer: these pin down what a list of string pairs
/// gave for free (order, spelling, values) and what the byte form adds (lines written as
/// received, runs copied at once, dead lines dropped).
@Suite("HeaderFields wire-line storage")
struct HeaderFieldsStorageTests {
    static func parse(_ text: String) throws -> RequestHead {
        let bytes = Array(text.utf8)
        let result = bytes.withUnsafeBytes { p in
            Result { () throws(HTTPParseError) in try HTTPRequestHeadParser.parse(p, limits: HTTPParserLimits(), scanFrom: 0) }
        }
        return try #require(try result.get()).head
    }

    static func wire(_ headers: HeaderFields) -> String {
        var out: [UInt8] = []
        headers.appendWire(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test("parsed lines in wire form, and lines that are not (no space, extra blanks), read back the same and are written normalised")
    func mixedLines() throws {
        let head = try Self.parse(
            "GET / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nX-Tight:2\r\nX-Wide: \t 3  \r\nX-Last: 4\r\nX-Empty:\r\n\r\n")
        #expect(head.headers.fields.map { "\($0.name)=\($0.value)" }
                == ["Host=a", "X-One=1", "X-Tight=2", "X-Wide=3", "X-Last=4", "X-Empty="])
        #expect(Self.wire(head.headers) == "Host: a\r\nX-One: 1\r\nX-Tight: 2\r\nX-Wide: 3\r\nX-Last: 4\r\nX-Empty: \r\n")
        #expect(head.headers.first(name: "x-wide") == "3")
        #expect(head.headers.first(name: "X-Empty") == "")
        #expect(head.headers.wireByteCount == Self.wire(head.headers).utf8.count)
    }

    @Test("writing while skipping fields copies the kept lines in order, across the gaps")
    func skippingRuns() throws {
        let head = try Self.parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-A: 1\r\nX-B: 2\r\nTE: trailers\r\nX-C: 3\r\n\r\n")
        var out: [UInt8] = []
        head.headers.appendWire(to: &out) { i in head.headers.name(at: i, is: "Connection") || head.headers.name(at: i, is: "te") }
        #expect(String(decoding: out, as: UTF8.self) == "Host: a\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n")
        var copy = HeaderFields()
        copy.add(name: "First", value: "0")
        copy.appendLines(from: head.headers) { i in head.headers.name(at: i, is: "Host") || head.headers.name(at: i, is: "X-B") }
        #expect(copy.fields.map(\.name) == ["First", "Connection", "X-A", "TE", "X-C"])
        #expect(copy.first(name: "x-c") == "3")
        #expect(Self.wire(copy) == "First: 0\r\nConnection: close\r\nX-A: 1\r\nTE: trailers\r\nX-C: 3\r\n")
    }

    @Test("a list edited in a loop stays bounded: dead lines are dropped once they outweigh the live ones")
    func compaction() {
        var h: HeaderFields = ["Host": "a"]
        for i in 0..<1000 { h.replaceOrAdd(name: "X-Counter", value: String(i)) }
        #expect(h.fields.map { "\($0.name)=\($0.value)" } == ["Host=a", "X-Counter=999"])
        #expect(h.storedByteCount <= 2 * h.wireByteCount + 256)
        h.removeAll { name, _ in name == "Host" }
        #expect(Self.wire(h) == "X-Counter: 999\r\n")
    }

    @Test("removing an absent field leaves a shared list shared (no copy on write)")
    func removeAbsentKeepsSharing() throws {
        let head = try Self.parse("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n")
        var copy = head.headers
        copy.remove(name: "Expect")
        let shared = copy.bufferIdentity != nil && copy.bufferIdentity == head.headers.bufferIdentity
        #expect(shared)
        copy.remove(name: "x-a")
        #expect(copy.count == 1 && head.headers.count == 2)
    }
}
