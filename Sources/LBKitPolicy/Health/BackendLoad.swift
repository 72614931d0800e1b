/// What a backend's health answer says about its own load.
///
/// Two ways to report, both read from every answered active health check:
///
/// - **JSON body fields** `cpu` and `memory`, fractions (`0.42` = 42%): the form small Python
///   balancers read from their instances (`{"status":"ok","cpu":0.42,"memory":0.31}`). Only
///   top-level numeric fields of a JSON object count.
/// - **The agent header** ``agentHeaderName`` (`X-LB-Agent`), in the spirit of HAProxy's agent
///   check: words separated by spaces or commas. `ready` (or `up`) puts the backend back in
///   rotation, `drain` stops new requests (in-flight ones finish), `down` (or `maint`, `stopped`,
///   `fail`) takes it out, `N%` or `weight:N%` scales its share to N% (0-100), `cpu:F` and
///   `memory:F` report load as the body fields do. Unknown words are ignored (a newer backend
///   may say more than this balancer understands).
///
/// When both report a value, the header wins.
///
/// ```swift
/// let header = BackendLoadReport(agentHeader: "drain, weight:50%")
/// header.agent           // .drain
/// header.weightPercent   // 50
/// let body = BackendLoadReport(jsonBody: Array(#"{"status":"ok","cpu":0.95,"memory":0.2}"#.utf8))
/// body.cpu               // 0.95
/// ```
public struct BackendLoadReport: Sendable, Equatable {
    /// The response header a backend may set on its health answer.
    public static let agentHeaderName = "X-LB-Agent"

    /// CPU load as a fraction (0 = idle, 1 = saturated), if reported.
    public var cpu: Double?
    /// Memory use as a fraction of what the backend may use, if reported.
    public var memory: Double?
    /// What the backend asks for (`ready`, `drain`, `down`), if it said.
    public var agent: BackendAgentState?
    /// The share the backend asks for, in percent of its normal share (0...100), if it said.
    public var weightPercent: Int?

    /// A report of these values.
    public init(cpu: Double? = nil, memory: Double? = nil, agent: BackendAgentState? = nil, weightPercent: Int? = nil) {
        self.cpu = Self.fraction(cpu)
        self.memory = Self.fraction(memory)
        self.agent = agent
        self.weightPercent = weightPercent.map { min(max($0, 0), 100) }
    }

    /// Whether nothing was reported.
    public var isEmpty: Bool { cpu == nil && memory == nil && agent == nil && weightPercent == nil }

    /// Reads the agent header's words (see the type's description).
    public init(agentHeader: String) {
        self.init()
        for raw in agentHeader.lowercased().split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" || $0 == ";" }) {
            let word = Substring(raw)
            switch word {
            case "ready", "up": agent = .ready
            case "drain": agent = .drain
            case "down", "maint", "stopped", "fail", "failed": agent = .down
            default:
                if let value = Self.value(of: word, key: "cpu") {
                    cpu = Self.fraction(Self.number(value))
                } else if let value = Self.value(of: word, key: "memory") ?? Self.value(of: word, key: "mem") {
                    memory = Self.fraction(Self.number(value))
                } else {
                    let percent = Self.value(of: word, key: "weight") ?? word
                    if percent.hasSuffix("%"), let n = Int(percent.dropLast()), n >= 0 { weightPercent = min(n, 100) }
                }
            }
        }
    }

    /// Reads the top-level `cpu` and `memory` numbers of a JSON object body; anything else
    /// (not an object, fields of another type, nested fields of the same name) reports nothing.
    public init(jsonBody: some Collection<UInt8>) {
        self.init()
        var scanner = TopLevelJSONNumbers(Array(jsonBody))
        let numbers = scanner.numbers(for: ["cpu", "memory"])
        cpu = Self.fraction(numbers["cpu"])
        memory = Self.fraction(numbers["memory"])
    }

    /// `other`'s values where it has them, this report's elsewhere.
    public func overridden(by other: BackendLoadReport) -> BackendLoadReport {
        BackendLoadReport(cpu: other.cpu ?? cpu, memory: other.memory ?? memory, agent: other.agent ?? agent,
                          weightPercent: other.weightPercent ?? weightPercent)
    }

    /// `cpu 0.95, memory 0.2, agent drain, weight 50%` (what was reported), or `nothing reported`.
    public var summary: String {
        var parts: [String] = []
        if let cpu { parts.append("cpu \(formatFraction(cpu))") }
        if let memory { parts.append("memory \(formatFraction(memory))") }
        if let agent { parts.append("agent \(agent.rawValue)") }
        if let weightPercent { parts.append("weight \(weightPercent)%") }
        return parts.isEmpty ? "nothing reported" : parts.joined(separator: ", ")
    }

    private static func fraction(_ value: Double?) -> Double? {
        guard let value, value.isFinite, value >= 0 else { return nil }
        return min(value, 1_000)
    }

    private static func value(of word: Substring, key: String) -> Substring? {
        for separator in [":", "="] where word.hasPrefix(key + separator) { return word.dropFirst(key.count + 1) }
        return nil
    }

    private static func number(_ text: Substring) -> Double? {
        // Plain decimals only ("inf", "nan" and hex floats are not load figures).
        guard !text.isEmpty, text.utf8.allSatisfy({ (48...57).contains($0) || $0 == UInt8(ascii: ".") }) else { return nil }
        return Double(text)
    }
}

