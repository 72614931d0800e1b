import LBKit

/// One numeric `lbserve` setting: its flag, config key, environment variable and the values it
/// accepts. Flags, config file keys and environment variables are all checked against
/// ``all``, so a value accepted in one place is accepted everywhere, and every accepted value
/// stays far from any overflow downstream (the largest timeout is 24 hours, the largest count
/// 2^34).
///
/// ```swift
/// let timeout = NumericSetting.named(flag: "--timeout-ms")!
/// timeout.key                  // "timeout_ms"
/// timeout.kind                 // .integer(1...3_600_000)
/// var config = LoadBalancerConfiguration()
/// try timeout.apply("250", to: &config)   // config.attemptTimeout == .milliseconds(250)
/// ```
public struct NumericSetting: Sendable {
    /// The accepted values.
    public enum Kind: Sendable, Equatable {
        /// A base-10 integer in the range (on the command line: optional sign and digits only).
        case integer(ClosedRange<Int>)
        /// A decimal number in the range, such as `0.5` or `2e3` (never `inf`, `nan` or hex).
        case decimal(ClosedRange<Double>)
    }

    /// A value that passed the checks.
    public enum Value: Sendable, Equatable {
        case integer(Int)
        case decimal(Double)
    }

    /// The flag, e.g. `--timeout-ms`.
    public let flag: String
    /// The config file key: the flag in snake_case, e.g. `timeout_ms`.
    public let key: String
    /// The environment variable that gives a default: `LB_` and the key in upper case
    /// (`LB_RATE_LIMIT`, `LB_HEALTH_FALL`).
    public let environment: String?
    /// The default, as `--help` and the README show it (`8000`, `off`, `= rate`).
    public let defaultText: String
    /// What it does, in one line (for `--help`).
    public let meaning: String
    /// The accepted values.
    public let kind: Kind
    /// Whether the config file may say `null` for "unset" (off or automatic).
    public let nullable: Bool
    /// Whether the value is a rate that may carry a unit: `100`, `100/s`, `100/minute`, `5/h`
    /// (flags, environment, and config strings); stored per second.
    public let acceptsRateUnits: Bool
    private let set: @Sendable (inout LoadBalancerConfiguration, Value?) -> Void

    private init(_ flag: String, _ kind: Kind, nullable: Bool, rate: Bool = false, defaultText: String, meaning: String,
                 _ set: @escaping @Sendable (inout LoadBalancerConfiguration, Value?) -> Void) {
        self.acceptsRateUnits = rate
        self.flag = flag
        self.key = String(flag.dropFirst(2).map { $0 == "-" ? "_" : $0 })
        self.environment = "LB_" + self.key.uppercased()
        self.defaultText = defaultText
        self.meaning = meaning
        self.kind = kind
        self.nullable = nullable
        self.set = set
    }

    private static func integer(_ flag: String, _ range: ClosedRange<Int>, _ defaultText: String, _ meaning: String,
                                _ set: @escaping @Sendable (inout LoadBalancerConfiguration, Int) -> Void) -> NumericSetting {
        NumericSetting(flag, .integer(range), nullable: false, defaultText: defaultText, meaning: meaning) { c, v in
            if case .integer(let n) = v { set(&c, n) }
        }
    }

    private static func optionalInteger(_ flag: String, _ range: ClosedRange<Int>, _ defaultText: String, _ meaning: String,
                                        _ set: @escaping @Sendable (inout LoadBalancerConfiguration, Int?) -> Void) -> NumericSetting {
        NumericSetting(flag, .integer(range), nullable: true, defaultText: defaultText, meaning: meaning) { c, v in
            if case .integer(let n) = v { set(&c, n) } else { set(&c, nil) }
        }
    }

    private static func optionalDecimal(_ flag: String, _ range: ClosedRange<Double>, rate: Bool = false, _ defaultText: String, _ meaning: String,
                                        _ set: @escaping @Sendable (inout LoadBalancerConfiguration, Double?) -> Void) -> NumericSetting {
        NumericSetting(flag, .decimal(range), nullable: true, rate: rate, defaultText: defaultText, meaning: meaning) { c, v in
            if case .decimal(let d) = v { set(&c, d) } else { set(&c, nil) }
        }
    }

    /// The largest timeout or period any setting accepts: one hour for request-path timeouts,
    /// 24 hours for penalty windows.
    private static let hourMs = 3_600_000
    private static let dayMs = 86_400_000

