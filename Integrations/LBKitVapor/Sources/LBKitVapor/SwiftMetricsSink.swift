import CoreMetrics
import Synchronization

/// An LBKit ``MetricsSink`` that reports to swift-metrics: counters as `Counter`, gauges as
/// `Gauge`, histograms (durations in seconds) as `Timer`, under LBKit's names and dimensions
/// (`lb_requests_total` {`status_class`}, `lb_request_duration_seconds`, ...; see
/// ``MetricsSink``).
///
/// Metric objects are created once per name and dimensions and cached under a `Mutex`, so the
/// request path does one dictionary look-up per call, never a factory call.
///
/// ```swift
/// MetricsSystem.bootstrap(PrometheusMetricsFactory())          // once, at start-up
/// let balancer = try LoadBalancer(configuration: config, metrics: SwiftMetricsSink())
/// ```
public final class SwiftMetricsSink: MetricsSink, Sendable {
    private let factory: (any MetricsFactory)?
    private let counters = Mutex<[MetricKey: Counter]>([:])
    private let gauges = Mutex<[MetricKey: Gauge]>([:])
    private let timers = Mutex<[MetricKey: CoreMetrics.Timer]>([:])

    /// A sink creating its metrics with `factory`, or with the bootstrapped
    /// `MetricsSystem.factory` when nil.
    ///
    /// ```swift
    /// let sink = SwiftMetricsSink()                       // MetricsSystem's factory
    /// let testSink = SwiftMetricsSink(factory: TestMetrics())
    /// ```
    public init(factory: (any MetricsFactory)? = nil) {
        self.factory = factory
    }

    /// Increments the counter `name` with `dimensions` by `amount` (LBKit calls it):
    ///
    /// ```swift
    /// sink.increment(counter: "lb_requests_total", by: 1, dimensions: [("status_class", "2xx")])
    /// ```
    public func increment(counter name: String, by amount: Int, dimensions: [(String, String)]) {
        let key = MetricKey(name, dimensions)
        let counter = counters.withLock { cache in
            if let existing = cache[key] { return existing }
            let made = factory.map { Counter(label: name, dimensions: dimensions, factory: $0) }
                ?? Counter(label: name, dimensions: dimensions)
            cache[key] = made
            return made
        }
        counter.increment(by: amount)
    }

    /// Sets the gauge `name` with `dimensions` to `value` (LBKit calls it):
    ///
    /// ```swift
    /// sink.record(gauge: "lb_backend_in_flight", value: 3, dimensions: [("backend", "http://10.0.0.1:8080")])
    /// ```
    public func record(gauge name: String, value: Double, dimensions: [(String, String)]) {
        let key = MetricKey(name, dimensions)
        let gauge = gauges.withLock { cache in
            if let existing = cache[key] { return existing }
            let made = factory.map { Gauge(label: name, dimensions: dimensions, factory: $0) }
                ?? Gauge(label: name, dimensions: dimensions)
            cache[key] = made
            return made
        }
        gauge.record(value)
    }

    /// Records `seconds` in the timer `name` with `dimensions` (LBKit calls it):
    ///
    /// ```swift
    /// sink.record(histogram: "lb_request_duration_seconds", seconds: 0.012, dimensions: [])
    /// ```
    public func record(histogram name: String, seconds: Double, dimensions: [(String, String)]) {
        let key = MetricKey(name, dimensions)
        let timer = timers.withLock { cache in
            if let existing = cache[key] { return existing }
            let made = factory.map { CoreMetrics.Timer(label: name, dimensions: dimensions, factory: $0) }
                ?? CoreMetrics.Timer(label: name, dimensions: dimensions)
            cache[key] = made
            return made
        }
        timer.recordSeconds(seconds)
    }
}

/// A metric's identity: its name and its dimensions in order.
struct MetricKey: Hashable, Sendable {
    let name: String
    let dimensions: [String]

    init(_ name: String, _ dimensions: [(String, String)]) {
        self.name = name
        var flat: [String] = []
        flat.reserveCapacity(dimensions.count * 2)
        for (k, v) in dimensions {
            flat.append(k)
            flat.append(v)
        }
        self.dimensions = flat
    }
}
