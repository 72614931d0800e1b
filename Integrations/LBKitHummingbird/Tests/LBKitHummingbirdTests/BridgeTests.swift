import Hummingbird
import HummingbirdTesting
import InMemoryLogging
import LBKit
import LBKitHummingbird
import LBKitTesting
import Logging
import MetricsTestKit
import NIOCore
import Testing

extension IntegrationTests {
    @Test("swift-log bridge: levels one to one, metadata kept, category as metadata")
    func logBridge() throws {
        let handler = InMemoryLogHandler()
        var logger = Logger(label: "lb-test") { _ in handler }
        logger.logLevel = .trace
        let sink = logger.lbLogSink
        for level in LogLevel.allCases {
            // `LBLogEvent` alone is ambiguous next to `import Logging` (swift-log 1.16 has one too).
            sink(LBLogEvent(level: level, category: .health, message: "event \(level)",
                                metadata: ["backend": "http://127.0.0.1:5101", "reason": "3 consecutive failures"]))
        }
        let entries = handler.entries
        #expect(entries.map(\.level) == [.trace, .debug, .info, .notice, .warning, .error, .critical])
        #expect(entries.map(\.message.description) == LogLevel.allCases.map { "event \($0)" })
        for entry in entries {
            #expect(entry.metadata["category"] == .string("HEALTH"))
            #expect(entry.metadata["backend"] == .string("http://127.0.0.1:5101"))
            #expect(entry.metadata["reason"] == .string("3 consecutive failures"))
        }

        // The logger's level still filters.
        handler.clear()
        logger.logLevel = .warning
        logger.lbLogSink(LBLogEvent(level: .info, category: .lifecycle, message: "quiet"))
        logger.lbLogSink(LBLogEvent(level: .error, category: .config, message: "loud"))
        #expect(handler.entries.map(\.message.description) == ["loud"])
    }

    @Test("swift-metrics bridge: counters, gauges and timers by name and dimensions, created once")
    func metricsBridge() async throws {
        let metrics = TestMetrics()
        let sink = SwiftMetricsSink(factory: metrics)
        sink.increment(counter: "lb_requests_total", by: 1, dimensions: [("status_class", "2xx")])
        sink.increment(counter: "lb_requests_total", by: 2, dimensions: [("status_class", "2xx")])
        sink.increment(counter: "lb_requests_total", by: 1, dimensions: [("status_class", "5xx")])
        sink.record(gauge: "lb_backend_in_flight", value: 3, dimensions: [("backend", "b1")])
        sink.record(gauge: "lb_backend_in_flight", value: 1, dimensions: [("backend", "b1")])
        sink.record(histogram: "lb_request_duration_seconds", seconds: 0.25, dimensions: [])
        #expect(metrics.counterTotal(label: "lb_requests_total", dimensions: [("status_class", "2xx")]) == 3)
        #expect(metrics.counterTotal(label: "lb_requests_total", dimensions: [("status_class", "5xx")]) == 1)
        #expect(metrics.counters(label: "lb_requests_total").count == 2)
        #expect(try metrics.expectGauge("lb_backend_in_flight", [("backend", "b1")]).lastValue == 1)
        #expect(try metrics.expectTimer("lb_request_duration_seconds").lastValue == 250_000_000)

        // And from a real balancer handling a request through Hummingbird.
        let backends = try EchoBackends(count: 1)
        let live = TestMetrics()
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls), logger: quietLogger,
                                        metrics: SwiftMetricsSink(factory: live))
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api"))
        var app = Application(router: router, logger: quietLogger)
        app.addServices(LoadBalancerService(balancer: balancer))
        try await app.test(.live) { client in
            let response = try await client.execute(uri: "/api/x", method: .get)
            #expect(response.status == .ok)
        }
        #expect(live.counterTotal(label: "lb_requests_total", dimensions: [("status_class", "2xx")]) == 1)
        #expect(live.timers(label: "lb_request_duration_seconds").count == 1)
        try await backends.shutdown()
    }
}