    /// Every numeric setting, in the order of the README's flag table.
    public static let all: [NumericSetting] = [
        .integer("--port", 0...65535, "8000", "listen port (0 = any free port; the chosen one is printed)") { $0.port = $1 },
        .integer("--resolve-interval-ms", 0...hourMs, "5000", "re-resolve backend host names every N ms: one backend per address (0 = once at start)") {
            $0.resolveInterval = .milliseconds($1)
        },
        .integer("--timeout-ms", 1...hourMs, "3000", "deadline of one attempt (connect + request + whole response)") {
            $0.attemptTimeout = .milliseconds($1)
        },
        .optionalInteger("--request-timeout-ms", 1...hourMs, "timeout x max-attempts", "one deadline shared by all attempts of a request") {
            $0.requestTimeout = $1.map { .milliseconds($0) }
        },
        .integer("--connect-timeout-ms", 1...600_000, "1000", "TCP connect timeout per attempt") { $0.connectTimeout = .milliseconds($1) },
        .integer("--max-attempts", 1...10, "3", "distinct backends tried per request") { $0.maxAttempts = $1 },
        .optionalInteger("--hedge-after-ms", 0...hourMs, "auto with max-delay",
                         "hedge a replayable request not answering after N ms (0 = never)") { $0.hedgeAfter = $1.map { .milliseconds($0) } },
        .integer("--max-fails", 1...1000, "3", "consecutive failures that eject a backend") { $0.maxFails = $1 },
        .integer("--health-interval-ms", 0...hourMs, "2000", "active GET health check period (0 = no active checks)") {
            $0.healthInterval = .milliseconds($1)
        },
        .optionalInteger("--health-timeout-ms", 1...600_000, "min(interval, 2 s), at least 2 x max-delay", "timeout of one health check") {
            $0.healthTimeout = $1.map { .milliseconds($0) }
        },
        .integer("--health-fall", 1...100, "3", "consecutive failed health checks that mark a backend down") { $0.healthFall = $1 },
        .integer("--health-rise", 1...100, "2", "consecutive passing health checks that bring a backend back") { $0.healthRise = $1 },
        .integer("--slow-start-ms", 0...hourMs, "10000", "a re-admitted backend's share ramps from 10% to 100% over N ms (0 = at once)") {
            $0.slowStart = .milliseconds($1)
        },
        .integer("--ejection-base-ms", 1...hourMs, "5000", "first passive ejection; the n-th in a row lasts n times as long (2^(n-1) after slow or hung requests)") {
            $0.ejectionBase = .milliseconds($1)
        },
        .integer("--ejection-max-ms", 1...dayMs, "60000", "longest passive ejection (at least --ejection-base-ms)") {
            $0.ejectionMax = .milliseconds($1)
        },
        .integer("--max-ejected-percent", 1...100, "50", "most backends passively ejected at once, in percent (at least one)") {
            $0.maxEjectedPercent = $1
        },
        .optionalInteger("--max-delay-ms", 1...hourMs, "off", "latency above which a backend is excluded as slow") {
            $0.maxDelay = $1.map { .milliseconds($0) }
        },
        .optionalDecimal("--max-backend-cpu", 0.01...1, "off",
                         "CPU fraction a backend may report in its health answer before it leaves the rotation (back under 90% of it)") {
            $0.maxBackendCPU = $1
        },
        .optionalDecimal("--max-backend-memory", 0.01...1, "off",
                         "memory fraction a backend may report in its health answer before it leaves the rotation (back under 90% of it)") {
            $0.maxBackendMemory = $1
        },
        // The throttle's own limits (ThrottleConfiguration clamps to these; nothing is clamped silently).
        .optionalDecimal("--rate-limit", 0.000001...1_000_000_000, rate: true, "off",
                         "requests per client IP: N or N/s per second, N/minute, N/hour") { $0.rateLimit = $1 },
        .optionalInteger("--burst", 1...1_000_000, "= rate", "burst per client IP") { $0.burst = $1 },
        .integer("--throttle-max-keys", 1...100_000_000, "100000", "most client IPs tracked (least recently seen evicted)") {
            $0.throttleMaxKeys = $1
        },
        .integer("--penalty-threshold", 0...1_000_000, "10", "429s within the penalty window that penalise a client (0 = off)") {
            $0.penaltyThreshold = $1
        },
        .integer("--penalty-window-ms", 1...dayMs, "10000", "window for counting a client's 429s") { $0.penaltyWindow = .milliseconds($1) },
        .integer("--penalty-duration-ms", 0...dayMs, "60000", "how long a penalised client stays penalised") {
            $0.penaltyDuration = .milliseconds($1)
        },
        .integer("--penalty-factor", 1...1000, "4", "rate and burst are divided by this while penalised") { $0.penaltyFactor = $1 },
        .integer("--max-body-bytes", 0...(1 << 34), "8388608", "larger request bodies get 413") { $0.maxBodyBytes = $1 },
        .integer("--threads", 1...256, "cores", "event loops") { $0.loopCount = $1 },
        .integer("--throttle-sync-ms", 1...10_000, "20", "how often each instance synchronises its throttle table with --throttle-store") {
            $0.throttleSyncInterval = .milliseconds($1)
        },
        .integer("--throttle-store-timeout-ms", 1...60_000, "250", "a synchronisation slower than this counts as the store unavailable (local fallback)") {
            $0.throttleStoreTimeout = .milliseconds($1)
        },
    ]