/// What a backend asks for through the agent header (HAProxy's agent-check words).
public enum BackendAgentState: String, Sendable, Hashable, CaseIterable {
    /// In rotation (`ready`, `up`): ends an earlier `drain` or `down`.
    case ready
    /// No new requests; in-flight requests finish (`drain`).
    case drain
    /// Out of rotation (`down`, `maint`, `stopped`, `fail`).
    case down
}

/// The thresholds applied to reported load (`--max-backend-cpu`, `--max-backend-memory`).
///
/// A backend reporting a value **above** a threshold leaves the rotation at once (one report
/// is enough: it is the backend's own measurement, not a guess). It comes back after
/// ``recoveryReports`` consecutive reports with every value at or below ``recoveryFraction``
/// x its threshold, so a backend hovering at the threshold does not flap in and out.
///
/// ```swift
/// let policy = BackendLoadPolicy(maxCPU: 0.9)
/// policy.isOver(BackendLoadReport(cpu: 0.95))   // "cpu 0.95 > max 0.9"
/// policy.isBelowRecovery(BackendLoadReport(cpu: 0.85))   // false: not below 0.81 yet
/// ```
public struct BackendLoadPolicy: Sendable, Equatable {
    /// Largest acceptable CPU fraction (nil: CPU is not judged).
    public var maxCPU: Double?
    /// Largest acceptable memory fraction (nil: memory is not judged).
    public var maxMemory: Double?
    /// An overloaded backend's values must fall to this fraction of the threshold to count as
    /// recovered (default 0.9: with `maxCPU` 0.8, back below 0.72).
    public var recoveryFraction: Double
    /// Consecutive recovered reports that bring an overloaded backend back (default 2).
    public var recoveryReports: Int

    /// A policy; thresholds that are not finite or not positive are ignored, the recovery
    /// fraction is kept within 0.1...1 and the report count within 1...100.
    public init(maxCPU: Double? = nil, maxMemory: Double? = nil, recoveryFraction: Double = 0.9, recoveryReports: Int = 2) {
        self.maxCPU = maxCPU.flatMap { $0.isFinite && $0 > 0 ? $0 : nil }
        self.maxMemory = maxMemory.flatMap { $0.isFinite && $0 > 0 ? $0 : nil }
        self.recoveryFraction = recoveryFraction.isFinite ? min(max(recoveryFraction, 0.1), 1) : 0.9
        self.recoveryReports = min(max(recoveryReports, 1), 100)
    }

    /// Whether any threshold is set.
    public var judgesLoad: Bool { maxCPU != nil || maxMemory != nil }

    /// Why `report` is over a threshold (`cpu 0.95 > max 0.9`), or nil when it is not.
    public func isOver(_ report: BackendLoadReport) -> String? {
        var over: [String] = []
        if let maxCPU, let cpu = report.cpu, cpu > maxCPU { over.append("cpu \(formatFraction(cpu)) > max \(formatFraction(maxCPU))") }
        if let maxMemory, let memory = report.memory, memory > maxMemory {
            over.append("memory \(formatFraction(memory)) > max \(formatFraction(maxMemory))")
        }
        return over.isEmpty ? nil : over.joined(separator: ", ")
    }

    /// Whether every judged value of `report` is at or below its recovery mark. A value the
    /// backend no longer reports counts as recovered: without evidence of overload the backend
    /// must not stay out for ever.
    public func isBelowRecovery(_ report: BackendLoadReport) -> Bool {
        if let maxCPU, let cpu = report.cpu, cpu > maxCPU * recoveryFraction { return false }
        if let maxMemory, let memory = report.memory, memory > maxMemory * recoveryFraction { return false }
        return true
    }

    /// `cpu 0.81, memory 0.72`: the recovery marks, for log lines.
    var recoveryMarks: String {
        var marks: [String] = []
        if let maxCPU { marks.append("cpu \(formatFraction(maxCPU * recoveryFraction))") }
        if let maxMemory { marks.append("memory \(formatFraction(maxMemory * recoveryFraction))") }
        return marks.joined(separator: ", ")
    }
}

