import LBKit
import Logging

extension Logger {
    /// This logger as an LBKit ``LogSink``: each event is logged at the same level (LBKit's
    /// levels are swift-log's, one to one), with the event's metadata plus its category under
    /// the `category` key (`HEALTH`, `CONFIG`, `THROTTLE`, `ADMIN`, `LIFECYCLE`).
    ///
    /// ```swift
    /// let logger = Logger(label: "gateway")
    /// let balancer = try LoadBalancer(configuration: config, log: logger.lbLogSink)
    /// // info: balancer started with 3 backends [category: LIFECYCLE]
    /// // warning: Marking http://127.0.0.1:5102 as UNHEALTHY [backend: ..., category: HEALTH, reason: ...]
    /// ```
    public var lbLogSink: LogSink {
        let logger = self
        return { event in
            let level = Logger.Level(event.level)
            guard logger.logLevel <= level else { return }
            var metadata = Logger.Metadata()
            for (key, value) in event.metadata { metadata[key] = .string(value) }
            metadata["category"] = .string(event.category.rawValue)
            logger.log(level: level, "\(event.message)", metadata: metadata, source: "LBKit")
        }
    }
}

extension Logger.Level {
    /// The swift-log level of an LBKit level (the same seven levels, in the same order).
    ///
    /// ```swift
    /// Logger.Level(LogLevel.notice)   // .notice
    /// ```
    public init(_ level: LogLevel) {
        switch level {
        case .trace: self = .trace
        case .debug: self = .debug
        case .info: self = .info
        case .notice: self = .notice
        case .warning: self = .warning
        case .error: self = .error
        case .critical: self = .critical
        }
    }
}
