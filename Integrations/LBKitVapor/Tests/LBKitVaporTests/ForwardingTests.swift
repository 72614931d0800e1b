import Foundation
import LBKit
import LBKitTesting
@testable import LBKitVapor
import Logging
import MetricsTestKit
import NIOCore
import Testing
import Vapor
import VaporTesting

/// A backend that answers with what it received, as JSON.
final class InspectingBackend: Sendable {
    let group: LBEventLoopGroup
    let server: HTTP1Server
    let port: Int

    struct Seen: Decodable {
        let method: String
        let target: String
        let host: String?
        let forwardedFor: String?
        let custom: [String]
        let bodyLength: Int
    }

    init() throws {
        group = try LBEventLoopGroup(loopCount: 1, namePrefix: "inspect")
        server = HTTP1Server(configuration: HTTP1ServerConfiguration(host: "127.0.0.1", port: 0), group: group,
                             handler: ClosureHandler { request, _ in
            let custom = request.headers["X-Custom"].map { jsonQuote($0) }.joined(separator: ",")
            let body = """
                {"method":\(jsonQuote(request.method)),"target":\(jsonQuote(request.target)),\
                "host":\(request.headers.first(name: "Host").map(jsonQuote) ?? "null"),\
                "forwardedFor":\(request.headers.first(name: "X-Forwarded-For").map(jsonQuote) ?? "null"),\
                "custom":[\(custom)],"bodyLength":\(request.body.count)}
                """
            return .json(status: 201, body, headers: ["X-Upstream": "inspect"])
        })
        port = try server.start().port
    }

    var url: BackendURL { get throws { try BackendURL(parsing: "http://127.0.0.1:\(port)") } }

    func shutdown() async {
        await server.shutdown(timeout: .seconds(2))
        let group = self.group
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                group.shutdown()
                c.resume()
            }
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(1)))
struct ForwardingTests {
    @Test func forwardsHostHeadersBodyAndTheRealPeer() async throws {
        let backend = try InspectingBackend()
        let balancer = try LoadBalancer(configuration: testConfiguration([try backend.url]))
        let live = try await LiveApp.start { app in
            app.loadBalancer.use(balancer, pathPrefix: "/api/", stripPrefix: true, exposesBackendHeader: true)
        }
        do {
            let response = try await live.send(.PUT, "/api/items/7?x=1&y=%20z",
                                               headers: ["Host": "gateway.example", "X-Custom": "a", "x-custom": "b",
                                                         "X-Forwarded-For": "203.0.113.50"],
                                               body: Array("hello".utf8))
            #expect(response.status == 201)
            let seen = try JSONDecoder().decode(InspectingBackend.Seen.self, from: Data(response.body.readableBytesView))
            #expect(seen.method == "PUT")
            #expect(seen.target == "/items/7?x=1&y=%20z")
            #expect(seen.host == "gateway.example")                       // Host kept, not the backend's
            #expect(seen.forwardedFor == "203.0.113.50, 127.0.0.1")       // the TCP peer appended
            #expect(seen.custom == ["a", "b"])
            #expect(seen.bodyLength == 5)
            #expect(response.headers.first(name: "X-Upstream") == "inspect")
            #expect(response.headers.first(name: "X-Backend") == "http://127.0.0.1:\(backend.port)")

            let root = try await live.send(.GET, "/api")
            let rootSeen = try JSONDecoder().decode(InspectingBackend.Seen.self, from: Data(root.body.readableBytesView))
            #expect(rootSeen.target == "/")
            let query = try await live.send(.GET, "/api?q=1")
            let querySeen = try JSONDecoder().decode(InspectingBackend.Seen.self, from: Data(query.body.readableBytesView))
            #expect(querySeen.target == "/?q=1")

            // Not under the prefix: Vapor's router (404 here, no such route).
            let outside = try await live.send(.GET, "/apix")
            #expect(outside.status == 404)
        } catch {
            Issue.record("\(error)")
        }
        try await live.shutdown()
        await backend.shutdown()
    }

    @Test func unstrippedPrefixAndUserMiddleware() async throws {
        struct RequireKey: LBMiddleware {
            func handle(_ request: LBRequest, context: LBRequestContext,
                        next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
                guard request.headers.contains(name: "X-API-Key") else { return .jsonError(status: 401, message: "missing X-API-Key") }
                return await next(request, context)
            }
        }
        let backend = try InspectingBackend()
        let balancer = try LoadBalancer(configuration: testConfiguration([try backend.url]))
        try await withApp(configure: { app in
            app.logger.logLevel = .warning
            app.loadBalancer.use(balancer, pathPrefix: "api", middlewares: [RequireKey()])
        }) { app in
            let tester = try app.testing(method: .running(hostname: "127.0.0.1", port: 0))
            let denied = try await tester.sendRequest(.GET, "/api/x")
            #expect(denied.status == .unauthorized)
            let allowed = try await tester.sendRequest(.GET, "/api/x?k=v", headers: ["X-API-Key": "k"])
            #expect(allowed.status == .created)
            let seen = try JSONDecoder().decode(InspectingBackend.Seen.self, from: Data(allowed.body.readableBytesView))
            #expect(seen.target == "/api/x?k=v")
        }
        await backend.shutdown()
    }

