import Testing

@testable import LBKitPolicy

@Suite("ClientIdentityResolver (X-Forwarded-For)")
struct ClientAddressResolverTests {
    private func address(_ text: String) throws -> ClientAddress { try #require(ClientAddress(text)) }

    private func resolver(_ ranges: String...) throws -> ClientIdentityResolver {
        ClientIdentityResolver(trustedProxies: try ranges.map { try #require(CIDRRange($0)) })
    }

    @Test func defaultNeverTrustsForwardedFor() throws {
        let resolver = ClientIdentityResolver()
        let peer = try address("10.0.0.1")
        #expect(resolver.trustedProxies.isEmpty)
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.9"]) == peer)
    }

    @Test func untrustedPeerIgnoresForwardedFor() throws {
        let resolver = try resolver("10.0.0.0/8")
        let peer = try address("203.0.113.7")
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.9", "10.0.0.2"]) == peer)
    }

    @Test func trustedPeerTakesRightmostUntrusted() throws {
        let resolver = try resolver("10.0.0.0/8", "192.168.0.0/16")
        let peer = try address("10.0.0.1")
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.9, 192.168.1.1, 10.0.0.2"])
            == ClientAddress("198.51.100.9"))
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.9"]) == ClientAddress("198.51.100.9"))
        #expect(resolver.resolve(peer: peer, forwardedFor: []) == peer)
    }

    @Test func spoofedLeftEntriesAreIgnored() throws {
        let resolver = try resolver("10.0.0.0/8")
        let peer = try address("10.0.0.1")
        // The client sent "X-Forwarded-For: 6.6.6.6, 1.1.1.1"; our proxies appended after it.
        #expect(resolver.resolve(peer: peer, forwardedFor: ["6.6.6.6, 1.1.1.1, 198.51.100.9, 10.0.0.2"])
            == ClientAddress("198.51.100.9"))
        // Several fields form one list in wire order.
        #expect(resolver.resolve(peer: peer, forwardedFor: ["6.6.6.6", "198.51.100.9", "10.0.0.3, 10.0.0.2"])
            == ClientAddress("198.51.100.9"))
        // A spoofed trusted-looking address left of the real client changes nothing.
        #expect(resolver.resolve(peer: peer, forwardedFor: ["10.9.9.9, 198.51.100.9"]) == ClientAddress("198.51.100.9"))
    }

    @Test func garbageStopsTheWalkAtTheLastTrustedHop() throws {
        let resolver = try resolver("10.0.0.0/8")
        let peer = try address("10.0.0.1")
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.9, garbage, 10.0.0.2"]) == ClientAddress("10.0.0.2"))
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.9", "unknown"]) == peer)
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.9, 1.2.3.4:5678"]) == peer)
        #expect(resolver.resolve(peer: peer, forwardedFor: ["198.51.100.9, 256.0.0.1, 10.0.0.7"]) == ClientAddress("10.0.0.7"))
    }

    @Test func allTrustedYieldsLeftmost() throws {
        let resolver = try resolver("10.0.0.0/8")
        let peer = try address("10.0.0.1")
        #expect(resolver.resolve(peer: peer, forwardedFor: ["10.0.0.3, 10.0.0.2"]) == ClientAddress("10.0.0.3"))
        #expect(resolver.resolve(peer: peer, forwardedFor: ["garbage, 10.0.0.3, 10.0.0.2"]) == ClientAddress("10.0.0.3"))
    }

    @Test func whitespaceAndEmptyElementsAreIgnored() throws {
        let resolver = try resolver("10.0.0.0/8")
        let peer = try address("10.0.0.1")
        #expect(resolver.resolve(peer: peer, forwardedFor: [" 198.51.100.9 ,\t, 10.0.0.2 ,", ""]) == ClientAddress("198.51.100.9"))
        #expect(resolver.resolve(peer: peer, forwardedFor: [",,", " "]) == peer)
    }

    @Test func ipv6Proxies() throws {
        let resolver = try resolver("2001:db8:100::/48", "::1")
        let peer = try address("::1")
        #expect(resolver.resolve(peer: peer, forwardedFor: ["2001:db8:cafe::17, 2001:db8:100::5"])
            == ClientAddress("2001:db8:cafe::17"))
        #expect(resolver.resolve(peer: peer, forwardedFor: ["203.0.113.7,2001:db8:100::5"]) == ClientAddress("203.0.113.7"))
        #expect(resolver.isTrusted(try address("2001:db8:100:ffff::1")))
        #expect(!resolver.isTrusted(try address("2001:db8:101::1")))
    }
}
