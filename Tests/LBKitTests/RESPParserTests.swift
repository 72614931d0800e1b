import Testing
@testable import LBKitHTTP

/// Parses `bytes` fed in the given parts (each part appended, then every complete reply taken).
private func parse(_ parts: [[UInt8]], limits: RESPParser.Limits = RESPParser.Limits()) -> (values: [RESPValue], error: RESPParseError?, leftover: Int) {
    var parser = RESPParser(limits: limits)
    var buffer = InboundBuffer(capacity: 64)
    var values: [RESPValue] = []
    for part in parts {
        buffer.append(part)
        do {
            while let v = try parser.next(from: &buffer) { values.append(v) }
        } catch {
            return (values, error, buffer.readableCount)
        }
    }
    return (values, nil, buffer.readableCount)
}

private func parse(_ text: String, limits: RESPParser.Limits = RESPParser.Limits()) -> (values: [RESPValue], error: RESPParseError?, leftover: Int) {
    parse([Array(text.utf8)], limits: limits)
}

/// Every way of cutting `bytes` in two, plus one byte at a time.
private func splits(_ bytes: [UInt8]) -> [[[UInt8]]] {
    var out: [[[UInt8]]] = [bytes.map { [$0] }]
    for i in 0...bytes.count { out.append([Array(bytes[..<i]), Array(bytes[i...])]) }
    return out
}

@Suite("RESP2 parser and encoder")
struct RESPParserTests {
    @Test("every reply type", arguments: [
        ("+OK\r\n", RESPValue.simpleString("OK")),
        ("+\r\n", .simpleString("")),
        ("-ERR unknown command 'FOO'\r\n", .error("ERR unknown command 'FOO'")),
        (":0\r\n", .integer(0)),
        (":-12\r\n", .integer(-12)),
        (":9223372036854775807\r\n", .integer(.max)),
        (":-9223372036854775808\r\n", .integer(.min)),
        ("$0\r\n\r\n", .bulkString([])),
        ("$5\r\nhello\r\n", .bulk("hello")),
        ("$4\r\na\r\nb\r\n", .bulkString(Array("a\r\nb".utf8))),
        ("$-1\r\n", .bulkString(nil)),
        ("*0\r\n", .array([])),
        ("*-1\r\n", .array(nil)),
        ("*3\r\n:1\r\n$-1\r\n*2\r\n+a\r\n*-1\r\n", .array([.integer(1), .bulkString(nil), .array([.simpleString("a"), .array(nil)])])),
    ])
    func replyTypes(text: String, expected: RESPValue) {
        let r = parse(text)
        #expect(r.error == nil)
        #expect(r.values == [expected])
        #expect(r.leftover == 0)
        // The encoder writes exactly these bytes back.
        #expect(expected.encoded == Array(text.utf8))
    }

    @Test("binary bulk strings keep every byte")
    func binaryBulk() {
        let payload: [UInt8] = Array(0...255)
        let wire = Array("$256\r\n".utf8) + payload + [13, 10]
        #expect(parse([wire]).values == [.bulkString(payload)])
    }

    @Test("several replies in one buffer, and a partial one left for later")
    func severalReplies() throws {
        var parser = RESPParser()
        var buffer = InboundBuffer(capacity: 64)
        buffer.append(Array("+A\r\n:2\r\n$3\r\nab".utf8))
        #expect(try parser.next(from: &buffer) == .simpleString("A"))
        #expect(try parser.next(from: &buffer) == .integer(2))
        #expect(try parser.next(from: &buffer) == nil)
        #expect(parser.isMidReply)
        buffer.append(Array("c\r\n".utf8))
        #expect(try parser.next(from: &buffer) == .bulk("abc"))
        #expect(!parser.isMidReply && buffer.isEmpty)
    }

    static let corpus = "+OK\r\n-ERR x y\r\n:-42\r\n$0\r\n\r\n$6\r\nfoo\r\nb\r\n$-1\r\n*-1\r\n*0\r\n"
        + "*4\r\n*2\r\n:1\r\n:2\r\n$2\r\nhi\r\n*1\r\n*1\r\n+deep\r\n-NOSCRIPT No matching script\r\n:7\r\n"