    @Test func adminRoutesAreMountedWhereTheAppSays() async throws {
        let fleet = try EchoFleet(count: 2)
        let balancer = try LoadBalancer(configuration: testConfiguration(try fleet.urls))
        try await withApp(configure: { app in
            app.logger.logLevel = .warning
            app.loadBalancer.use(balancer, pathPrefix: "/api")
            app.grouped("admin", "lb").loadBalancerAdmin(balancer)
            app.loadBalancerHealth(balancer, at: "healthz")
        }) { app in
            let tester = try app.testing()   // in memory is enough: no balancing involved
            let health = try await tester.sendRequest(.GET, "/admin/lb/health")
            #expect(health.status == .ok)
            #expect(health.body.string == #"{"status":"ok","backends":2,"eligible":2,"states":{"healthy":2,"warming":0,"probing":0,"slow":0,"ejected":0,"down":0,"draining":0,"overloaded":0},"not_healthy":[]}"#)
            #expect(health.headers.first(name: .contentType) == "application/json")
            let healthz = try await tester.sendRequest(.GET, "/healthz")
            #expect(healthz.status == .ok)
            let stats = try await tester.sendRequest(.GET, "/admin/lb/stats")
            #expect(stats.status == .ok)
            #expect(stats.body.string.contains(#""backends":[{"url":"http://127.0.0.1:\#(fleet.ports[0])""#))
            let metrics = try await tester.sendRequest(.GET, "/admin/lb/metrics")
            #expect(metrics.status == .ok)
            #expect(metrics.headers.first(name: .contentType)?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(metrics.body.string.contains("# TYPE lb_requests_total counter"))
            // Nothing under /_lb/ unless mounted.
            let unmounted = try await tester.sendRequest(.GET, "/_lb/health")
            #expect(unmounted.status == .notFound)
        }
        // All backends draining: health is 503.
        for port in fleet.ports { balancer.cluster.setDraining(try #require(balancer.cluster.index(of: "http://127.0.0.1:\(port)")), true) }
        #expect(balancer.healthResponse().status == .serviceUnavailable)
        await fleet.shutdown()
    }
}

@Suite struct UnitTests {
    @Test func prefixMatching() async throws {
        let fleetless = try LoadBalancer(configuration: testConfiguration([try BackendURL(parsing: "http://127.0.0.1:9")]))
        let api = LoadBalancerMiddleware(balancer: fleetless, pathPrefix: "/api/")
        #expect(api.pathPrefix == "/api")
        #expect(api.forwardedTarget("/api") == "/api")
        #expect(api.forwardedTarget("/api/x?y") == "/api/x?y")
        #expect(api.forwardedTarget("/api?y") == "/api?y")
        #expect(api.forwardedTarget("/apix") == nil)
        #expect(api.forwardedTarget("/other") == nil)
        let stripped = LoadBalancerMiddleware(balancer: fleetless, pathPrefix: "api", stripPrefix: true)
        #expect(stripped.forwardedTarget("/api") == "/")
        #expect(stripped.forwardedTarget("/api/") == "/")
        #expect(stripped.forwardedTarget("/api/a/b?c=d") == "/a/b?c=d")
        #expect(stripped.forwardedTarget("/api?c=d") == "/?c=d")
        let all = LoadBalancerMiddleware(balancer: fleetless)
        #expect(all.pathPrefix == "/")
        #expect(all.forwardedTarget("/anything?x") == "/anything?x")
        #expect(stripped.forwardedTarget("/ap") == nil)
        let accented = LoadBalancerMiddleware(balancer: fleetless, pathPrefix: "/caf\u{e9}", stripPrefix: true)
        #expect(accented.forwardedTarget("/caf\u{e9}/menu") == "/menu")
        #expect(accented.forwardedTarget("/cafe\u{301}/menu") == nil)   // bytes, not canonical equivalence
        #expect(LoadBalancerMiddleware.normalise("///") == "/")
        fleetless.shutdown()
        try await withTimeout(.seconds(10), "balancer.run") { try await fleetless.run() }   // releases its loops
    }

    @Test func responseConversion() {
        let headers = HeaderFields([("Server", "nginx"), ("Content-Length", "5"), ("X-Custom", "1"),
                                    ("transfer-encoding", "chunked"), ("X-Backend", "http://10.0.0.1:80")])
        let response = LBResponse(head: ResponseHead(status: 200, headers: headers), body: Array("hello".utf8))
        // Framing fields are Vapor's (it adds its own Content-Length for the body); the backend
        // header goes unless kept.
        #expect(response.vaporResponse().headers.map(\.name) == ["Server", "X-Custom", "content-length"])
        #expect(response.vaporResponse().headers[.contentLength] == ["5"])
        #expect(response.vaporResponse(keepingBackendHeader: true).headers.map(\.name)
            == ["Server", "X-Custom", "X-Backend", "content-length"])
        // A balancer whose backend header has another name: that name is the one removed.
        #expect(response.vaporResponse(removingField: "X-Custom").headers.map(\.name) == ["Server", "X-Backend", "content-length"])
        #expect(response.vaporResponse(removingField: nil).headers.map(\.name)
            == ["Server", "X-Custom", "X-Backend", "content-length"])
        #expect(response.vaporResponse().status == .ok)
    }

