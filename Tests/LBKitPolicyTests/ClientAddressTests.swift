import Testing

@testable import LBKitPolicy

@Suite("ClientAddress and CIDRRange")
struct ClientAddressTests {
    @Test("IPv4 parses and formats back", arguments: [
        "0.0.0.0", "1.2.3.4", "10.0.0.1", "203.0.113.7", "255.255.255.255", "192.168.100.200",
    ])
    func ipv4RoundTrip(_ text: String) throws {
        let address = try #require(ClientAddress(text))
        #expect(address.isIPv4)
        #expect(address.description == text)
        #expect(ClientAddress(address.description) == address)
    }

    @Test func ipv4ValueAndMapping() throws {
        let address = try #require(ClientAddress("203.0.113.7"))
        #expect(address.ipv4 == 0xCB00_7107)
        #expect(address == ClientAddress(ipv4: 0xCB00_7107))
        #expect(address.high == 0)
        #expect(address.low == 0x0000_FFFF_CB00_7107)
        #expect(address.bytes == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 203, 0, 113, 7])
        #expect(ClientAddress(bytes: [203, 0, 113, 7] as [UInt8]) == address)
        #expect(ClientAddress(bytes: [1, 2, 3] as [UInt8]) == nil)
    }

    @Test("Garbage is rejected", arguments: [
        "", "1.2.3", "256.1.1.1", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "1.2.3.", ".1.2.3", "1..2.3",
        " 1.2.3.4", "1.2.3.4 ", "1.2.3.-4", "a.b.c.d", "1.2.3.4:80", "1000.1.1.1", "1.2.3.4/8",
        "1::2::3", ":::", ":1::", "1::2:", "1:", ":", "12345::", "g::1", "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "[::1]", "fe80::1%eth0",
        "::ffff:1.2.3", "::ffff:256.2.3.4", "::1.2.3.4:5", "1:2:3:4:5:6:7:1.2.3.4", "::ffff:01.2.3.4",
        "localhost", "unknown", "２.3.4.5", "1.2.3.4\0", "0x1.2.3.4",
    ])
    func rejects(_ text: String) {
        #expect(ClientAddress(text) == nil)
    }

    @Test("IPv6 formats per RFC 5952", arguments: [
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"),
        ("2001:db8::0:1", "2001:db8::1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("0:0:0:0:0:0:0:0", "::"),
        ("::", "::"),
        ("::1", "::1"),
        ("1::", "1::"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        ("FE80::ABCD:12", "fe80::abcd:12"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ])
    func ipv6Canonical(_ input: String, _ expected: String) throws {
        let address = try #require(ClientAddress(input))
        #expect(!address.isIPv4)
        #expect(address.description == expected)
        #expect(ClientAddress(expected) == address)
    }

    @Test func ipv4MappedIPv6IsTheIPv4Key() throws {
        let mapped = try #require(ClientAddress("::ffff:1.2.3.4"))
        #expect(mapped == ClientAddress("1.2.3.4"))
        #expect(mapped == ClientAddress("::FFFF:0102:0304"))
        #expect(mapped.isIPv4)
        #expect(mapped.description == "1.2.3.4")
        #expect(mapped.ipv6Description == "::ffff:1.2.3.4")
        #expect(try #require(ClientAddress("2001:db8::1")).ipv6Description == "2001:db8::1")
    }

    @Test func randomAddressesRoundTrip() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let v6 = ClientAddress(high: rng.next(), low: rng.next() & (rng.next() % 2 == 0 ? .max : 0xFFFF_0000_FFFF))
            #expect(ClientAddress(v6.description) == v6)
            #expect(ClientAddress(v6.ipv6Description) == v6)
            let v4 = ClientAddress(ipv4: rng.next())
            #expect(ClientAddress(v4.description) == v4)
            #expect(ClientAddress(v4.ipv6Description) == v4)
        }
    }

    @Test func parsesSubstrings() {
        let line = "for=198.51.100.9;by=x"
        let slice = line.dropFirst(4).prefix(12)
        #expect(ClientAddress(slice) == ClientAddress(ipv4: 0xC633_6409))
    }

    @Test func cidrContains() throws {
        let ten = try #require(CIDRRange("10.0.0.0/8"))
        #expect(ten.contains(try #require(ClientAddress("10.0.0.0"))))
        #expect(ten.contains(try #require(ClientAddress("10.255.255.255"))))
        #expect(ten.contains(try #require(ClientAddress("::ffff:10.1.2.3"))))
        #expect(!ten.contains(try #require(ClientAddress("11.0.0.0"))))
        #expect(!ten.contains(try #require(ClientAddress("9.255.255.255"))))
        #expect(!ten.contains(try #require(ClientAddress("::a00:1"))))  // IPv4-compatible, not mapped
        #expect(ten.isIPv4 && ten.prefixLength == 8 && ten.description == "10.0.0.0/8")

        let pair = try #require(CIDRRange("192.0.2.0/31"))
        #expect(pair.contains(try #require(ClientAddress("192.0.2.1"))))
        #expect(!pair.contains(try #require(ClientAddress("192.0.2.2"))))

        let host = try #require(CIDRRange("192.0.2.1"))
        #expect(host.prefixLength == 32 && host.description == "192.0.2.1/32")
        #expect(host.contains(try #require(ClientAddress("192.0.2.1"))))
        #expect(!host.contains(try #require(ClientAddress("192.0.2.0"))))

        let loopback6 = try #require(CIDRRange("::1/128"))
        #expect(loopback6.contains(try #require(ClientAddress("::1"))))
        #expect(!loopback6.contains(try #require(ClientAddress("::2"))))
        #expect(CIDRRange("::1") == loopback6)

        let doc = try #require(CIDRRange("2001:db8::/32"))
        #expect(doc.contains(try #require(ClientAddress("2001:db8:ffff::1"))))
        #expect(!doc.contains(try #require(ClientAddress("2001:db9::1"))))

        let crossing = try #require(CIDRRange("2001:db8:0:0:8000::/65"))
        #expect(crossing.contains(try #require(ClientAddress("2001:db8::ffff:1:2:3"))))
        #expect(!crossing.contains(try #require(ClientAddress("2001:db8::7fff:1:2:3"))))
        #expect(!crossing.contains(try #require(ClientAddress("2001:db8:0:1:8000::"))))

        let allV4 = try #require(CIDRRange("0.0.0.0/0"))
        #expect(allV4.contains(try #require(ClientAddress("255.1.2.3"))))
        #expect(!allV4.contains(try #require(ClientAddress("2001:db8::1"))))
        let all = try #require(CIDRRange("::/0"))
        #expect(all.contains(try #require(ClientAddress("2001:db8::1"))))
        #expect(all.contains(try #require(ClientAddress("1.2.3.4"))))

        // Host bits are cleared.
        #expect(CIDRRange("10.1.2.3/8") == ten)
        #expect(CIDRRange("2001:db8::1/32")?.description == "2001:db8::/32")
        #expect(CIDRRange(address: try #require(ClientAddress("10.9.9.9")), prefixLength: 8) == ten)
        #expect(CIDRRange(address: try #require(ClientAddress("10.9.9.9")), prefixLength: 33) == nil)
    }

    @Test("Bad CIDR text is rejected", arguments: [
        "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08", "/8", "10.0.0.0/-1", "10.0.0.0/+8",
        "10.0.0.0/8/8", "garbage/8", "10.0.0/8", "10.0.0.0/ 8", "", "/", "10.0.0.0/1000",
    ])
    func cidrRejects(_ text: String) {
        #expect(CIDRRange(text) == nil)
    }
}
