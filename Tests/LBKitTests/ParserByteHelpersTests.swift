import Testing
@testable import LBKitHTTP

/// The parser's per-byte helpers are written for speed (bit sets, 8-byte words); these compare
/// them with their plain definitions over every byte and many spellings.
@Suite("Parser byte helpers")
struct ParserByteHelpersTests {
    @Test("isToken is exactly tchar (RFC 9110 5.6.2) for all 256 byte values")
    func tokenSet() {
        let tchar = Set(Array("!#$%&'*+-.^_`|~0123456789".utf8) + Array("abcdefghijklmnopqrstuvwxyz".utf8)
                        + Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8))
        for b in 0...255 {
            #expect(HTTP1Scan.isToken(UInt8(b)) == tchar.contains(UInt8(b)), "byte \(b)")
        }
    }

    @Test("isRegNameByte is exactly unreserved or sub-delims without the comma (RFC 3986 2.2, 2.3) for all 256 byte values")
    func regNameSet() {
        let unreserved = Set(Array("-._~0123456789".utf8) + Array("abcdefghijklmnopqrstuvwxyz".utf8)
                             + Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8))
        let subDelims = Set(Array("!$&'()*+,;=".utf8))
        for b in 0...255 {
            let byte = UInt8(b)
            let expected = (unreserved.contains(byte) || subDelims.contains(byte)) && byte != UInt8(ascii: ",")
            #expect(HTTP1Syntax.isRegNameByte(byte) == expected, "byte \(b)")
            #expect(HTTP1Syntax.isRegNameByte(byte) == ((HTTP1Syntax.isUnreserved(byte) || HTTP1Syntax.isSubDelim(byte)) && b != 0x2C))
        }
    }

    @Test("lettersOrDashes marks exactly the letters and dashes of a word, every byte value at every position, between any neighbours")
    func lettersOrDashesWord() {
        func plain(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D }
        // Neighbours that provoke carries and borrows in word arithmetic: 0x00, '-', 0x7F, 0x80, 0xFF, ','.
        for neighbour: UInt8 in [0x00, 0x2C, 0x2D, 0x41, 0x7A, 0x7F, 0x80, 0xE1, 0xFF] {
            for position in 0..<8 {
                for b in 0...255 {
                    var bytes = [UInt8](repeating: neighbour, count: 8)
                    bytes[position] = UInt8(b)
                    let w = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
                    let mask = HTTP1Scan.lettersOrDashes(w)
                    for k in 0..<8 {
                        let marked = (mask >> UInt64(8 * k + 7)) & 1 == 1
                        #expect(marked == plain(bytes[k]), "byte \(bytes[k]) at \(k), word \(bytes)")
                        #expect((mask >> UInt64(8 * k)) & 0x7F == 0)
                    }
                }
            }
        }
    }

    @Test("field names parse the same through the word scan: every tchar and non-tchar at every offset of a long name")
    func nameScan() throws {
        for b in 0...255 {
            for offset in 0..<20 {
                var name = Array("X-Very-Long-Header-Name-Here".utf8)
                name[offset] = UInt8(b)
                let isTchar = HTTP1Scan.isToken(UInt8(b))
                let line = name + Array(": v".utf8)
                let result = line.withUnsafeBytes { p in Result { () throws(HTTPParseError) in try HTTP1Scan.splitFieldLine(p, 0, p.count) } }
                switch result {
                case .success(let split):
                    // A colon ends the name early; anything else is accepted only as a tchar.
                    #expect(isTchar || (b == 0x3A && offset > 0), "byte \(b) at \(offset) accepted")
                    #expect(split.nameEnd == (b == 0x3A ? offset : name.count))
                case .failure:
                    #expect(!isTchar, "byte \(b) at \(offset) rejected")
                    #expect(b != 0x3A || offset == 0)
                }
            }
        }
    }

    @Test("equalsLowercase matches an ASCII case-insensitive comparison, at every length and for near misses")
    func equalsLowercase() {
        let literals: [StaticString] = ["host", "expect", "connection", "content-length", "transfer-encoding",
                                        "chunked", "close", "keep-alive", "100-continue"]
        for literal in literals {
            let l = String(decoding: UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount), as: UTF8.self)
            var candidates = [l, l.uppercased(), l.capitalized, "x" + l, String(l.dropLast()), String(l.dropFirst()) + "a"]
            // Every single-byte change, including the characters that fold onto a literal byte
            // with bit 5 set ('^' vs '~', '@' vs '`') and the other case of each letter (control
            // bytes among them are left out below).
            let bytes = Array(l.utf8)
            for i in bytes.indices {
                for b: UInt8 in [0x5E, 0x7E, 0x40, 0x60, 0x0D, bytes[i] ^ 0x20, bytes[i] &+ 1] {
                    var changed = bytes
                    changed[i] = b
                    candidates.append(String(decoding: changed, as: UTF8.self))
                }
            }
            // Control bytes never get here: names are tchar and values pass isValidFieldValue first.
            for candidate in candidates where !candidate.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
                let raw = Array(("  " + candidate + "  ").utf8)
                let expected = candidate.utf8.count == bytes.count
                    && zip(candidate.utf8, bytes).allSatisfy { a, b in (a >= 0x41 && a <= 0x5A ? a | 0x20 : a) == b }
                let got = raw.withUnsafeBytes { p in HTTP1Scan.equalsLowercase(p, 2, raw.count - 2, literal) }
                #expect(got == expected, "\(candidate) vs \(l)")
            }
        }
    }
}