    @Test func clientAddressFromNIOSocketAddresses() throws {
        let v4 = try SocketAddress(ipAddress: "203.0.113.7", port: 4242)
        #expect(ClientAddress(socketAddress: v4) == ClientAddress("203.0.113.7"))
        let v6 = try SocketAddress(ipAddress: "2001:db8::1", port: 4242)
        #expect(ClientAddress(socketAddress: v6) == ClientAddress("2001:db8::1"))
        let mapped = try SocketAddress(ipAddress: "::ffff:198.51.100.3", port: 1)
        #expect(ClientAddress(socketAddress: mapped) == ClientAddress("198.51.100.3"))
        let unix = try SocketAddress(unixDomainSocketPath: "/tmp/lbkit-vapor-test.sock")
        #expect(ClientAddress(socketAddress: unix) == nil)
    }

    @Test func logSinkMapsLevelsOneToOneAndKeepsMetadata() {
        let store = CapturingLogHandler.Store()
        var logger = Logger(label: "bridge") { _ in CapturingLogHandler(store: store) }
        logger.logLevel = .trace
        let sink = logger.loadBalancerLogSink
        for level in LogLevel.allCases {
            sink(LBLogEvent(level: level, category: .health, message: "m-\(level)", metadata: ["backend": "http://b:1", "reason": "r"]))
        }
        let entries = store.all
        #expect(entries.map(\.level) == [.trace, .debug, .info, .notice, .warning, .error, .critical])
        #expect(entries.map(\.message) == LogLevel.allCases.map { "m-\($0)" })
        #expect(entries.allSatisfy { $0.metadata["backend"] == "http://b:1" && $0.metadata["reason"] == "r" && $0.metadata["lb_category"] == "HEALTH" })
        #expect(entries.allSatisfy { $0.source == "LBKit" })

        logger.logLevel = .warning
        let filtered = logger.loadBalancerLogSink
        filtered(LBLogEvent(level: .info, category: .config, message: "quiet"))
        filtered(LBLogEvent(level: .error, category: .config, message: "loud"))
        #expect(store.all.count == entries.count + 1)
        #expect(store.all.last?.message == "loud")
    }

    @Test func accessLogSink() async throws {
        let fleet = try EchoFleet(count: 1)
        let store = CapturingLogHandler.Store()
        let logger = Logger(label: "access") { _ in CapturingLogHandler(store: store) }
        var config = testConfiguration(try fleet.urls)
        config.accessLog = true
        let balancer = try LoadBalancer(configuration: config, accessLog: logger.loadBalancerAccessLogSink())
        let response = await balancer.responder().handle(
            LBRequest(head: RequestHead(method: "GET", target: "/api/x", headers: ["Host": "h", "User-Agent": "ua/1"])),
            context: LBRequestContext(client: ClientAddress("203.0.113.9")))
        #expect(response.status == 200)
        let entry = try #require(store.all.first)
        #expect(entry.level == .info)
        #expect(entry.message == "GET /api/x 200")
        #expect(entry.metadata["backend"] == "http://127.0.0.1:\(fleet.ports[0])")
        #expect(entry.metadata["client"] == "203.0.113.9")
        #expect(entry.metadata["attempts"] == "1")
        #expect(entry.metadata["user_agent"] == "ua/1")
        balancer.shutdown()
        try await withTimeout(.seconds(10), "balancer.run") { try await balancer.run() }
        await fleet.shutdown()
    }

    @Test func metricsSinkCachesByNameAndDimensions() throws {
        let factory = TestMetrics()
        let sink = SwiftMetricsSink(factory: factory)
        sink.increment(counter: "c", by: 2, dimensions: [("a", "1")])
        sink.increment(counter: "c", by: 3, dimensions: [("a", "1")])
        sink.increment(counter: "c", by: 5, dimensions: [("a", "2")])
        sink.record(gauge: "g", value: 1.5, dimensions: [("b", "x")])
        sink.record(gauge: "g", value: 0.5, dimensions: [("b", "x")])
        sink.record(histogram: "h", seconds: 0.25, dimensions: [])
        #expect(factory.counterTotal(label: "c", dimensions: [("a", "1")]) == 5)
        #expect(factory.counterTotal(label: "c", dimensions: [("a", "2")]) == 5)
        #expect(factory.counters(label: "c").count == 2)   // one object per name + dimensions
        #expect(try factory.expectGauge("g", [("b", "x")]).lastValue == 0.5)
        #expect(try factory.expectTimer("h").lastValue == 250_000_000)
    }
}


/// `text` as a JSON string literal (test helper; LBKit's own is internal to the package).
func jsonQuote(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16) }
            else { out.unicodeScalars.append(scalar) }
        }
    }
    return out + "\""
}
