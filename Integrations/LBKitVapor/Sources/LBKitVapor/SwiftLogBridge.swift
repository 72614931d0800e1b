import Logging

extension Logger.Level {
    /// The swift-log level of an LBKit ``LogLevel`` (one to one: trace ... critical).
    ///
    /// ```swift
    /// let level = Logger.Level(LogLevel.warning)   // .warning
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

extension Logger {
    /// An LBKit ``LogSink`` writing to this logger: each ``LBLogEvent`` at its own level, its
    /// message as the message, its metadata as string metadata plus `lb_category` (`HEALTH`,
    /// `CONFIG`, `THROTTLE`, `ADMIN`, `LIFECYCLE`), with source `LBKit`. The logger's level
    /// filters as usual.
    ///
    /// ```swift
    /// let balancer = try LoadBalancer(configuration: config, log: app.logger.loadBalancerLogSink)
    /// ```
    public var loadBalancerLogSink: LogSink {
        let logger = self
        return { event in
            let level = Logger.Level(event.level)
            guard level >= logger.logLevel else { return }
            var metadata = Logger.Metadata()
            for (key, value) in event.metadata { metadata[key] = .string(value) }
            metadata["lb_category"] = .string(event.category.rawValue)
            logger.log(level: level, "\(event.message)", metadata: metadata, source: "LBKit")
        }
    }

    /// An access-log sink for `LoadBalancer(accessLog:)` (used when
    /// `configuration.accessLog` is on): one line per request at `level`, like
    /// `GET /api/items 200`, with metadata `client`, `backend`, `attempts`, `duration_ms` and
    /// `user_agent`.
    ///
    /// ```swift
    /// config.accessLog = true
    /// let balancer = try LoadBalancer(configuration: config, accessLog: app.logger.loadBalancerAccessLogSink())
    /// ```
    public func loadBalancerAccessLogSink(level: Logger.Level = .info) -> @Sendable (AccessLogRecord) -> Void {
        let logger = self
        return { record in
            guard level >= logger.logLevel else { return }
            var metadata: Logger.Metadata = [
                "attempts": .string(String(record.attempts)),
                "duration_ms": .string(String(record.duration.milliseconds)),
            ]
            if let client = record.client { metadata["client"] = .string(client) }
            if let backend = record.backend { metadata["backend"] = .string(backend) }
            if let agent = record.userAgent { metadata["user_agent"] = .string(agent) }
            logger.log(level: level, "\(record.method) \(record.target) \(record.status)", metadata: metadata, source: "LBKit")
        }
    }
}
