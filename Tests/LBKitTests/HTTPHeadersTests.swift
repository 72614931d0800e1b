import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite("HTTP headers")
struct HTTPHeadersTests {
    @Test("names compare case-insensitively for ASCII letters only")
    func namesEqual() {
        #expect(HeaderFields.namesEqual("Content-Length", "content-length"))
        #expect(HeaderFields.namesEqual("X-FORWARDED-FOR", "x-forwarded-for"))
        #expect(!HeaderFields.namesEqual("Content-Length", "Content-Lengt"))
        #expect(!HeaderFields.namesEqual("a[", "a{"))    // 0x5B vs 0x7B differ by 0x20 but are not letters
        #expect(!HeaderFields.namesEqual("x@", "x`"))    // 0x40 vs 0x60 likewise
        #expect(!HeaderFields.namesEqual("TE", "Te-"))
        #expect(HeaderFields.namesEqual("", ""))
    }

    @Test("hop-by-hop stripping removes listed and Connection-named fields, keeps the rest in order")
    func stripHopByHop() {
        var h: HeaderFields = [:]
        for (n, v) in [("Host", "a"), ("connection", "close, X-Private"), ("x-private", "1"), ("KEEP-ALIVE", "5"),
                       ("Accept", "*/*"), ("Transfer-Encoding", "chunked"), ("Content-Length", "3"), ("X-Kept", "yes")] {
            h.add(name: n, value: v)
        }
        ForwardingHeaders.stripHopByHop(&h)
        #expect(h.fields.map(\.name) == ["Host", "Accept", "X-Kept"])
    }
}
