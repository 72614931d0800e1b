import Glibc
import Testing
@testable import LBKitHTTP
import LBKitPolicy

/// Conversions from kernel socket addresses to throttling keys (they live in the HTTP engine,
/// the only layer that sees `sockaddr`).
@Suite struct SocketAddressClientTests {
    @Test func fromSockaddrStorage() throws {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { raw in
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = UInt16(8080).bigEndian
            sin.sin_addr.s_addr = UInt32(0xCB00_7107).bigEndian
            raw.storeBytes(of: sin, as: sockaddr_in.self)
        }
        #expect(ClientAddress(storage) == ClientAddress("203.0.113.7"))

        for (text, expected) in [("2001:db8::1", "2001:db8::1"), ("::ffff:10.1.2.3", "10.1.2.3")] {
            var storage6 = sockaddr_storage()
            let address = try #require(ClientAddress(text))
            withUnsafeMutableBytes(of: &storage6) { raw in
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                withUnsafeMutableBytes(of: &sin6.sin6_addr) { dst in
                    for (i, b) in address.bytes.enumerated() { dst[i] = b }
                }
                raw.storeBytes(of: sin6, as: sockaddr_in6.self)
            }
            #expect(ClientAddress(storage6)?.description == expected)
        }

        var unix = sockaddr_storage()
        unix.ss_family = sa_family_t(AF_UNIX)
        #expect(ClientAddress(unix) == nil)
    }

}