    @Test("any split parses like one read (the corpus of every type, cut at every byte)")
    func anySplitEquivalence() {
        let bytes = Array(Self.corpus.utf8)
        let whole = parse([bytes])
        #expect(whole.error == nil)
        #expect(whole.values.count == 10)
        for parts in splits(bytes) {
            let r = parse(parts)
            #expect(r.error == nil && r.values == whole.values && r.leftover == 0)
        }
    }

    @Test("bad replies are refused with the same error at any split", arguments: [
        ("x\r\n", RESPParseError.badTypeByte(UInt8(ascii: "x"))),
        ("_\r\n", .badTypeByte(UInt8(ascii: "_"))),          // RESP3 null
        ("%1\r\n+a\r\n+b\r\n", .badTypeByte(UInt8(ascii: "%"))),  // RESP3 map
        ("\r\n", .badTypeByte(13)),
        (":+1\r\n", .badInteger("+1")),
        (":01\r\n", .badInteger("01")),
        (":-0\r\n", .badInteger("-0")),
        (":\r\n", .badInteger("")),
        (":-\r\n", .badInteger("-")),
        (":1a\r\n", .badInteger("1a")),
        (": 1\r\n", .badInteger(" 1")),
        (":9223372036854775808\r\n", .badInteger("9223372036854775808")),
        (":-9223372036854775809\r\n", .badInteger("-9223372036854775809")),
        ("$-2\r\n", .badInteger("-2")),
        ("$01\r\nx\r\n", .badInteger("01")),
        ("$x\r\n", .badInteger("x")),
        ("*-2\r\n", .badInteger("-2")),
        ("*1x\r\n", .badInteger("1x")),
        ("+OK\n", .missingCRLF),
        ("+OK\rX\r\n", .missingCRLF),
        ("-E\nR\r\n", .missingCRLF),
        (":1\n", .missingCRLF),
        ("$3\r\nfooXY", .missingCRLF),
        ("$3\r\nfoo\rX", .missingCRLF),
        ("$3\r\nfoo\n\r", .missingCRLF),
        ("*2\r\n:1\r\n+ok\n", .missingCRLF),
        ("*1\r\n?\r\n", .badTypeByte(UInt8(ascii: "?"))),
    ])
    func badReplies(text: String, expected: RESPParseError) {
        for parts in splits(Array(text.utf8)) {
            let r = parse(parts)
            #expect(r.error == expected, "\(text.debugDescription) split \(parts.map(\.count))")
            #expect(r.values.isEmpty)
        }
    }

    @Test("a good reply before a bad one is delivered, then the parser stays failed")
    func failureIsSticky() throws {
        var parser = RESPParser()
        var buffer = InboundBuffer(capacity: 64)
        buffer.append(Array("+OK\r\n!\r\n+OK\r\n".utf8))
        #expect(try parser.next(from: &buffer) == .simpleString("OK"))
        #expect(throws: RESPParseError.badTypeByte(UInt8(ascii: "!"))) { try parser.next(from: &buffer) }
        #expect(throws: RESPParseError.badTypeByte(UInt8(ascii: "!"))) { try parser.next(from: &buffer) }
    }

    @Test("limits: line, bulk, array, depth and elements per reply")
    func limits() {
        var l = RESPParser.Limits()
        l.maxLineBytes = 8
        l.maxBulkBytes = 4
        l.maxArrayCount = 3
        l.maxDepth = 2
        l.maxReplyElements = 5
        // A line of exactly 8 bytes (type byte + 7) passes; 9 fail, at any split, even before
        // its end arrives.
        #expect(parse("+1234567\r\n", limits: l).values == [.simpleString("1234567")])
        for parts in splits(Array("+12345678\r\n".utf8)) {
            #expect(parse(parts, limits: l).error == .lineTooLong(limit: 8))
        }
        #expect(parse("+123456789", limits: l).error == .lineTooLong(limit: 8))
        #expect(parse("$4\r\nabcd\r\n", limits: l).values == [.bulk("abcd")])
        #expect(parse("$5\r\n", limits: l).error == .bulkTooLong(length: 5, limit: 4))
        #expect(parse("*3\r\n:1\r\n:2\r\n:3\r\n", limits: l).values.count == 1)
        #expect(parse("*4\r\n", limits: l).error == .arrayTooLong(count: 4, limit: 3))
        #expect(parse("*1\r\n*1\r\n:1\r\n", limits: l).values == [.array([.array([.integer(1)])])])
        #expect(parse("*1\r\n*1\r\n*1\r\n", limits: l).error == .tooDeep(limit: 2))
        // 1 array + 3 + 1 array + ... : the sixth value of one reply is refused.
        #expect(parse("*3\r\n:1\r\n:2\r\n*2\r\n:3\r\n:4\r\n", limits: l).error == .tooManyElements(limit: 5))
        // The count is per reply: five replies of one value each are fine.
        #expect(parse(":1\r\n:2\r\n:3\r\n:4\r\n:5\r\n:6\r\n", limits: l).values.count == 6)
        // The default limits refuse a length that could never be allocated.
        #expect(parse("$99999999999\r\n").error == .bulkTooLong(length: 99_999_999_999, limit: 64 * 1024 * 1024))
        #expect(parse("*2147483648\r\n").error == .arrayTooLong(count: 2_147_483_648, limit: 1 << 20))
    }

