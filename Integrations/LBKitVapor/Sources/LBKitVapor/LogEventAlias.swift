/// LBKit's log event under a name that does not collide with swift-log.
///
/// swift-log 1.16 added a top-level `Logging.LogEvent` (the `LogHandler.log(event:)` API), and
/// Vapor re-exports `Logging`; so in a file that imports Vapor (or Logging) and LBKit, a bare
/// `LogEvent` is ambiguous. Use `LBLogEvent` (or `LBKit.LogEvent`) there:
///
/// ```swift
/// let sink: LogSink = { (event: LBLogEvent) in
///     print(event.level, event.line)
/// }
/// sink(LBLogEvent(level: .notice, category: .config, message: "reloaded"))
/// ```
public typealias LBLogEvent = LBKit.LogEvent
