import CoreMetrics
import LBKit
import Synchronization

/// LBKit's ``MetricsSink`` on swift-metrics: counters become `Counter`s, gauges `Gauge`s and
/// histograms (seconds) `Timer`s, under the same names and dimensions (`lb_requests_total`
/// {`status_class`}, `lb_request_duration_seconds`, `lb_backend_state` {`backend`, `state`}, ...).
///
/// Metric objects are created once per name and dimensions and cached (behind a `Mutex`), so the
/// request path does not go back to the metrics factory.
///
/// ```swift
/// // After MetricsSystem.bootstrap(...) (e.g. swift-prometheus), or with an explicit factory:
/// let balancer = try LoadBalancer(configuration: config, metrics: SwiftMetricsSink())
/// ```
public final class SwiftMetricsSink: MetricsSink {
    private struct Key: Hashable {
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

    private struct Cache {
        var counters: [Key: Counter] = [:]
        var gauges: [Key: Gauge] = [:]
        var timers: [Key: CoreMetrics.Timer] = [:]
    }

    private let factory: any MetricsFactory
    private let cache = Mutex(Cache())

    /// A sink creating its metrics with `factory` (default: the bootstrapped `MetricsSystem`).
    ///
    /// ```swift
    /// let sink = SwiftMetricsSink(factory: MetricsSystem.factory)
    /// ```
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
    }

    /// Adds `amount` to the `Counter` `name` with `dimensions`.
    ///
    /// ```swift
    /// sink.increment(counter: "lb_requests_total", by: 1, dimensions: [("status_class", "2xx")])
    /// ```
    public func increment(counter name: String, by amount: Int, dimensions: [(String, String)]) {
        let key = Key(name, dimensions)
        let counter = cache.withLock { cache in
            if let existing = cache.counters[key] { return existing }
            let made = Counter(label: name, dimensions: dimensions, factory: factory)
            cache.counters[key] = made
            return made
        }
        counter.increment(by: amount)
    }

    /// Sets the `Gauge` `name` with `dimensions` to `value`.
    ///
    /// ```swift
    /// sink.record(gauge: "lb_backend_in_flight", value: 2, dimensions: [("backend", "http://127.0.0.1:5101")])
    /// ```
    public func record(gauge name: String, value: Double, dimensions: [(String, String)]) {
        let key = Key(name, dimensions)
        let gauge = cache.withLock { cache in
            if let existing = cache.gauges[key] { return existing }
            let made = Gauge(label: name, dimensions: dimensions, factory: factory)
            cache.gauges[key] = made
            return made
        }
        gauge.record(value)
    }

    /// Records `seconds` in the `Timer` `name` with `dimensions`.
    ///
    /// ```swift
    /// sink.record(histogram: "lb_request_duration_seconds", seconds: 0.012, dimensions: [])
    /// ```
    public func record(histogram name: String, seconds: Double, dimensions: [(String, String)]) {
        let key = Key(name, dimensions)
        let timer = cache.withLock { cache in
            if let existing = cache.timers[key] { return existing }
            let made = CoreMetrics.Timer(label: name, dimensions: dimensions, factory: factory)
            cache.timers[key] = made
            return made
        }
        timer.recordSeconds(seconds)
    }
}
