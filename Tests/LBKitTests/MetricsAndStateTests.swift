import Foundation
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// Records what a balancer hands its metrics sink.
final class RecordingMetrics: MetricsSink {
    private let counters = Mutex<[String: Int]>([:])
    private let gauges = Mutex<[String: Double]>([:])
    private let histograms = Mutex<[String: Int]>([:])

    static func key(_ name: String, _ dimensions: [(String, String)]) -> String {
        name + "{" + dimensions.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }

    func increment(counter name: String, by amount: Int, dimensions: [(String, String)]) {
        counters.withLock { $0[Self.key(name, dimensions), default: 0] += amount }
    }
    func record(gauge name: String, value: Double, dimensions: [(String, String)]) {
        gauges.withLock { $0[Self.key(name, dimensions)] = value }
    }
    func record(histogram name: String, seconds: Double, dimensions: [(String, String)]) {
        histograms.withLock { $0[Self.key(name, dimensions), default: 0] += 1 }
    }

    func counter(_ name: String, _ dimensions: [(String, String)] = []) -> Int { counters.withLock { $0[Self.key(name, dimensions)] ?? 0 } }
    func observations(_ name: String) -> Int { histograms.withLock { $0[Self.key(name, [])] ?? 0 } }
}

@Suite("Metrics and the one state model", .timeLimit(.minutes(1)))
struct MetricsAndStateTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    /// The sample value of `series` (a full series name with labels) in `text`.
    func value(_ series: String, in text: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test("/_lb/metrics: build info, client duration histogram from 50 us, responses per backend, ejections by reason, reloads")
    func newFamilies() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let sink = RecordingMetrics()
        var config = LoadBalancerConfiguration()
        config.backends = fleet.urls
        config.healthInterval = .zero
        config.attemptTimeout = .seconds(30)   // a loaded test machine must not turn an answer into a 504
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, metrics: sink)
        let handler = balancer.responder(admin: true)
        let context = try context(from: "127.0.0.1")
        func post(_ body: [UInt8]) async -> LBResponse {
            await handler.handle(LBRequest(head: RequestHead(method: "POST", target: "/", headers: ["Host": "lb.test"]), body: body),
                                 context: context)
        }
        // b0: 200, 200, 400; b1: 200, 200 (strict rotation).
        for _ in 0..<4 { #expect(await post(body).status == 200) }
        #expect(await post(Array("nope".utf8)).status == 400)
        let b0 = fleet.urls[0].description, b1 = fleet.urls[1].description

        let text = balancer.prometheusText()
        #expect(text.contains("lb_build_info{version=\"\(LBKitVersion.string)\"} 1\n"))
        #expect(value("lb_request_duration_seconds_count", in: text) == 5)
        #expect(text.contains("lb_request_duration_seconds_bucket{le=\"5e-05\"} "))
        let buckets = text.split(separator: "\n").filter { $0.hasPrefix("lb_request_duration_seconds_bucket") }
            .compactMap { Int($0.split(separator: " ").last ?? "") }
        #expect(buckets.count == RequestDurationHistogram.bounds.count + 1)
        #expect(buckets == buckets.sorted() && buckets.last == 5)
        #expect((value("lb_request_duration_seconds_sum", in: text) ?? 0) > 0)
        #expect(value("lb_backend_responses_total{backend=\"\(b0)\",code=\"2xx\"}", in: text) == 2)
        #expect(value("lb_backend_responses_total{backend=\"\(b0)\",code=\"4xx\"}", in: text) == 1)
        #expect(value("lb_backend_responses_total{backend=\"\(b1)\",code=\"2xx\"}", in: text) == 2)
        #expect(value("lb_backend_responses_total{backend=\"\(b1)\",code=\"5xx\"}", in: text) == 0)
        for cause in ExclusionCause.allCases {
            #expect(value("lb_backend_ejections_total{backend=\"\(b0)\",reason=\"\(cause.rawValue)\"}", in: text) == 0)
        }
        // Backend latency buckets start below a millisecond too.
        #expect(text.contains("lb_backend_latency_seconds_bucket{backend=\"\(b0)\",le=\"0.0001\"} "))
        #expect(value("lb_reloads_total{outcome=\"success\"}", in: text) == 0)

        // The sink got the same, per attempt and per request.
        #expect(sink.counter("lb_backend_responses_total", [("backend", b0), ("status_class", "2xx")]) == 2)
        #expect(sink.counter("lb_backend_responses_total", [("backend", b0), ("status_class", "4xx")]) == 1)
        #expect(sink.observations("lb_request_duration_seconds") == 5)

        // An ejection: counted by reason in both.
        for _ in 0..<3 { balancer.cluster.attempt(1, .failure(.connect)) }
        let ejected = balancer.prometheusText()
        #expect(value("lb_backend_ejections_total{backend=\"\(b1)\",reason=\"consecutive_failures\"}", in: ejected) == 1)
        #expect(sink.counter("lb_backend_ejections_total", [("backend", b1), ("reason", "consecutive_failures")]) == 1)
        #expect(balancer.statsJSON().contains("\"ejections_by_reason\":{\"consecutive_failures\":1,"))

        // Reloads by outcome: one applied, one refused by the balancer, one refused before it.
        try balancer.reload(backends: fleet.urls)
        #expect(throws: LoadBalancerError.self) { try balancer.reload(backends: fleet.urls, healthPaths: ["bad path"]) }
        balancer.noteReloadFailure()
        let reloads = balancer.prometheusText()
        #expect(value("lb_reloads_total{outcome=\"success\"}", in: reloads) == 1)
        #expect(value("lb_reloads_total{outcome=\"failure\"}", in: reloads) == 2)
        #expect(sink.counter("lb_reloads_total", [("outcome", "success")]) == 1)
        #expect(sink.counter("lb_reloads_total", [("outcome", "failure")]) == 2)
        #expect(balancer.statsJSON().contains("\"reloads\":{\"success\":1,\"failure\":2}"))
        await fleet.stop()
    }

    @Test("warming: the same name with its share in /_lb/health, /_lb/stats, metrics and the log")
    func warmingEverywhere() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let log = LogCapture()
        let events = Mutex<[LBLogEvent]>([])
        var config = LoadBalancerConfiguration()
        config.backends = fleet.urls
        config.healthInterval = .seconds(3600)
        config.slowStart = .seconds(3600)   // the ramp barely moves during the test
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group,
                                        log: { event in events.withLock { $0.append(event) }; log.sink(event) })
        let b1 = fleet.urls[1].description
        for _ in 0..<3 { balancer.cluster.probeFinished(1, result: .reset, latency: .milliseconds(1)) }
        #expect(balancer.healthJSON().body.contains("{\"url\":\"\(b1)\",\"state\":\"down\",\"share\":0.000}"))
        for _ in 0..<2 { balancer.cluster.probeFinished(1, result: .passed(status: 200), latency: .milliseconds(1)) }

        let health = balancer.healthJSON()
        #expect(health.status == 200)
        #expect(health.body.contains("\"healthy\":1,\"warming\":1,"))
        #expect(health.body.contains("\"not_healthy\":[{\"url\":\"\(b1)\",\"state\":\"warming\",\"share\":0.100}]"))
        let stats = balancer.statsJSON()
        #expect(stats.contains("\"retiring\":false,\"state\":\"warming\",\"health\":\"healthy\""))
        #expect(stats.contains("\"eligible\":true,\"share\":0.100,\"readmission\":null"))
        let metrics = balancer.prometheusText()
        #expect(metrics.contains("lb_backend_state{backend=\"\(b1)\",state=\"warming\"} 1\n"))
        #expect(metrics.contains("lb_backend_state{backend=\"\(b1)\",state=\"healthy\"} 0\n"))
        #expect(metrics.contains("lb_backend_share{backend=\"\(b1)\"} 0.1"))
        let back = try #require(events.withLock { $0 }.last)
        #expect(back.line.contains("as HEALTHY (2 successful checks)"))
        #expect(back.metadata["state"] == "warming")
        // The outage logged one UNHEALTHY line.
        #expect(log.count(containing: "UNHEALTHY") == 1)
        await fleet.stop()
    }

    @Test("a backend excluded by real requests shows what may bring it back")
    func readmissionInStats() async throws {
        let fleet = try EchoFleet.start(count: 3)
        var config = LoadBalancerConfiguration()
        config.backends = fleet.urls
        config.healthInterval = .seconds(3600)
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group)
        for i in 0..<6 { balancer.cluster.attempt(2, i % 2 == 0 ? .success : .failure(.status5xx)) }
        let stats = balancer.statsJSON()
        #expect(stats.contains("\"state\":\"ejected\""))
        #expect(stats.contains("\"readmission\":\"trial_requests\""))
        #expect(stats.contains("\"failure_rate\":1"))
        await fleet.stop()
    }
}

extension BackendCluster {
    /// Runs one complete attempt on `index` (as the balancer reports it).
    func attempt(_ index: Int, _ outcome: AttemptOutcome, latency: Duration = .milliseconds(1)) {
        attemptStarted(index)
        attemptFinished(index, outcome: outcome, latency: latency)
    }
}