    /// The per-backend `weight` of the config file (it has no flag).
    public static let weightRange = LoadBalancerConfiguration.weightRange

    private static let byFlag: [String: NumericSetting] = Dictionary(uniqueKeysWithValues: all.map { ($0.flag, $0) })
    private static let byKey: [String: NumericSetting] = Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0) })

    /// The setting with this flag (`--timeout-ms`), if it is numeric.
    public static func named(flag: String) -> NumericSetting? { byFlag[flag] }

    /// The setting with this config key (`timeout_ms`), if it is numeric.
    public static func named(key: String) -> NumericSetting? { byKey[key] }

    /// What the setting accepts, for messages: `"an integer in 1...3600000"`,
    /// `"a number in 0.000001...1000000000"`.
    public var expectation: String {
        switch kind {
        case .integer(let r): "an integer in \(r.lowerBound)...\(r.upperBound)"
        case .decimal(let r) where acceptsRateUnits:
            "a rate in \(Self.plain(r.lowerBound))...\(Self.plain(r.upperBound)) per second, written N, N/s, N/minute or N/hour"
        case .decimal(let r): "a number in \(Self.plain(r.lowerBound))...\(Self.plain(r.upperBound))"
        }
    }

    /// Checks command-line or environment text; nil when it is not an accepted value.
    public func value(parsing text: String) -> Value? {
        switch kind {
        case .integer(let range):
            guard let n = Int(text), range.contains(n) else { return nil }
            return .integer(n)
        case .decimal(let range):
            var text = Substring(text)
            var perSeconds = 1.0
            if acceptsRateUnits, let slash = text.firstIndex(of: "/") {
                guard let seconds = Self.rateUnits[String(text[text.index(after: slash)...]).lowercased()] else { return nil }
                perSeconds = seconds
                text = text[..<slash]
            }
            // Digits with an optional fraction and exponent only: Double(_:) alone would also take
            // "inf", "nan" and hex floats such as "0x1p3".
            guard let first = text.utf8.first, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) || first == UInt8(ascii: "."),
                  text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || "+-.eE".utf8.contains($0) }),
                  let n = Double(text), n.isFinite
            else { return nil }
            let d = n / perSeconds
            guard d.isFinite, range.contains(d) else { return nil }
            return .decimal(d)
        }
    }

    /// The units a rate may carry after `/`, in seconds: `100/minute` is 100 / 60 per second.
    static let rateUnits: [String: Double] = [
        "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
    ]

    /// Parses `text` (from the flag or environment variable `name`) and stores it in `config`;
    /// the error is one line: `<name>: '<text>' is not <expectation>`.
    public func apply(_ text: String, to config: inout LoadBalancerConfiguration, name: String? = nil) throws(CommandLineError) {
        guard let v = value(parsing: text) else {
            throw CommandLineError("\(name ?? flag): '\(text)' is not \(expectation)")
        }
        set(&config, v)
    }

    /// Stores a value that passed the checks (nil = unset, for nullable settings).
    public func apply(_ value: Value?, to config: inout LoadBalancerConfiguration) {
        set(&config, value)
    }

    /// `1e-06` as `0.000001`, `1e9` as `1000000000` (nine decimals at most).
    static func plain(_ d: Double) -> String {
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) }
        guard d.isFinite, abs(d) < 9e9 else { return "\(d)" }
        let scaled = Int64((abs(d) * 1e9).rounded())
        var fraction = String(scaled % 1_000_000_000)
        fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return (d < 0 ? "-" : "") + String(scaled / 1_000_000_000) + (fraction.isEmpty ? "" : "." + fraction)
    }
}
