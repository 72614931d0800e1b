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
