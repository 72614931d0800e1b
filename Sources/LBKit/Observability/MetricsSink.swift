/// Receives LBKit's metrics: counters, gauges and histograms by name and dimensions.
///
/// LBKit has no metrics dependency; implement this protocol to bridge to swift-metrics,
/// StatsD or anything else. Calls come from event-loop threads on the request path: keep them
/// cheap (cache your metric objects by name and dimensions).
///
/// ```swift
/// struct PrintingMetrics: MetricsSink {
///     func increment(counter name: String, by amount: Int, dimensions: [(String, String)]) {
///         print(name, amount, dimensions)
///     }
///     func record(gauge name: String, value: Double, dimensions: [(String, String)]) {}
///     func record(histogram name: String, seconds: Double, dimensions: [(String, String)]) {}
/// }
/// ```
///
/// Names and dimensions emitted (the same families as `/_lb/metrics`, where the status class
/// label is called `code`):
/// - `lb_requests_total` {`status_class`} per client request;
/// - `lb_request_duration_seconds` histogram per client request;
/// - `lb_backend_responses_total` {`backend`, `status_class`} per answer a backend gave to a
///   proxied attempt (retried 5xx and hedge losers included);
/// - `lb_backend_ejections_total` {`backend`, `reason`} per exclusion (reasons: the raw values of
///   ``ExclusionCause``);
/// - `lb_throttled_total` (429s), `lb_no_backend_total` (503s with no backend eligible),
///   `lb_retries_total` (attempts beyond the first), `lb_reloads_total` {`outcome`: `success`,
///   `failure`};
/// - `lb_health_checks_total` {`backend`, `result`, `cause`} per active health check;
/// - gauges every health round: `lb_backend_in_flight` {`backend`}, `lb_backend_up` {`backend`} (0/1),
///   `lb_backend_share` {`backend`} (slow-start share, 0 when it takes no requests),
///   `lb_backend_state` {`backend`, `state`} (0/1, one series per ``BackendStateName``), and
///   `lb_backend_reported_cpu` / `lb_backend_reported_memory` {`backend`} once a backend reports
///   its load (see ``BackendLoadReport``).
public protocol MetricsSink: Sendable {
    /// Adds `amount` to the counter `name` with `dimensions`.
    func increment(counter name: String, by amount: Int, dimensions: [(String, String)])
    /// Sets the gauge `name` with `dimensions` to `value`.
    func record(gauge name: String, value: Double, dimensions: [(String, String)])
    /// Records one observation, in seconds, in the histogram (or timer) `name`.
    func record(histogram name: String, seconds: Double, dimensions: [(String, String)])
}

/// One client request as the access log sees it, handed to the balancer's access-log sink.
///
/// ```swift
/// let sink: @Sendable (AccessLogRecord) -> Void = { record in
///     print(record.client ?? "-", record.method, record.target, record.status, record.backend ?? "-")
/// }
/// ```
public struct AccessLogRecord: Sendable {
    /// The client address as resolved for throttling (nil when unknown).
    public var client: String?
    /// The request method.
    public var method: String
    /// The request target.
    public var target: String
    /// The status sent to the client.
    public var status: Int
    /// The backend that produced the response (nil when none did).
    public var backend: String?
    /// Backends tried.
    public var attempts: Int
    /// Time from the request reaching the balancer to its response.
    public var duration: Duration
    /// The `User-Agent` field, if any.
    public var userAgent: String?
    /// The status the backend answered (nil when no backend answered: the balancer, the throttle
    /// or a middleware produced the response).
    public var upstreamStatus: Int?
    /// Request body bytes: the buffered body's size, or its `Content-Length` when streamed (nil
    /// when a streamed body has no length).
    public var bytesIn: Int?
    /// Response body bytes: the buffered body's size, or its `Content-Length` when streamed (nil
    /// when a streamed body has no length).
    public var bytesOut: Int?

    /// Creates a record (for tests of access-log sinks).
    public init(client: String?, method: String, target: String, status: Int, backend: String?, attempts: Int,
                duration: Duration, userAgent: String?, upstreamStatus: Int? = nil, bytesIn: Int? = nil,
                bytesOut: Int? = nil) {
        self.client = client
        self.method = method
        self.target = target
        self.status = status
        self.backend = backend
        self.attempts = attempts
        self.duration = duration
        self.userAgent = userAgent
        self.upstreamStatus = upstreamStatus
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
    }
}

/// The balancer's ``MetricsSink`` held in a final class.
///
/// The balancer reads its sink on every request. Held as `(any MetricsSink)?`, each read copies
/// an opaque existential out of an optional through the generic value witnesses (about 80
/// instructions, and as many to destroy it); a class reference is copied with one retain.
final class MetricsSinkBox: MetricsSink {
    let sink: any MetricsSink

    /// Boxes `sink`; nil when there is none.
    init?(_ sink: (any MetricsSink)?) {
        guard let sink else { return nil }
        self.sink = sink
    }

    func increment(counter name: String, by amount: Int, dimensions: [(String, String)]) {
        sink.increment(counter: name, by: amount, dimensions: dimensions)
    }

    func record(gauge name: String, value: Double, dimensions: [(String, String)]) {
        sink.record(gauge: name, value: value, dimensions: dimensions)
    }

    func record(histogram name: String, seconds: Double, dimensions: [(String, String)]) {
        sink.record(histogram: name, seconds: seconds, dimensions: dimensions)
    }
}
