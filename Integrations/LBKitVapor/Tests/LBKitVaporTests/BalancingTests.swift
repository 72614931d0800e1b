import AsyncHTTPClient
import Foundation
import LBKit
import LBKitTesting
@testable import LBKitVapor
import MetricsTestKit
import NIOCore
import Synchronization
import Testing
import Vapor
import VaporTesting

/// End-to-end behaviour through a real Vapor server on an ephemeral loopback port, with
/// LBKitTesting echo backends on ephemeral loopback ports. Serialized: the throttle and timing
/// assertions should not compete with the other tests for the two cores.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct BalancingTests {
    @Test func strictRoundRobinOverThreeBackends() async throws {
        let fleet = try EchoFleet(count: 3)
        let metrics = TestMetrics()
        var configuration = testConfiguration(try fleet.urls)
        configuration.backendHeader = "X-Upstream"   // the middleware removes the balancer's name for it
        let balancer = try LoadBalancer(configuration: configuration, metrics: SwiftMetricsSink(factory: metrics))
        try await withApp(configure: { app in
            app.logger.logLevel = .warning
            app.loadBalancer.use(balancer, pathPrefix: "/api")
        }) { app in
            let tester = try app.testing(method: .running(hostname: "127.0.0.1", port: 0))
            var seen: [Int] = []
            for _ in 0..<9 {
                let response = try await tester.sendRequest(.GET, "/api/items")
                #expect(response.status == .ok)
                #expect(response.headers.first(name: "X-Backend") == nil)   // off by default
                #expect(response.headers.first(name: "X-Upstream") == nil)
                seen.append(try handledBy(response.body))
            }
            // Strict rotation in configuration order, from wherever it starts.
            let start = try #require(fleet.ports.firstIndex(of: seen[0]))
            #expect(seen == (0..<9).map { fleet.ports[(start + $0) % 3] })
            #expect(app.loadBalancer.lifecycle(for: balancer)?.state == .running)
        }
        #expect(metrics.counterTotal(label: "lb_requests_total", dimensions: [("status_class", "2xx")]) == 9)
        for port in fleet.ports {
            #expect(metrics.counterTotal(label: "lb_backend_responses_total",
                                         dimensions: [("backend", "http://127.0.0.1:\(port)"), ("status_class", "2xx")]) == 3)
        }
        #expect(try metrics.expectTimer("lb_request_duration_seconds").values.count == 9)
        await fleet.shutdown()
    }

    @Test func failsOverWhenABackendIsShutDown() async throws {
        let fleet = try EchoFleet(count: 3)
        let balancer = try LoadBalancer(configuration: testConfiguration(try fleet.urls, healthInterval: .milliseconds(200)))
        try await withApp(configure: { app in
            app.logger.logLevel = .warning
            app.loadBalancer.use(balancer, pathPrefix: "/api")
        }) { app in
            let tester = try app.testing(method: .running(hostname: "127.0.0.1", port: 0))
            let first = try await tester.sendRequest(.GET, "/api/before")
            #expect(first.status == .ok)
            await fleet.stop(1)
            var seen: Set<Int> = []
            for i in 0..<9 {
                let response = try await tester.sendRequest(.GET, "/api/after/\(i)")
                #expect(response.status == .ok, "request \(i): \(response.body.string)")
                seen.insert(try handledBy(response.body))
            }
            #expect(seen == [fleet.ports[0], fleet.ports[2]])
            let (healthStatus, _) = balancer.healthJSON()
            #expect(healthStatus == 200)
        }
        await fleet.shutdown()
    }

    @Test func throttlesPerClientWith429AndRetryAfterAfterTheBurst() async throws {
        let fleet = try EchoFleet(count: 2)
        var config = testConfiguration(try fleet.urls)
        config.rateLimit = 0.2   // one token every 5 s: nothing refills during the test
        config.burst = 3
        let balancer = try LoadBalancer(configuration: config)
        try await withApp(configure: { app in
            app.logger.logLevel = .warning
            app.loadBalancer.use(balancer, pathPrefix: "/api")
            app.get("hello") { _ in "hello\n" }
        }) { app in
            let tester = try app.testing(method: .running(hostname: "127.0.0.1", port: 0))
            // A different spoofed X-Forwarded-For on every request: the client is still the TCP
            // peer (req.remoteAddress), so they all share one bucket.
            for i in 0..<3 {
                let response = try await tester.sendRequest(.GET, "/api/burst", headers: ["X-Forwarded-For": "198.51.100.\(i)"])
                #expect(response.status == .ok)
            }
            let limited = try await tester.sendRequest(.GET, "/api/burst", headers: ["X-Forwarded-For": "198.51.100.99"])
            #expect(limited.status == .tooManyRequests)
            let retryAfter = try #require(limited.headers.first(name: "Retry-After").flatMap { Int($0) })
            #expect(retryAfter >= 1)
            #expect(limited.headers.first(name: .contentType) == "application/json")
            #expect(limited.body.string.contains("too many requests from 127.0.0.1"))
            // Routes outside the prefix are not the balancer's business.
            let other = try await tester.sendRequest(.GET, "/hello")
            #expect(other.status == .ok)
        }
        #expect(balancer.throttleMiddleware?.throttledRequests == 1)
        await fleet.shutdown()
    }

    @Test func answers413OverTheBodyLimit() async throws {
        let fleet = try EchoFleet(count: 1)
        var config = testConfiguration(try fleet.urls)
        config.maxBodyBytes = 1024
        let balancer = try LoadBalancer(configuration: config)
        try await withApp(configure: { app in
            app.logger.logLevel = .warning
            app.loadBalancer.use(balancer, pathPrefix: "/api")
        }) { app in
            let tester = try app.testing(method: .running(hostname: "127.0.0.1", port: 0))
            // Exactly at the limit: forwarded (a JSON object the echo backend answers).
            let filler = String(repeating: "x", count: 1024 - #"{"p":""}"#.utf8.count)
            let atLimit = ByteBuffer(string: #"{"p":"\#(filler)"}"#)
            #expect(atLimit.readableBytes == 1024)
            let ok = try await tester.sendRequest(.POST, "/api/upload", headers: ["Content-Type": "application/json"], body: atLimit)
            #expect(ok.status == .ok)
            #expect(try handledBy(ok.body) == fleet.ports[0])

            let over = try await tester.sendRequest(.POST, "/api/upload", headers: ["Content-Type": "application/json"],
                                                    body: ByteBuffer(repeating: UInt8(ascii: "x"), count: 1025))
            #expect(over.status == .payloadTooLarge)
            #expect(over.headers.first(name: .contentType) == "application/json")
            #expect(over.body.string.contains("exceeds the limit of 1024 bytes"))
        }
        await fleet.shutdown()
    }

    @Test func streamedBodyOverTheLimitIs413() async throws {
        // No Content-Length (chunked upload): the limit is enforced while collecting.
        let fleet = try EchoFleet(count: 1)
        var config = testConfiguration(try fleet.urls)
        config.maxBodyBytes = 1024
        let balancer = try LoadBalancer(configuration: config)
        let live = try await LiveApp.start { app in app.loadBalancer.use(balancer, pathPrefix: "/api") }
        do {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(live.port)/api/upload")
            request.method = .POST
            let chunks = AsyncStream<ByteBuffer> { continuation in
                for _ in 0..<4 { continuation.yield(ByteBuffer(repeating: UInt8(ascii: "x"), count: 512)) }
                continuation.finish()
            }
            request.body = .stream(chunks, length: .unknown)
            let response = try await live.client.execute(request, timeout: .seconds(10))
            #expect(response.status == .payloadTooLarge)
            _ = try await response.body.collect(upTo: 1 << 16)
        } catch {
            Issue.record("\(error)")
        }
        try await live.shutdown()
        await fleet.shutdown()
    }

    @Test func gracefulShutdownWaitsForInFlightAndStopsTheBalancer() async throws {
        let fleet = try EchoFleet(count: 1, mode: .slow, delay: .milliseconds(600))
        let logs = CapturingLogHandler.Store()
        let logger = Logger(label: "test") { _ in CapturingLogHandler(store: logs) }
        let balancer = try LoadBalancer(configuration: testConfiguration(try fleet.urls), log: logger.loadBalancerLogSink)
        let lifecycle = Mutex<LoadBalancerLifecycle?>(nil)
        let live = try await LiveApp.start { app in
            lifecycle.withLock { $0 = app.loadBalancer.use(balancer, pathPrefix: "/api") }
        }
        let owner = try #require(lifecycle.withLock { $0 })
        #expect(owner.state == .running)

        // One slow request in flight...
        let inFlight = Task { try await live.send(.GET, "/api/slow") }
        try await eventually("request inside the balancer") { owner.requestsInFlight == 1 }

        // ...then the application shuts down (Vapor's order: lifecycle handlers, then the server).
        let started = ContinuousClock.now
        let shutdown = Task { try await withTimeout(.seconds(10), "app.asyncShutdown") { try await live.app.asyncShutdown() } }
        try await eventually("lifecycle stopping") { owner.state == .stopping }
        // New requests are turned away while the balancer drains.
        let late = try await live.send(.GET, "/api/late")
        #expect(late.status == 503)
        #expect(String(buffer: late.body).contains("shutting down"))

        try await shutdown.value
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .seconds(5), "shutdown took \(elapsed)")

        let answered = try await withTimeout(.seconds(5), "in-flight request") { try await inFlight.value }
        #expect(answered.status == 200)
        #expect(owner.state == .stopped)
        #expect(owner.requestsInFlight == 0)
        // run() has returned: its last words are logged.
        let lifecycleLogs = logs.all.filter { $0.metadata["lb_category"] == "LIFECYCLE" }.map(\.message)
        #expect(lifecycleLogs.first?.hasPrefix("balancer started") == true)
        #expect(lifecycleLogs.last == "balancer stopped")

        try await live.shutdown()
        await fleet.shutdown()
    }

    @Test func synchronousBootAndShutdownPaths() async throws {
        let fleet = try EchoFleet(count: 1)
        let balancer = try LoadBalancer(configuration: testConfiguration(try fleet.urls))
        let app = try await Application.make(.testing)
        app.logger.logLevel = .warning
        let lifecycle = app.loadBalancer.use(balancer)
        // Vapor's synchronous boot() is `noasync`: call it from a plain thread, as a synchronous
        // application does (app.testing() does the same).
        try await withTimeout(.seconds(10), "boot") { try await onPlainThread { try app.boot() } }
        #expect(lifecycle.state == .running)
        // The synchronous shutdown hook blocks its thread until run() has returned. (Vapor's own
        // synchronous app.shutdown() cannot follow Application.make, so the hook is called directly.)
        try await withTimeout(.seconds(10), "shutdown hook") { try await onPlainThread { lifecycle.shutdown(app) } }
        #expect(lifecycle.state == .stopped)
        try await withTimeout(.seconds(10), "asyncShutdown") { try await app.asyncShutdown() }   // stop() is idempotent
        #expect(lifecycle.state == .stopped)
        await fleet.shutdown()
    }

    @Test func shutdownWithoutBootStillReleasesTheBalancer() async throws {
        let fleet = try EchoFleet(count: 1)
        let logs = CapturingLogHandler.Store()
        let logger = Logger(label: "test") { _ in CapturingLogHandler(store: logs) }
        let balancer = try LoadBalancer(configuration: testConfiguration(try fleet.urls), log: logger.loadBalancerLogSink)
        let app = try await Application.make(.testing)
        let lifecycle = app.loadBalancer.register(balancer)
        #expect(app.loadBalancer.register(balancer) === lifecycle)   // once per balancer
        #expect(lifecycle.state == .idle)
        try await withTimeout(.seconds(10), "asyncShutdown") { try await app.asyncShutdown() }
        #expect(lifecycle.state == .stopped)
        #expect(logs.all.last?.message == "balancer stopped")
        await fleet.shutdown()
    }
}
