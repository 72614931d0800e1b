import LBKit

/// The shape of lbserve's log lines (`--log-format`).
public enum LogFormat: String, Sendable, CaseIterable {
    /// `2026-11-29T10:00:00.123Z warning [HEALTH] Marking ... as UNHEALTHY (...)`.
    case text
    /// One JSON object per line:
    /// `{"ts":"2026-11-29T10:00:00.123Z","level":"warning","category":"HEALTH","message":"...","metadata":{...}}`.
    case json
}

/// lbserve's log sink: drops events below the level (`--log-level`) and writes the rest as text
/// or JSON lines (`--log-format`) on stdout, one `write(2)` per line.
///
/// ```swift
/// let log = LogOutput(level: .info, format: .json)
/// log.write(LBLogEvent(level: .warning, category: .health, message: "Marking http://10.0.0.7:8080 as UNHEALTHY (3 failed checks: refused)"))
/// ```
public struct LogOutput: Sendable {
    /// Least important level written.
    public var level: LogLevel
    /// Line format.
    public var format: LogFormat

    /// Creates a sink.
    public init(level: LogLevel = .info, format: LogFormat = .text) {
        self.level = level
        self.format = format
    }

    /// Writes `event` when its level is at least ``level``.
    public func write(_ event: LBLogEvent) {
        guard event.level >= level else { return }
        StandardOutput.line(Self.line(for: event, format: format, timestamp: AccessLogClock.timestamp()))
    }

    /// The sink for ``LoadBalancer``.
    public var sink: LogSink {
        let copy = self
        return { copy.write($0) }
    }

    /// A line of lbserve's own (start-up banner such as `Router running on port 8000`): as it is
    /// in text format (scripts wait for these exact lines), a `lifecycle` event in JSON format.
    public func banner(_ message: String) {
        switch format {
        case .text: StandardOutput.line(message)
        case .json: write(LBLogEvent(level: .notice, category: .lifecycle, message: message))
        }
    }

    /// The line for `event` (without the newline).
    public static func line(for event: LBLogEvent, format: LogFormat, timestamp: String) -> String {
        switch format {
        case .text:
            return "\(timestamp) \(event.level) \(event.line)".escapingControlCharacters
        case .json:
            let metadata = event.metadata.keys.sorted().map { "\(JSON.quote($0)):\(JSON.quote(event.metadata[$0] ?? ""))" }
            return "{\"ts\":\(JSON.quote(timestamp)),\"level\":\"\(event.level)\",\"category\":\(JSON.quote(event.category.rawValue)),"
                + "\"message\":\(JSON.quote(event.message)),\"metadata\":{\(metadata.joined(separator: ","))}}"
        }
    }
}
