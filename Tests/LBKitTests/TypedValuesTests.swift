import Testing
@testable import LBKitHTTP

/// Method and status as typed values over the wire tokens.
@Suite struct TypedValuesTests {
    @Test func methods() {
        var head = RequestHead(method: "POST", target: "/")
        #expect(head.requestMethod == .post)
        #expect(!head.requestMethod.isIdempotent)
        head.requestMethod = .put
        #expect(head.method == "PUT")
        #expect(head.requestMethod.isIdempotent)
        #expect(RequestMethod(rawValue: "BREW").isIdempotent == false)
    }

    @Test func statuses() {
        var head = ResponseHead(status: 502)
        #expect(head.responseStatus == .badGateway)
        #expect(head.responseStatus.kind == .serverError)
        head.responseStatus = .tooManyRequests
        #expect(head.status == 429 && head.reason == "Too Many Requests")
        #expect(ResponseStatus(code: 799).kind == .invalid)
        #expect(ResponseStatus(code: 204, reasonPhrase: "Nothing").description == "204 Nothing")
    }
}
