import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LBKit
import LBKitHummingbird
import LBKitTesting
import NIOCore
import Testing

extension IntegrationTests {
    @Test("per-client 429 with Retry-After, keyed by the real peer; X-Forwarded-For not believed; other routes not throttled")
    func perClientThrottle() async throws {
        let backends = try EchoBackends(count: 2)
        // Burst 2, then one request per 5 s: the third quick request of a client is refused.
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls) {
            $0.rateLimit = 0.2
            $0.burst = 2
            $0.penaltyThreshold = 0
        })
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api"))
        router.get("/hello") { _, _ in "hello\n" }

        try await withRunningApp(router: router, services: [LoadBalancerService(balancer: balancer)]) { port in
            // Client 127.0.0.2 uses its burst, then is throttled.
            for _ in 0..<2 {
                #expect(try await RawHTTP.request("GET", "/api/items", port: port, from: "127.0.0.2").status == 200)
            }
            let throttled = try await RawHTTP.request("GET", "/api/items", port: port, from: "127.0.0.2")
            #expect(throttled.status == 429)
            let retryAfter = try #require(throttled.header("Retry-After").flatMap { Int($0) })
            #expect(retryAfter >= 1)
            #expect(jsonObject(throttled.body)?["status"] as? Int == 429)
            #expect(throttled.header("RateLimit-Limit") != nil)

            // Claiming to be someone else does not help: no trusted proxies, the peer is the client.
            let spoofed = try await RawHTTP.request("GET", "/api/items", port: port, from: "127.0.0.2",
                                                    headers: [("X-Forwarded-For", "203.0.113.50")])
            #expect(spoofed.status == 429)

            // Routes without the middleware's prefix are not throttled.
            for _ in 0..<3 {
                #expect(try await RawHTTP.request("GET", "/hello", port: port, from: "127.0.0.2").status == 200)
            }

            // Another client (another real source address) has its own bucket.
            #expect(try await RawHTTP.request("GET", "/api/items", port: port, from: "127.0.0.3").status == 200)
        }
        #expect(balancer.throttleMiddleware?.throttledRequests == 2)
        #expect(balancer.throttleMiddleware?.unidentifiedRequests == 0)
        try await backends.shutdown()
    }

    @Test("HummingbirdTesting .live: a throttled 429 with Retry-After; /hello never throttled")
    func throttleLive() async throws {
        let backends = try EchoBackends(count: 1)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls) {
            $0.rateLimit = 0.2
            $0.burst = 1
            $0.penaltyThreshold = 0
        })
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api"))
        router.get("/hello") { _, _ in "hello\n" }
        var app = Application(router: router, logger: quietLogger)
        app.addServices(LoadBalancerService(balancer: balancer))
        try await app.test(.live) { client in
            #expect(try await client.execute(uri: "/api/a", method: .get).status == .ok)
            let refused = try await client.execute(uri: "/api/a", method: .get)
            #expect(refused.status == .tooManyRequests)
            #expect(refused.headers[.retryAfter].flatMap { Int($0) }.map { $0 >= 1 } == true)
            for _ in 0..<3 {
                #expect(try await client.execute(uri: "/hello", method: .get).status == .ok)
            }
        }
        try await backends.shutdown()
    }
}