/// Why reported load keeps a backend out of rotation.
public enum BackendLoadExclusion: Sendable, Hashable {
    /// A reported value is over a threshold (or has not yet recovered below its mark).
    case overloaded
    /// The backend asked for `drain`, or for a weight of 0%.
    case agentDrain
    /// The backend asked for `down`.
    case agentDown

    /// The state name operators see: `overloaded`, `draining` or `down`.
    public var stateName: BackendStateName {
        switch self {
        case .overloaded: .overloaded
        case .agentDrain: .draining
        case .agentDown: .down
        }
    }
}

/// One change of a backend's ``BackendLoadGate``: it left the rotation because of what it
/// reported (`to` set) or came back (`to` nil).
public struct BackendLoadTransition: Sendable, Equatable {
    /// The exclusion left (nil: it was in rotation).
    public var from: BackendLoadExclusion?
    /// The exclusion entered (nil: back in rotation).
    public var to: BackendLoadExclusion?
    /// Why, as it appears in parentheses in the log line.
    public var reason: String
    /// When.
    public var at: MonotonicInstant
}

/// Reported load of one backend, judged against a ``BackendLoadPolicy``: a pure state machine fed
/// with the report of every answered health check (the caller passes the time, so tests drive it
/// with a ``ManualClock``).
///
/// - The agent's `down` and `drain` (or `weight:0%`) exclude at once and hold until it says
///   `ready`/`up`, or stops saying them: every health answer is the backend's whole current
///   word, so an answer without the header ends an agent exclusion.
/// - Load over a threshold excludes at once; recovery needs ``BackendLoadPolicy/recoveryReports``
///   consecutive reports under the recovery mark (hysteresis).
/// - ``shareFactor`` is the agent's `weight:N%` as a fraction (1 without one), which the
///   cluster multiplies into the backend's share.
///
/// ```swift
/// let clock = ManualClock()
/// var gate = BackendLoadGate(policy: BackendLoadPolicy(maxCPU: 0.9), now: clock.now())
/// gate.record(BackendLoadReport(cpu: 0.95), at: clock.now())?.to   // .overloaded
/// gate.admits                                                      // false
/// gate.record(BackendLoadReport(cpu: 0.5), at: clock.now())        // nil: one report is not enough
/// gate.record(BackendLoadReport(cpu: 0.5), at: clock.now())?.to    // nil: back in rotation
/// ```
public struct BackendLoadGate: Sendable, Equatable {
    /// The thresholds.
    public let policy: BackendLoadPolicy
    /// The last report, if any health answer was read.
    public private(set) var lastReport: BackendLoadReport?
    /// When the last report was read.
    public private(set) var reportedAt: MonotonicInstant?
    /// Why the backend is out of rotation because of its reports (nil: it is not).
    public private(set) var exclusion: BackendLoadExclusion?
    /// Why, for stats (`cpu 0.95 > max 0.9`, `backend reports drain`).
    public private(set) var reason: String = ""
    /// When the current exclusion began.
    public private(set) var since: MonotonicInstant
    /// Times the backend was excluded for load over a threshold.
    public private(set) var overloadCount = 0
    private var recoveredReports = 0

    /// A gate with no report yet (in rotation).
    public init(policy: BackendLoadPolicy, now: MonotonicInstant) {
        self.policy = policy
        self.since = now
    }

    /// Whether reported load lets the backend take new requests.
    public var admits: Bool { exclusion == nil }

    /// The agent's requested share as a fraction in 0...1 (1 without a `weight` word).
    public var shareFactor: Double { Double(lastReport?.weightPercent ?? 100) / 100 }

    /// Feeds the report of one answered health check; returns the transition, if any.
    public mutating func record(_ report: BackendLoadReport, at now: MonotonicInstant) -> BackendLoadTransition? {
        lastReport = report
        reportedAt = now
        // The agent's own word first: it is an explicit request, not a measurement.
        if report.agent == .down { return enter(.agentDown, reason: "backend reports down", at: now) }
        if report.agent == .drain { return enter(.agentDrain, reason: "backend reports drain", at: now) }
        if report.weightPercent == 0 { return enter(.agentDrain, reason: "backend reports weight 0%", at: now) }
        if let over = policy.isOver(report) {
            recoveredReports = 0
            if exclusion != .overloaded { overloadCount += 1 }
            return enter(.overloaded, reason: over, at: now)
        }
        switch exclusion {
        case nil:
            return nil
        case .agentDown, .agentDrain:
            let word = report.agent == .ready ? "backend reports ready" : "backend no longer reports \(exclusion == .agentDown ? "down" : "drain")"
            // Leaving an agent exclusion while the load is still above the recovery mark: stay
            // out as overloaded rather than flap in and out.
            if policy.judgesLoad && !policy.isBelowRecovery(report) {
                recoveredReports = 0
                return enter(.overloaded, reason: "\(word), but \(report.summary) is above the recovery mark (\(policy.recoveryMarks))", at: now)
            }
            return leave(reason: word, at: now)
        case .overloaded:
            guard policy.isBelowRecovery(report) else {
                recoveredReports = 0
                return nil
            }
            recoveredReports += 1
            guard recoveredReports >= policy.recoveryReports else { return nil }
            let marks = policy.recoveryMarks
            return leave(reason: "\(recoveredReports) reports under \(marks.isEmpty ? "the thresholds" : marks): \(report.summary)", at: now)
        }
    }

