import LBKit
internal import CLBKitShim
import Glibc
import Synchronization

/// Buffers access-log lines in memory and writes them to stdout from a background thread every
/// 50 ms, so request handling never blocks on a slow stdout. Bounded: past 4 MiB of unwritten
/// lines, new lines are dropped and counted.
///
/// ```swift
/// AccessLogWriter.shared.write("2026-11-21T07:00:00Z 127.0.0.1 \"GET /\" 200")
/// ```
public final class AccessLogWriter: Sendable {
    /// The process-wide writer (started on first use).
    public static let shared = AccessLogWriter()

    private let pending = Mutex<[UInt8]>([])
    private let droppedLines = Atomic<Int>(0)
    private let limit = 4 * 1024 * 1024

    private init() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        _ = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let writer = Unmanaged<AccessLogWriter>.fromOpaque(arg).takeRetainedValue()
            writer.flushLoop()
            return nil
        }, box)
    }

    /// Queues one line (a newline is added).
    public func write(_ line: String) {
        let accepted = pending.withLock { buffer -> Bool in
            guard buffer.count < limit else { return false }
            buffer.append(contentsOf: line.utf8)
            buffer.append(0x0A)
            return true
        }
        if !accepted { droppedLines.add(1, ordering: .relaxed) }
    }

    /// Lines dropped because the buffer was full.
    public var dropped: Int { droppedLines.load(ordering: .relaxed) }

    /// Writes everything queued so far (also called by the background thread).
    public func flush() {
        var chunk: [UInt8] = []
        pending.withLock { swap(&$0, &chunk) }
        guard !chunk.isEmpty else { return }
        chunk.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(1, raw.baseAddress.map { $0 + offset }, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                offset += n
            }
        }
    }

    private func flushLoop() {
        while true {
            usleep(50_000)
            flush()
        }
    }
}

/// UTC timestamps for log lines.
public enum AccessLogClock {
    /// e.g. `2026-11-21T07:00:00.123Z`.
    public static func timestamp() -> String {
        let ns = lbk_wall_ns()
        var seconds = time_t(ns / 1_000_000_000)
        let millis = Int(ns / 1_000_000 % 1000)
        var tm = tm()
        gmtime_r(&seconds, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }
}


/// lbserve's access-log line for one request, in text:
/// `2026-11-21T07:00:00.123Z 127.0.0.1 "POST /" 200 backend=http://127.0.0.1:5001 attempts=1 duration_ms=0.412 upstream_status=200 bytes_in=14 bytes_out=32 user_agent="curl/8.5.0"`
/// (`-` for what is unknown or absent), or with `--log-format json` one object per line:
/// `{"ts":...,"level":"info","category":"ACCESS","client":"127.0.0.1","method":"POST","target":"/","status":200,...}`.
///
/// Quoted fields (the method and target, the user agent) are escaped: `"` and `\` get a
/// backslash, control bytes and non-ASCII are written as `\xHH`, so a line is always one line
/// and a quote inside a field cannot end it.
public enum AccessLogFormat {
    /// The text line for `record`.
    public static func line(_ record: AccessLogRecord) -> String {
        line(record, timestamp: AccessLogClock.timestamp())
    }

    /// The line for `record` in `format`.
    public static func line(_ record: AccessLogRecord, format: LogFormat) -> String {
        let ts = AccessLogClock.timestamp()
        return format == .json ? json(record, timestamp: ts) : line(record, timestamp: ts)
    }

    /// The text line with a given timestamp.
    public static func line(_ record: AccessLogRecord, timestamp: String) -> String {
        func number(_ n: Int?) -> String { n.map(String.init) ?? "-" }
        let ua = record.userAgent.map { "\"" + escaped($0) + "\"" } ?? "-"
        return "\(timestamp) \(record.client ?? "-") \"\(escaped(record.method)) \(escaped(record.target))\" \(record.status) "
            + "backend=\(record.backend ?? "-") attempts=\(record.attempts) duration_ms=\(String(format3: record.duration.milliseconds)) "
            + "upstream_status=\(number(record.upstreamStatus)) bytes_in=\(number(record.bytesIn)) bytes_out=\(number(record.bytesOut)) "
            + "user_agent=\(ua)"
    }

    /// The JSON line with a given timestamp.
    public static func json(_ record: AccessLogRecord, timestamp: String) -> String {
        func number(_ n: Int?) -> String { n.map(String.init) ?? "null" }
        func string(_ s: String?) -> String { s.map(JSON.quote) ?? "null" }
        return "{\"ts\":\(JSON.quote(timestamp)),\"level\":\"info\",\"category\":\"ACCESS\",\"client\":\(string(record.client)),"
            + "\"method\":\(JSON.quote(record.method)),\"target\":\(JSON.quote(record.target)),\"status\":\(record.status),"
            + "\"backend\":\(string(record.backend)),\"attempts\":\(record.attempts),"
            + "\"duration_ms\":\(String(format3: record.duration.milliseconds)),\"upstream_status\":\(number(record.upstreamStatus)),"
            + "\"bytes_in\":\(number(record.bytesIn)),\"bytes_out\":\(number(record.bytesOut)),\"user_agent\":\(string(record.userAgent))}"
    }

    /// `"` and `\` escaped with a backslash; bytes below 0x20, 0x7F and above (non-ASCII) as `\xHH`.
    public static func escaped(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += "\\\""
            case UInt8(ascii: "\\"): out += "\\\\"
            case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "\\x" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}
