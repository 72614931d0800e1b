import Testing
import LBKitHTTP

/// The byte-level access framework integrations use to convert headers without a string per
/// name (`forEachField`) and to build a list with one allocation (`reserveCapacity`).
@Suite("HeaderFields byte-level access for integrations")
struct HeaderFieldsBytesTests {
    @Test("forEachField gives every name and value as stored, in order, after removals too")
    func forEachFieldInOrder() {
        var headers = HeaderFields([("Host", "example.com"), ("X-Drop", "1"), ("content-type", "text/plain"), ("Empty", "")])
        headers.remove(name: "x-drop")
        var seen: [String] = []
        headers.forEachField { name, value in
            seen.append(String(decoding: name, as: UTF8.self) + "=" + String(decoding: value, as: UTF8.self))
        }
        #expect(seen == ["Host=example.com", "content-type=text/plain", "Empty="])
        var count = 0
        HeaderFields().forEachField { _, _ in count += 1 }
        #expect(count == 0)
    }

    @Test("reserveCapacity keeps the fields and what is added after it")
    func reserveThenAdd() {
        var headers: HeaderFields = ["A": "1"]
        headers.reserveCapacity(fields: 2, bytes: 20)
        headers.add(name: "B", value: "22")
        headers.add(name: "C", value: "333")
        #expect(headers.count == 3)
        #expect(headers.fields.map { "\($0.name)=\($0.value)" } == ["A=1", "B=22", "C=333"])
    }
}