    private mutating func enter(_ next: BackendLoadExclusion, reason: String, at now: MonotonicInstant) -> BackendLoadTransition? {
        guard exclusion != next else {
            self.reason = reason  // the latest figures, same state
            return nil
        }
        let transition = BackendLoadTransition(from: exclusion, to: next, reason: reason, at: now)
        exclusion = next
        self.reason = reason
        since = now
        recoveredReports = 0
        return transition
    }

    private mutating func leave(reason: String, at now: MonotonicInstant) -> BackendLoadTransition {
        let transition = BackendLoadTransition(from: exclusion, to: nil, reason: reason, at: now)
        exclusion = nil
        self.reason = ""
        since = now
        recoveredReports = 0
        return transition
    }
}

/// `0.95`, `0.2`, `0.815`: at most three decimals, no trailing zeros.
func formatFraction(_ value: Double) -> String {
    let thousandths = Int64((value * 1000).rounded())
    var text = String(thousandths / 1000)
    let fraction = thousandths % 1000
    if fraction != 0 {
        var digits = String(fraction)
        digits = String(repeating: "0", count: 3 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        text += "." + digits
    }
    return text
}

/// Finds top-level numeric fields of a JSON object, skipping everything else (strings with
/// escapes, nested objects and arrays) without building a document. Malformed input ends the
/// scan with what was found so far: a health body is the backend's, not trusted to be valid.
struct TopLevelJSONNumbers {
    private let bytes: [UInt8]
    private var i = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func numbers(for keys: Set<String>) -> [String: Double] {
        var found: [String: Double] = [:]
        skipSpace()
        guard peek == UInt8(ascii: "{") else { return found }
        i += 1
        while true {
            skipSpace()
            guard peek == UInt8(ascii: "\"") else { return found }
            guard let key = string() else { return found }
            skipSpace()
            guard peek == UInt8(ascii: ":") else { return found }
            i += 1
            skipSpace()
            if keys.contains(key), let n = number() {
                found[key] = n
            } else if !skipValue() {
                return found
            }
            skipSpace()
            if peek == UInt8(ascii: ",") { i += 1; continue }
            return found
        }
    }

    private var peek: UInt8? { i < bytes.count ? bytes[i] : nil }

    private mutating func skipSpace() {
        while let b = peek, b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { i += 1 }
    }

    /// A string at `i` (opening quote); escapes are kept raw (keys we look for have none).
    private mutating func string() -> String? {
        guard peek == UInt8(ascii: "\"") else { return nil }
        i += 1
        let start = i
        while let b = peek {
            if b == UInt8(ascii: "\\") { i += 2; continue }
            if b == UInt8(ascii: "\"") {
                let text = String(decoding: bytes[start..<i], as: UTF8.self)
                i += 1
                return text
            }
            i += 1
        }
        return nil
    }

    /// A JSON number at `i`, or nil (then `i` is unchanged).
    private mutating func number() -> Double? {
        let start = i
        while let b = peek, (48...57).contains(b) || b == UInt8(ascii: "-") || b == UInt8(ascii: "+") || b == UInt8(ascii: ".")
            || b == UInt8(ascii: "e") || b == UInt8(ascii: "E") { i += 1 }
        guard i > start, let d = Double(String(decoding: bytes[start..<i], as: UTF8.self)), d.isFinite else {
            i = start
            return nil
        }
        return d
    }

    /// Skips one value of any type; false when the input ends or is malformed.
    private mutating func skipValue() -> Bool {
        guard let b = peek else { return false }
        switch b {
        case UInt8(ascii: "\""):
            return string() != nil
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            while let c = peek {
                if c == UInt8(ascii: "\"") {
                    guard string() != nil else { return false }
                    continue
                }
                if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") { depth += 1 }
                if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
                    depth -= 1
                    if depth == 0 { i += 1; return true }
                }
                i += 1
            }
            return false
        default:
            // number, true, false, null: up to the next delimiter.
            let start = i
            while let c = peek, c != UInt8(ascii: ","), c != UInt8(ascii: "}"), c != 0x20, c != 0x0A, c != 0x0D, c != 0x09 { i += 1 }
            return i > start
        }
    }
}
