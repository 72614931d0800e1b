import Testing
@testable import LBKit
@testable import LBKitHTTP

/// `HeaderFields` keeps wire lines in one buffer: these pin down what a list of string pairs
/// gave for free (order, spelling, values) and what the byte form adds (lines written as
/// received, runs copied at once, dead lines dropped).
@Suite("HeaderFields wire-line storage")
struct HeaderFieldsStorageTests {
    static func parse(_ text: String, limits: HTTPParserLimits = HTTPParserLimits()) throws -> RequestHead {
        let bytes = Array(text.utf8)
        let result = bytes.withUnsafeBytes { p in
            Result { () throws(HTTPParseError) in try HTTPRequestHeadParser.parse(p, limits: limits, scanFrom: 0) }
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

    /// The wire text the fields should give, from their strings.
    static func expectedWire(_ pairs: [(String, String)]) -> String {
        pairs.map { "\($0.0): \($0.1)\r\n" }.joined()
    }

    /// Every way of reading the list agrees with `pairs`.
    static func check(_ h: HeaderFields, _ pairs: [(String, String)], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(h.count == pairs.count, sourceLocation: sourceLocation)
        #expect(h.fields.map { "\($0.name)=\($0.value)" } == pairs.map { "\($0.0)=\($0.1)" }, sourceLocation: sourceLocation)
        #expect(wire(h) == expectedWire(pairs), sourceLocation: sourceLocation)
        #expect(h.wireByteCount == expectedWire(pairs).utf8.count, sourceLocation: sourceLocation)
        var viaBytes: [String] = []
        h.forEachField { n, v in viaBytes.append(String(decoding: n, as: UTF8.self) + "=" + String(decoding: v, as: UTF8.self)) }
        #expect(viaBytes == pairs.map { "\($0.0)=\($0.1)" }, sourceLocation: sourceLocation)
    }

    @Test("a list built field by field grows past its first buffer (and past a reserved one) without losing a field")
    func growth() {
        var h = HeaderFields()
        #expect(h.bufferIdentity == nil)  // an empty list allocates nothing
        var pairs: [(String, String)] = []
        for i in 0..<300 {
            let pair = ("X-Field-\(i)", String(repeating: "v", count: i % 37))
            h.add(name: pair.0, value: pair.1)
            pairs.append(pair)
        }
        Self.check(h, pairs)
        #expect(h.first(name: "x-field-299") == String(repeating: "v", count: 299 % 37))

        var reserved = HeaderFields(reservingCapacity: 2, bytes: 10)
        reserved.add(name: "A", value: "1")
        let first = reserved.bufferIdentity
        reserved.add(name: "B", value: String(repeating: "b", count: 500))
        #expect(reserved.bufferIdentity != first)  // outgrew the reservation
        Self.check(reserved, [("A", "1"), ("B", String(repeating: "b", count: 500))])
    }

    @Test("a copy shares the buffer until one side writes; every kind of write leaves the other side as it was")
    func copyOnWrite() throws {
        let original = try Self.parse("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nConnection: close\r\nX-B: 2\r\n\r\n")
        let pairs = [("Host", "a"), ("X-A", "1"), ("Connection", "close"), ("X-B", "2")]
        let writes: [(String, (inout HeaderFields) -> Void)] = [
            ("add", { $0.add(name: "X-New", value: "n") }),
            ("remove", { $0.remove(name: "x-a") }),
            ("removeAll", { $0.removeAll { name, _ in name == "Host" } }),
            ("replaceOrAdd", { $0.replaceOrAdd(name: "X-B", value: "3") }),
            ("reserveCapacity", { $0.reserveCapacity(fields: 10, bytes: 1000) }),
            ("appendLine", { $0.appendLine(from: original.headers, at: 0) }),
            ("appendLines", { $0.appendLines(from: original.headers) { _ in false } }),
        ]
        for (what, write) in writes {
            var copy = original.headers
            #expect(copy.bufferIdentity == original.headers.bufferIdentity, "\(what)")
            write(&copy)
            #expect(copy.bufferIdentity != original.headers.bufferIdentity, "\(what)")
            Self.check(original.headers, pairs)
        }
        // A list appended to itself (through a copy) reads both halves.
        var doubled = original.headers
        doubled.appendLines(from: doubled) { _ in false }
        Self.check(doubled, pairs + pairs)
        Self.check(original.headers, pairs)
    }

    @Test("removing from a list owned alone edits it in place; later writes and copies skip the dead lines")
    func removeInPlace() {
        var h = HeaderFields([("A", "1"), ("B", "22"), ("C", "333"), ("D", "4444")])
        let id = h.bufferIdentity
        h.remove(name: "b")
        h.removeAll { name, _ in name == "D" }
        #expect(h.bufferIdentity == id)
        Self.check(h, [("A", "1"), ("C", "333")])
        #expect(h.storedByteCount > h.wireByteCount)  // dead bytes stay until compaction
        h.add(name: "E", value: "5")
        Self.check(h, [("A", "1"), ("C", "333"), ("E", "5")])
        var copy = HeaderFields()
        copy.appendLines(from: h) { i in h.name(at: i, is: "C") }
        Self.check(copy, [("A", "1"), ("E", "5")])
        #expect(copy.storedByteCount == copy.wireByteCount)
        // removeAll calls the predicate once per field, in order, also when it removes nothing.
        var seen: [String] = []
        h.removeAll { name, _ in seen.append(name); return false }
        #expect(seen == ["A", "C", "E"])
    }

    @Test("a backend's parsed response loses its hop-by-hop fields in place, keeping the first Content-Length only when asked")
    func hopByHopRemovedInPlace() throws {
        let text = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nContent-Length: 5\r\nKEEP-ALIVE: timeout=5\r\n"
            + "Content-Type: text/plain\r\nx-private: secret\r\nTE: trailers\r\nProxy-Authenticate: Basic\r\nContent-Length: 5\r\n"
            + "Trailer: X\r\nX-Kept: 1\r\n\r\n"
        // Parsed in a function of its own, so that no `Result` here keeps a second reference.
        func parse() throws -> ResponseHead {
            let bytes = Array(text.utf8)
            let result = bytes.withUnsafeBytes { p in
                Result { () throws(HTTPParseError) in try HTTPResponseHeadParser.parse(p, requestMethod: "HEAD", limits: HTTPParserLimits(), scanFrom: 0) }
            }
            return try #require(try result.get()).head
        }
        var head = try parse()
        let id = head.headers.bufferIdentity
        // A shared list is copied first, and the other holder keeps every field.
        var forHead = head.headers
        ForwardingHeaders.removeHopByHop(&forHead, keepingFirstContentLength: true)
        Self.check(forHead, [("Content-Length", "5"), ("Content-Type", "text/plain"), ("X-Kept", "1")])
        #expect(forHead.bufferIdentity != id)
        #expect(head.headers.count == 10)

        var headers = head.headers
        head.headers = HeaderFields()   // `headers` owns the parsed buffer alone now
        ForwardingHeaders.removeHopByHop(&headers)
        #expect(headers.bufferIdentity == id, "a list owned alone must be edited in place")
        Self.check(headers, [("Content-Type", "text/plain"), ("X-Kept", "1")])
        // The parser left room for the balancer's backend header: adding it does not reallocate.
        headers.add(name: "X-Backend", value: "127.0.0.1:65535")
        #expect(headers.bufferIdentity == id)
        Self.check(headers, [("Content-Type", "text/plain"), ("X-Kept", "1"), ("X-Backend", "127.0.0.1:65535")])
    }

    @Test("fields beyond 64 KiB: the index switches to full-width entries, parsed or built, and nothing is cut")
    func largeOffsets() throws {
        let big = String(repeating: "x", count: 70_000)
        // Built: narrow entries at first, converted when the buffer grows past 64 KiB.
        var h: HeaderFields = ["Host": "a", "X-Small": "1"]
        h.add(name: "X-Big", value: big)
        h.add(name: "X-After", value: "2")
        Self.check(h, [("Host", "a"), ("X-Small", "1"), ("X-Big", big), ("X-After", "2")])
        #expect(h.first(name: "x-after") == "2")
        #expect(h.storedByteCount > 0xFFFF)
        // A copy with a removal (shared, so rebuilt) and in place.
        var copy = h
        copy.remove(name: "X-Small")
        Self.check(copy, [("Host", "a"), ("X-Big", big), ("X-After", "2")])
        h.remove(name: "X-Big")
        Self.check(h, [("Host", "a"), ("X-Small", "1"), ("X-After", "2")])

        // Parsed: a field block over 64 KiB, with a line not in wire form after the big one.
        var limits = HTTPParserLimits()
        limits.maxHeadBytes = 256 * 1024
        let head = try Self.parse("GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(big)\r\nX-Tight:3\r\nX-End: 4\r\n\r\n", limits: limits)
        Self.check(head.headers, [("Host", "a"), ("X-Big", big), ("X-Tight", "3"), ("X-End", "4")])
        // And a block over 64 KiB made of many ordinary lines.
        var fields: [(String, String)] = []
        var text = "GET / HTTP/1.1\r\nHost: a\r\n"
        fields.append(("Host", "a"))
        for i in 0..<40 {
            let pair = ("X-\(i)", String(repeating: "y", count: 2_000))
            fields.append(pair)
            text += "\(pair.0): \(pair.1)\r\n"
        }
        let parsed = try Self.parse(text + "\r\n", limits: limits)
        Self.check(parsed.headers, fields)
    }

    @Test("a parsed head with more fields than the parser reserves for reads back whole, in wire form or not")
    func manyParsedFields() throws {
        var text = "GET / HTTP/1.1\r\nHost: a\r\n"
        var fields = [("Host", "a")]
        for i in 0..<60 {
            let value = String(i)
            fields.append(("X-\(i)", value))
            text += i == 45 ? "X-\(i):\(value)\r\n" : "X-\(i): \(value)\r\n"  // one line not in wire form, late
        }
        let head = try Self.parse(text + "\r\n")
        Self.check(head.headers, fields)
    }
}
