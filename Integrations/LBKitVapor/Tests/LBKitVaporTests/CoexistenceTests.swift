// Coexistence check: LBKit next to Vapor, SwiftNIO, AsyncHTTPClient and swift-http-types, every
// name unqualified. This file compiling is the check; the test also runs the two stacks against
// each other (an LBKit server answering AsyncHTTPClient).
//
// The two collisions found here first (swift-log 1.16's `LogEvent`, NIOCore's `SocketAddressError`)
// were fixed in LBKit by renaming its types to `LBLogEvent` and `IPSocketAddressError`.
import AsyncHTTPClient
import Dispatch
import HTTPTypes
import LBKit
import LBKitVapor
import NIOCore
import NIOHTTP1
import Testing
import Vapor

@Suite struct CoexistenceTests {
    @Test func lbkitNamesAndTheirsCoexistUnqualified() async throws {
        // LBKit's names.
        var fields = HeaderFields()
        fields.add(name: "Host", value: "coexist.example")
        let head = RequestHead(method: "GET", target: "/hello", version: .http1_1, headers: fields)
        let request = LBRequest(head: head, body: [])
        let context = LBRequestContext(client: ClientAddress("127.0.0.1"))
        let ok = LBResponse(head: ResponseHead(status: 200, headers: ["Content-Type": "text/plain"]), body: Array("hi\n".utf8))
        let reason: String = ResponseStatus.reasonPhrase(429)
        let replay = ReplayPolicy(retryNonIdempotent: false)
        let lbAddress: IPSocketAddress = try IPSocketAddress(host: "127.0.0.1", port: 8080)
        let upstreamRequest = UpstreamRequest(head: head, body: [], mayReplay: nil)
        let upstreamClient = UpstreamClient(configuration: UpstreamClientConfiguration())
        let upstreamError = UpstreamError(kind: .connectRefused, requestSent: false)
        let upstreamResponse: UpstreamResponse? = nil
        let balancerType: LoadBalancer.Type = LoadBalancer.self
        let event = LBLogEvent(level: .info, category: .lifecycle, message: "coexisting")
        let lbGroup = try LBEventLoopGroup(loopCount: 1, namePrefix: "coexist")
        let server = HTTP1Server(configuration: HTTP1ServerConfiguration(host: "127.0.0.1", port: 0), group: lbGroup,
                                 handler: ClosureHandler { _, _ in ok })

        // Theirs.
        let status: HTTPStatus = .tooManyRequests
        let version: HTTPVersion = .http1_1
        var headers = HTTPHeaders()
        headers.add(name: "Accept", value: "text/plain")
        let nioGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
        let nioAddress: SocketAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 8080)
        let typedRequest = HTTPRequest(method: .get, scheme: "http", authority: "coexist.example", path: "/hello")
        let vaporServerType: HTTPServer.Type = HTTPServer.self
        let httpClient = HTTPClient(eventLoopGroup: nioGroup)

        #expect(request.headers.first(name: "host") == "coexist.example")
        #expect(context.clientAddress?.isLoopback == true)
        #expect(reason == status.reasonPhrase)
        #expect(replay.mayReplay(method: "GET", hasIdempotencyKey: false))
        #expect(lbAddress.port == 8080 && nioAddress.port == 8080)
        #expect(upstreamRequest.head.target == typedRequest.path)
        #expect(upstreamClient.configuration.connectTimeout > .zero)
        #expect(!upstreamError.requestSent)
        #expect(upstreamResponse == nil)
        #expect(balancerType == LoadBalancer.self && vaporServerType == HTTPServer.self)
        #expect(event.line == "[LIFECYCLE] coexisting")
        #expect(version.major == 1 && head.version == .http1_1)

        // An LBKit server answering AsyncHTTPClient.
        let port = try server.start().port
        do {
            var clientRequest = HTTPClientRequest(url: "http://127.0.0.1:\(port)/hello")
            clientRequest.headers = headers
            let response = try await httpClient.execute(clientRequest, timeout: .seconds(5))
            #expect(response.status == .ok)
            #expect(String(buffer: try await response.body.collect(upTo: 1024)) == "hi\n")
        } catch {
            Issue.record("\(error)")
        }
        try await httpClient.shutdown()
        await server.shutdown(timeout: .seconds(2))
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                lbGroup.shutdown()
                c.resume()
            }
        }
    }
}
