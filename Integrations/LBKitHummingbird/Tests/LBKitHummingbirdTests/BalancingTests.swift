import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LBKit
@testable import LBKitHummingbird
import LBKitTesting
import Logging
import NIOCore
import Testing

/// All integration tests run one after the other: they start servers and time throttling.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct IntegrationTests {}

extension IntegrationTests {
    @Test("the app run on the balancer's loops (withTaskExecutorPreference): handlers run on a loop, round robin kept")
    func onBalancerLoops() async throws {
        let backends = try EchoBackends(count: 3)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls))
        let group = balancer.eventLoopGroup
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api", stripPathPrefix: true))
        // Answers whether Hummingbird's connection task inherited the preference: on a loop thread?
        router.get("/where") { _, _ in group.currentLoop == nil ? "elsewhere" : "loop" }
        var app = Application(router: router, logger: quietLogger)
        app.addServices(LoadBalancerService(balancer: balancer))

        let (handled, places) = try await withTaskExecutorPreference(group) {
            try await app.test(.live) { client -> ([Int], [String]) in
                var handled: [Int] = []
                var places: [String] = []
                for _ in 0..<6 {
                    let response = try await client.execute(uri: "/api/x", method: .get)
                    #expect(response.status == .ok)
                    handled.append(handledBy(response.body.bytes) ?? -1)
                    places.append(String(buffer: try await client.execute(uri: "/where", method: .get).body))
                }
                return (handled, places)
            }
        }
        #expect(places == Array(repeating: "loop", count: 6))
        let ports = backends.ports
        let start = try #require(ports.firstIndex(of: handled[0]))
        #expect(handled == (0..<6).map { ports[(start + $0) % 3] })
        try await backends.shutdown()
    }

    @Test("strict round robin over 3 echo backends, in backend order; backend header (renamed) hidden; other routes local")
    func roundRobin() async throws {
        let backends = try EchoBackends(count: 3)
        var configuration = try testConfiguration(backends.urls)
        configuration.backendHeader = "X-Upstream"   // the middleware removes the balancer's name for it
        let balancer = try LoadBalancer(configuration: configuration)
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api", stripPathPrefix: true))
        router.get("/hello") { _, _ in "hello from hummingbird\n" }
        var app = Application(router: router, logger: quietLogger)
        app.addServices(LoadBalancerService(balancer: balancer))

        let handled = try await app.test(.live) { client in
            var handled: [Int] = []
            for _ in 0..<6 {
                let response = try await client.execute(uri: "/api/x", method: .post,
                                                        headers: [.contentType: "application/json"],
                                                        body: ByteBuffer(string: #"{"msg":"hi"}"#))
                #expect(response.status == .ok)
                #expect(response.headers[HTTPField.Name("X-Backend")!] == nil)
                #expect(response.headers[HTTPField.Name("X-Upstream")!] == nil)
                let object = jsonObject(response.body.bytes)
                #expect(object?["msg"] as? String == "hi")
                handled.append(handledBy(response.body.bytes) ?? -1)
            }
            let local = try await client.execute(uri: "/hello", method: .get)
            #expect(local.status == .ok)
            #expect(String(buffer: local.body) == "hello from hummingbird\n")
            return handled
        }
        // Each request goes to the backend after the previous one, in configuration order.
        let ports = backends.ports
        let start = try #require(ports.firstIndex(of: handled[0]))
        #expect(handled == (0..<6).map { ports[(start + $0) % 3] })
        try await backends.shutdown()
    }

    @Test("a stopped backend is skipped: every request still answered 200 by the others")
    func failover() async throws {
        let backends = try EchoBackends(count: 3)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls))
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api"))
        var app = Application(router: router, logger: quietLogger)
        app.addServices(LoadBalancerService(balancer: balancer))

        try await app.test(.live) { client in
            for _ in 0..<3 {
                let response = try await client.execute(uri: "/api/items", method: .get)
                #expect(response.status == .ok)
            }
            try await backends.stop(1)
            var handled: [Int] = []
            for _ in 0..<9 {
                let response = try await client.execute(uri: "/api/items", method: .get)
                #expect(response.status == .ok)
                handled.append(handledBy(response.body.bytes) ?? -1)
            }
            #expect(!handled.contains(backends.ports[1]))
            #expect(Set(handled) == [backends.ports[0], backends.ports[2]])
        }
        try await backends.shutdown()
    }

    @Test("a body over maxBodyBytes is answered 413 JSON; one at the limit is forwarded")
    func bodyLimit() async throws {
        let backends = try EchoBackends(count: 1)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls) { $0.maxBodyBytes = 1024 })
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api"))
        // The balancer outlives two servers here, so it is stopped by hand at the end.
        let app = Application(router: router, logger: quietLogger)

        let fits = #"{"pad":""# + String(repeating: "a", count: 1024 - 10) + #""}"#
        let tooBig = #"{"pad":""# + String(repeating: "a", count: 1025 - 10) + #""}"#
        #expect(fits.utf8.count == 1024 && tooBig.utf8.count == 1025)
        try await app.test(.live) { client in
            let ok = try await client.execute(uri: "/api/upload", method: .post, headers: [.contentType: "application/json"],
                                              body: ByteBuffer(string: fits))
            #expect(ok.status == .ok)
            #expect(handledBy(ok.body.bytes) == backends.ports[0])
            let rejected = try await client.execute(uri: "/api/upload", method: .post, headers: [.contentType: "application/json"],
                                                    body: ByteBuffer(string: tooBig))
            #expect(rejected.status == .contentTooLarge)
            #expect(rejected.headers[.contentType] == "application/json")
            #expect(jsonObject(rejected.body.bytes)?["status"] as? Int == 413)
        }

        // Declared too large: answered before the body is read, with `Connection: close` so the
        // client stops sending (Hummingbird itself drains what still comes).
        try await withRunningApp(router: router) { port in
            let reply = try await RawHTTP.exchange(
                port: port, head: "POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000",
                body: Array(#"{"a":"#.utf8), awaitClose: false)
            #expect(reply.status == 413)
            #expect(reply.header("Connection") == "close")
            #expect(jsonObject(reply.body)?["status"] as? Int == 413)
        }
        balancer.shutdown()
        try await withDeadline(.seconds(5), "balancer run") { try await balancer.run() }
        try await backends.shutdown()
    }

    @Test("Host from :authority, X-Forwarded-For gets the real peer, prefix stripped, query kept; X-Backend on request")
    func forwardedRequest() async throws {
        let group = try LBEventLoopGroup(loopCount: 1, namePrefix: "headers-backend")
        let backend = HTTP1Server(configuration: HTTP1ServerConfiguration(host: "127.0.0.1", port: 0), group: group,
                                  handler: ClosureHandler { request, _ in
                                      let fields = request.headers.map { "\($0.name.lowercased())=\($0.value)" }.joined(separator: "\n")
                                      return LBResponse(status: 200, body: Array("\(request.method) \(request.target)\n\(fields)".utf8))
                                  })
        let address = try backend.start()
        let balancer = try LoadBalancer(configuration: testConfiguration(["http://127.0.0.1:\(address.port)"]))
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api/", stripPathPrefix: true,
                                                      exposeBackendHeader: true))

        try await withRunningApp(router: router, services: [LoadBalancerService(balancer: balancer)]) { port in
            let reply = try await RawHTTP.request("GET", "/api/echo/path?q=1", port: port, from: "127.0.0.3",
                                                  headers: [("X-Forwarded-For", "198.51.100.7"), ("X-Custom", "kept")])
            #expect(reply.status == 200)
            let lines = reply.text.split(separator: "\n").map(String.init)
            #expect(lines.first == "GET /echo/path?q=1")
            #expect(lines.contains("host=127.0.0.1:\(port)"))
            #expect(lines.contains("x-forwarded-for=198.51.100.7, 127.0.0.3"))
            #expect(lines.contains("x-custom=kept"))
            #expect(reply.header("X-Backend") == "http://127.0.0.1:\(address.port)")

            let root = try await RawHTTP.request("GET", "/api?x=y", port: port)
            #expect(root.text.hasPrefix("GET /?x=y\n"))
            let outside = try await RawHTTP.request("GET", "/apix", port: port)
            #expect(outside.status == 404)
        }
        await backend.shutdown(timeout: .seconds(2))
        group.shutdown()
    }

    @Test("router.balance: one call balances a prefix, the returned service runs the balancer")
    func oneCallBalance() async throws {
        let backends = try EchoBackends(count: 3)
        let router = Router(context: BalancerRequestContext.self)
        let service = try router.balance("/api", across: backends.urls, rateLimit: 100, logger: quietLogger) {
            $0.loopCount = 1
        }
        router.get("/hello") { _, _ in "hi" }
        var app = Application(router: router, logger: quietLogger)
        app.addServices(service)
        try await app.test(.live) { client in
            var handled: [Int] = []
            for _ in 0..<3 {
                let response = try await client.execute(uri: "/api/x", method: .post, headers: [.contentType: "application/json"],
                                                        body: ByteBuffer(string: #"{"msg":"hi"}"#))
                #expect(response.status == .ok)
                handled.append(handledBy(response.body.bytes) ?? -1)
            }
            #expect(Set(handled) == Set(backends.ports))
            #expect(try await client.execute(uri: "/hello", method: .get).status == .ok)
        }
        #expect(service.balancer.configuration.rateLimit == 100)
        try await backends.shutdown()
    }

    @Test("health, stats and metrics handlers mount where the app wants them")
    func endpoints() async throws {
        let backends = try EchoBackends(count: 2)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls))
        let router = Router(context: BalancerRequestContext.self)
        router.addLoadBalancerEndpoints(balancer, health: "/healthz", stats: "/admin/lb/stats", metrics: "/metrics")
        let app = Application(router: router, logger: quietLogger)
        try await app.test(.router) { client in
            let health = try await client.execute(uri: "/healthz", method: .get)
            #expect(health.status == .ok)
            #expect(jsonObject(health.body.bytes)?["status"] as? String == "ok")
            let stats = try await client.execute(uri: "/admin/lb/stats", method: .get)
            #expect((jsonObject(stats.body.bytes)?["backends"] as? [Any])?.count == 2)
            let metrics = try await client.execute(uri: "/metrics", method: .get)
            #expect(metrics.headers[.contentType]?.hasPrefix("text/plain") == true)
            #expect(String(buffer: metrics.body).contains("lb_requests_total"))
            #expect(try await client.execute(uri: "/_lb/health", method: .get).status == .notFound)
        }
        try await backends.stop(0)
        try await backends.stop(1)
        // Both backends down: health turns 503 once the health checks notice.
        let runner = Task { try await balancer.run() }
        let unavailable = try await withDeadline(.seconds(10), "health 503") {
            while balancer.healthJSON().status != 503 { try await Task.sleep(for: .milliseconds(50)) }
            return balancer.healthResponse()
        }
        #expect(unavailable.status == .serviceUnavailable)
        balancer.shutdown()
        try await withDeadline(.seconds(5), "balancer run") { try await runner.value }
        try await backends.shutdown()
    }

    @Test("path prefix matching and stripping")
    func prefixRules() {
        typealias M = LoadBalancerMiddleware<BalancerRequestContext>
        #expect(M.normalize("/api/") == "/api")
        #expect(M.normalize("api") == "/api")
        #expect(M.normalize("/") == nil)
        #expect(M.remainder(of: "/api", under: "/api") == "/")
        #expect(M.remainder(of: "/api/", under: "/api") == "/")
        #expect(M.remainder(of: "/api/x/y?z=1", under: "/api") == "/x/y?z=1")
        #expect(M.remainder(of: "/api?z=1", under: "/api") == "/?z=1")
        #expect(M.remainder(of: "/apix", under: "/api") == nil)
        #expect(M.remainder(of: "/other/api", under: "/api") == nil)
        #expect(M.remainder(of: "/ap", under: "/api") == nil)
        #expect(M.remainder(of: "/caf\u{e9}/menu", under: "/caf\u{e9}") == "/menu")
        #expect(M.remainder(of: "/cafe\u{301}/menu", under: "/caf\u{e9}") == nil)   // bytes, not canonical equivalence
    }

    @Test("LBKit responses become Hummingbird responses: spelling, order, Content-Length, status lines, backend header")
    func responseConversion() {
        let headers = HeaderFields([("Server", "nginx"), ("content-type", "text/plain"), ("X-Custom", "1"),
                                    ("X-Backend", "http://10.0.0.1:80"), ("Date", "Sun, 29 Nov 2026 23:00:00 GMT")])
        let whole = LBResponse(head: ResponseHead(status: 200, headers: headers), body: Array("hello".utf8))
        let hidden = whole.hummingbirdResponse()
        #expect(hidden.status == .ok && hidden.status.reasonPhrase == "OK")
        #expect(hidden.headers.map { $0.name.rawName } == ["Server", "content-type", "X-Custom", "Date", "Content-Length"])
        #expect(hidden.headers[.contentLength] == "5" && hidden.headers[.contentType] == "text/plain")
        #expect(whole.hummingbirdResponse(exposeBackendHeader: true).headers[HTTPField.Name("x-backend")!] == "http://10.0.0.1:80")
        // A balancer whose backend header has another name: that name is the one removed.
        #expect(whole.hummingbirdResponse(removingField: "X-Custom").headers.map { $0.name.rawName }
            == ["Server", "content-type", "X-Backend", "Date", "Content-Length"])
        // A HEAD's Content-Length (kept by LBKit) is not replaced by the empty body's.
        let head = LBResponse(head: ResponseHead(status: 200, headers: HeaderFields([("Content-Length", "1234")]))).hummingbirdResponse()
        #expect(head.headers[values: HTTPField.Name.contentLength] == ["1234"])
        // Reason phrases: a non-standard one is kept, an out-of-range status becomes 502.
        #expect(LBResponse(head: ResponseHead(status: 200, reason: "Fine")).hummingbirdResponse().status.reasonPhrase == "Fine")
        #expect(LBResponse(head: ResponseHead(status: 404)).hummingbirdResponse().status == .notFound)
        #expect(LBResponse(head: ResponseHead(status: 299, reason: "Odd")).hummingbirdResponse().status.code == 299)
        #expect(LBResponse(head: ResponseHead(status: 42)).hummingbirdResponse().status == .badGateway)
        // Names swift-http-types rejects are dropped.
        let bad = LBResponse(head: ResponseHead(status: 200, headers: HeaderFields([("Bad Name", "x"), ("Vary", "Accept")]))).hummingbirdResponse()
        #expect(bad.headers.map { $0.name.rawName } == ["Vary", "Content-Length"])
    }

    @Test("NIO socket addresses become client addresses from their bytes")
    func clientAddresses() throws {
        #expect(ClientAddress(socketAddress: try SocketAddress(ipAddress: "203.0.113.9", port: 1))?.description == "203.0.113.9")
        #expect(ClientAddress(socketAddress: try SocketAddress(ipAddress: "2001:db8::1", port: 1))?.description == "2001:db8::1")
        #expect(ClientAddress(socketAddress: try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 1)) == ClientAddress("10.1.2.3"))
        #expect(ClientAddress(socketAddress: try SocketAddress(unixDomainSocketPath: "/tmp/x.sock")) == nil)
    }
}