    @Test("commands are arrays of bulk strings")
    func encodeCommands() {
        #expect(RESPEncoder.command(["SET", "k", "v", "PX", "1000"])
                == Array("*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n1000\r\n".utf8))
        #expect(RESPEncoder.command(["ECHO", "é\r\n"]) == Array("*2\r\n$4\r\nECHO\r\n$4\r\né\r\n\r\n".utf8))
        #expect(RESPEncoder.command([]) == Array("*0\r\n".utf8))
        var wire: [UInt8] = []
        RESPEncoder.appendCommand(bytes: [Array("GET".utf8), [0, 13, 10, 255]], to: &wire)
        #expect(wire == Array("*2\r\n$3\r\nGET\r\n$4\r\n".utf8) + [0, 13, 10, 255, 13, 10])
        // What the encoder writes, the parser reads back.
        #expect(parse([wire]).values == [.array([.bulk("GET"), .bulkString([0, 13, 10, 255])])])
        // Simple strings and errors cannot carry CR or LF: they become spaces.
        #expect(RESPValue.error("a\r\nb").encoded == Array("-a  b\r\n".utf8))
    }

    @Test("SHA-1 of scripts matches the FIPS 180 test vectors")
    func sha1Vectors() {
        #expect(SHA1Digest.hex([]) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1Digest.hex(Array("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(SHA1Digest.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)) == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        #expect(SHA1Digest.hex(Array(repeating: UInt8(ascii: "a"), count: 1_000_000)) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }

    @Test("redis:// URLs", arguments: [
        ("redis://127.0.0.1:6379", "127.0.0.1", 6379, nil as String?, nil as String?, 0),
        ("redis://localhost", "localhost", 6379, nil, nil, 0),
        ("redis://10.0.0.5:6380/2", "10.0.0.5", 6380, nil, nil, 2),
        ("redis://:s3cret@h:1/0", "h", 1, nil, "s3cret", 0),
        ("redis://app:p%40ss@h:1", "h", 1, "app", "p@ss", 0),
        ("REDIS://[::1]:7000/15", "::1", 7000, nil, nil, 15),
        ("redis://h:1/", "h", 1, nil, nil, 0),
    ])
    func urls(text: String, host: String, port: Int, user: String?, password: String?, db: Int) throws {
        let url = try RedisURL(parsing: text)
        #expect(url.host == host && url.port == port && url.username == user && url.password == password && url.database == db)
        #expect(!url.description.contains("s3cret") && !url.description.contains("p@ss"))
    }

    @Test("bad redis:// URLs name the problem", arguments: [
        ("http://h:1", "not a redis URL"),
        ("rediss://h:1", "TLS"),
        ("redis://", "no host"),
        ("redis://h:0", "port must be 1-65535"),
        ("redis://h:99999", "port must be 1-65535"),
        ("redis://h:1/x", "database must be an integer"),
        ("redis://h:1/01", "database must be an integer"),
        ("redis://h:1/65536", "database must be an integer"),
        ("redis://h:1/2/3", "database must be an integer"),
        ("redis://h:1?db=2", "query"),
        ("redis://pw@h:1", "credentials must be"),
        ("redis://:@h:1", "empty password"),
        ("redis://:%zz@h:1", "percent-encoding"),
        ("redis://h h:1", "invalid host"),
    ])
    func badURLs(text: String, problem: String) {
        #expect {
            try RedisURL(parsing: text)
        } throws: { error in
            "\(error)".contains(problem)
        }
    }
}
