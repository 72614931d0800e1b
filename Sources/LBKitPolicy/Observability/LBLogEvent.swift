/// How important a ``LBLogEvent`` is. The cases and their order match swift-log's `Logger.Level`,
/// so a bridge maps them one to one.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case trace, debug, info, notice, warning, error, critical

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// `info`, `warning`, ...
    public var description: String {
        switch self {
        case .trace: "trace"
        case .debug: "debug"
        case .info: "info"
        case .notice: "notice"
        case .warning: "warning"
        case .error: "error"
        case .critical: "critical"
        }
    }
}

/// What part of LBKit an event comes from.
public enum LogCategory: String, Sendable, CaseIterable {
    /// Backend state transitions (ejected, down, slow, healthy again).
    case health = "HEALTH"
    /// Configuration loaded, reloaded or rejected.
    case config = "CONFIG"
    /// A client was penalised, or throttling cannot identify clients.
    case throttle = "THROTTLE"
    /// Admin actions (drain, undrain).
    case admin = "ADMIN"
    /// Start-up and shutdown of the balancer.
    case lifecycle = "LIFECYCLE"
}

/// One log event: a level, a category, a human-readable message and structured metadata
/// (`backend`, `reason`, `client`, ...).
///
/// LBKit has no logging dependency: it hands events to a ``LogSink``. A swift-log bridge is a
/// few lines:
///
/// ```swift
/// let sink: LogSink = { event in
///     print(event.level, event.line, event.metadata)   // or: logger.log(level: ..., "\(event.message)", metadata: ...)
/// }
/// sink(LBLogEvent(level: .warning, category: .health, message: "Marking http://10.0.0.7:8080 as UNHEALTHY",
///               metadata: ["backend": "http://10.0.0.7:8080", "reason": "3 consecutive connection failures"]))
/// ```
public struct LBLogEvent: Sendable, CustomStringConvertible {
    /// How important the event is.
    public var level: LogLevel
    /// Where it comes from.
    public var category: LogCategory
    /// The message, without the category tag.
    public var message: String
    /// Structured details: `backend`, `reason`, `client`, `state`, ...
    public var metadata: [String: String]

    /// Creates an event.
    public init(level: LogLevel, category: LogCategory, message: String, metadata: [String: String] = [:]) {
        self.level = level
        self.category = category
        self.message = message
        self.metadata = metadata
    }

    /// The classic one-line form, `[HEALTH] Marking ... as UNHEALTHY (...)`, as lbserve prints it.
    public var line: String { "[\(category.rawValue)] \(message)" }

    public var description: String { line }
}

/// Receives LBKit's log events. Called from event-loop threads: keep it cheap and non-blocking.
public typealias LogSink = @Sendable (LBLogEvent) -> Void
