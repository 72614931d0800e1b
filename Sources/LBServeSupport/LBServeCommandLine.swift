import LBKit

/// Parses `lbserve` flags (see the contract and README); `LB_*` environment variables (one per
/// numeric setting, e.g. `LB_RATE_LIMIT`, `LB_HEALTH_FALL`) provide defaults that the config file
/// and flags override.
///
/// ```swift
/// let options = try LBServeCommandLine.parse(["--port", "8000", "--backend", "http://127.0.0.1:5001"])
/// ```
public enum LBServeCommandLine {
    /// What the flags have built so far.
    public struct ParseState: Sendable {
        var options: LBServeOptions
        var backendsFromFlags = false
    }

    // MARK: The flag table

    /// Every flag lbserve accepts, in `--help` order. The parser accepts exactly these.
    public static let flags: [LBServeFlag] = {
        var placed: Set<String> = []
        var table: [LBServeFlag] = []
        for entry in layout {
            switch entry {
            case .numeric(let name):
                guard let setting = NumericSetting.named(flag: name) else { continue }
                table.append(numericFlag(setting))
                placed.insert(name)
            case .other(let flag):
                table.append(flag)
                placed.insert(flag.name)
            }
        }
        // A numeric setting left out of the layout is still a flag (and listed), at the end.
        for setting in NumericSetting.all where !placed.contains(setting.flag) { table.append(numericFlag(setting)) }
        return table
    }()

    /// The names of every accepted flag (`--port`, `--help`, ...).
    public static var flagNames: [String] { flags.map(\.name) }

    private static let byName: [String: LBServeFlag] = {
        var d: [String: LBServeFlag] = [:]
        for f in flags { d[f.name] = f }
        d["-h"] = d["--help"]
        return d
    }()

    private enum LayoutEntry {
        case numeric(String)
        case other(LBServeFlag)
    }

    private static func flag(_ name: String, _ value: String?, _ defaultText: String, _ meaning: String, repeatable: Bool = false,
                             _ apply: @escaping @Sendable (inout ParseState, String) throws(CommandLineError) -> Void) -> LayoutEntry {
        .other(LBServeFlag(name: name, value: value, defaultText: defaultText, meaning: meaning, repeatable: repeatable,
                           environment: environmentName(flag: name), apply: apply))
    }

    /// Flags that are actions, not settings: no environment variable.
    private static let actionFlags: Set<String> = ["--help", "--version", "--check-config"]

    /// `--trusted-proxy` -> `LB_TRUSTED_PROXY` (nil for the action flags).
    static func environmentName(flag: String) -> String? {
        guard !actionFlags.contains(flag) else { return nil }
        return "LB_" + String(flag.dropFirst(2).map { $0 == "-" ? "_" : $0 }).uppercased()
    }

    private static func numericFlag(_ setting: NumericSetting) -> LBServeFlag {
        let value: String
        switch setting.kind {
        case .integer: value = setting.key.hasSuffix("_ms") ? "MS" : "N"
        case .decimal: value = setting.acceptsRateUnits ? "R" : "F"
        }
        return LBServeFlag(name: setting.flag, value: value, defaultText: setting.defaultText, meaning: setting.meaning,
                           repeatable: false, environment: setting.environment) { state, text throws(CommandLineError) in
            try setting.apply(text, to: &state.options.balancer)
        }
    }

    private static let layout: [LayoutEntry] = [
        flag("--help", nil, "", "print this help and exit") { s, _ in s.options.showHelp = true },
        flag("--version", nil, "", "print `lbserve <version>` and exit") { s, _ in s.options.showVersion = true },
        flag("--check-config", nil, "", "check flags and config file, print the effective configuration as JSON, exit 0 (or print the problems, exit 2)") {
            s, _ in s.options.checkConfig = true
        },
        flag("--config", "FILE", "none", "JSON configuration file; flags override it; SIGHUP reloads it") { s, v in s.options.configFile = v },
        .numeric("--port"),
        flag("--host", "ADDR", "0.0.0.0", "listen address") { s, v throws(CommandLineError) in
            guard !v.isEmpty else { throw CommandLineError("--host: must not be empty") }
            s.options.balancer.host = v
        },
        flag("--backend", "URL", "demo backends", "http://host:port of a backend; rotation follows this order", repeatable: true) {
            s, v throws(CommandLineError) in
            if !s.backendsFromFlags {
                s.backendsFromFlags = true
                s.options.balancer.backends = []
                s.options.balancer.weights = []
            }
            do throws(BackendURLError) {
                s.options.balancer.backends.append(try BackendURL(parsing: v))
            } catch {
                throw CommandLineError("--backend: \(error.message)")
            }
        },
        .numeric("--resolve-interval-ms"),
        flag("--strategy", "S", "round-robin", "round-robin, weighted, least-requests (P2C) or peak-ewma (P2C on latency x load)") {
            s, v throws(CommandLineError) in
            guard let strategy = BalancingStrategy(rawValue: v) else {
                throw CommandLineError("--strategy: '\(v)' is not one of round-robin, weighted, least-requests, peak-ewma")
            }
            s.options.balancer.strategy = strategy
        },
        .numeric("--timeout-ms"),
        .numeric("--request-timeout-ms"),
        .numeric("--connect-timeout-ms"),
        .numeric("--max-attempts"),
        flag("--retry-non-idempotent", nil, "off", "also replay POST/PATCH on another backend after a 5xx or timeout") {
            s, _ in s.options.balancer.retryNonIdempotent = true
        },
        .numeric("--hedge-after-ms"),
        .numeric("--max-fails"),
        .numeric("--ejection-base-ms"),
        .numeric("--ejection-max-ms"),
        .numeric("--max-ejected-percent"),
        .numeric("--health-interval-ms"),
        flag("--health-path", "PATH", "/health",
             "active health check path; when set, only 2xx/3xx pass (unset: 404/405/501 = no health endpoint, passes)") { s, v throws(CommandLineError) in
            if let problem = HTTP1Syntax.originFormProblem(v) { throw CommandLineError("--health-path: '\(v)' \(problem)") }
            s.options.balancer.healthPath = v
        },
        flag("--health-expect-status", "LIST", "auto", "statuses a health check accepts, e.g. 200-399 or 200,204") {
            s, v throws(CommandLineError) in
            guard let set = HTTPStatusSet(parsing: v) else {
                throw CommandLineError("--health-expect-status: '\(v)' is not a list of statuses or ranges in 100-599 (e.g. 200-399 or 200,204)")
            }
            s.options.balancer.healthExpectStatus = set
        },
        .numeric("--health-timeout-ms"),
        .numeric("--health-fall"),
        .numeric("--health-rise"),
        .numeric("--slow-start-ms"),
        .numeric("--max-delay-ms"),
        .numeric("--max-backend-cpu"),
        .numeric("--max-backend-memory"),
        .numeric("--rate-limit"),
        .numeric("--burst"),
        .numeric("--throttle-max-keys"),
        .numeric("--penalty-threshold"),
        .numeric("--penalty-window-ms"),
        .numeric("--penalty-duration-ms"),
        .numeric("--penalty-factor"),
        flag("--trusted-proxy", "CIDR", "none", "peers whose X-Forwarded-For is believed", repeatable: true) { s, v throws(CommandLineError) in
            guard let range = CIDRRange(v) else { throw CommandLineError("--trusted-proxy: '\(v)' is not a CIDR range") }
            s.options.balancer.trustedProxies.append(range)
        },
        .numeric("--max-body-bytes"),
        flag("--admin-allow", "CIDR", "loopback", "clients the /_lb/* endpoints answer (others' /_lb/* requests are proxied)", repeatable: true) {
            s, v throws(CommandLineError) in
            guard let range = CIDRRange(v) else { throw CommandLineError("--admin-allow: '\(v)' is not a CIDR range") }
            s.options.balancer.adminAllow.append(range)
        },
        flag("--admin-listen", "HOST:PORT", "none", "serve /_lb/* on this separate listener (the public one then proxies /_lb/*)") {
            s, v throws(CommandLineError) in
            guard let address = ListenAddress(parsing: v) else {
                throw CommandLineError("--admin-listen: '\(v)' is not HOST:PORT (e.g. 127.0.0.1:9901)")
            }
            s.options.serve.adminListen = address
        },
        flag("--admin-token", "T", "none", "lets other clients use /_lb/backends/drain with X-Admin-Token: T") { s, v throws(CommandLineError) in
            guard v.count >= 8 else { throw CommandLineError("--admin-token: use at least 8 characters") }
            s.options.balancer.adminToken = v
        },
        flag("--backend-header", "NAME|off", "X-Backend", "response header naming the backend; off = none, and error bodies name no backend") {
            s, v throws(CommandLineError) in
            s.options.balancer.backendHeader = try backendHeader(v, name: "--backend-header")
        },
        flag("--router-health-path", "PATH", "none", "answer GET PATH here: {\"status\":\"router ok\",...} (503 when no backend is eligible)") {
            s, v throws(CommandLineError) in
            if let problem = HTTP1Syntax.originFormProblem(v) { throw CommandLineError("--router-health-path: '\(v)' \(problem)") }
            s.options.balancer.routerHealthPath = v
        },
        flag("--access-log", nil, "off", "one line per request on stdout, written off the hot path") { s, _ in s.options.balancer.accessLog = true },
        flag("--log-level", "LEVEL", "info", "least important log line written: trace, debug, info, notice, warning, error") {
            s, v throws(CommandLineError) in
            s.options.serve.logLevel = try logLevel(v, name: "--log-level")
        },
        flag("--log-format", "F", "text", "text (timestamp, level, message) or json (one object per line)") { s, v throws(CommandLineError) in
            guard let format = LogFormat(rawValue: v) else { throw CommandLineError("--log-format: '\(v)' is not one of text, json") }
            s.options.serve.logFormat = format
        },
        .numeric("--threads"),
        flag("--throttle-store", "URL", "none",
             "redis://[:password@]host:port[/db]: per-client limits shared by every instance using the same Redis and prefix") {
            s, v throws(CommandLineError) in
            s.options.balancer.throttleStore = try throttleStore(v, name: "--throttle-store")
        },
        flag("--throttle-key-prefix", "P", "lbkit:", "prefix of the shared throttle keys in Redis") { s, v throws(CommandLineError) in
            s.options.balancer.throttleKeyPrefix = try throttleKeyPrefix(v, name: "--throttle-key-prefix")
        },
        .numeric("--throttle-sync-ms"),
        .numeric("--throttle-store-timeout-ms"),
    ]

    /// A `--throttle-store` URL; the error names `name` and never repeats a password.
    static func throttleStore(_ text: String, name: String) throws(CommandLineError) -> RedisURL {
        do throws(RedisURLError) {
            return try RedisURL(parsing: text)
        } catch {
            throw CommandLineError("\(name): \(error.message) (expected redis://[:password@]host:port[/db])")
        }
    }

    /// A `--throttle-key-prefix`: 1 to 256 printable ASCII characters, no spaces.
    static func throttleKeyPrefix(_ text: String, name: String) throws(CommandLineError) -> String {
        guard (1...256).contains(text.utf8.count), text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw CommandLineError("\(name): '\(text)' is not 1 to 256 printable ASCII characters without spaces")
        }
        return text
    }

    /// `--backend-header` / `backend_header`: a field name, or `off`.
    static func backendHeader(_ text: String, name: String) throws(CommandLineError) -> String? {
        if text == "off" { return nil }
        let tchar = "!#$%&'*+-.^_`|~"
        guard !text.isEmpty, text.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || tchar.unicodeScalars.contains($0)) })
        else { throw CommandLineError("\(name): '\(text)' is not a header field name (letters, digits, -) or off") }
        return text
    }

    /// `--log-level` / `log_level`.
    static func logLevel(_ text: String, name: String) throws(CommandLineError) -> LogLevel {
        guard let level = LogLevel.allCases.first(where: { $0.description == text }) else {
            throw CommandLineError("\(name): '\(text)' is not one of trace, debug, info, notice, warning, error")
        }
        return level
    }

    // MARK: Help and version

    /// The usage text printed by `--help`: one line per flag of ``flags``, with its default.
    public static var usage: String {
        var lines = [
            "usage: lbserve [flags]",
            "With no --backend and no --config, starts three demo echo backends on 127.0.0.1:5001-5003 and balances them.",
            "Flags override the --config file, which overrides LB_* environment variables. --flag=value also works.",
            "",
        ]
        lines += flags.map(\.helpLine)
        return lines.joined(separator: "\n")
    }

    /// The line printed by `--version`: `lbserve 2.0.0`.
    public static var versionLine: String { "lbserve \(LBKitVersion.string)" }

    // MARK: Parsing

    /// Parses `arguments` (without the program name) on top of `base` (e.g. what a config file
    /// said; flags win, and a `--backend` flag replaces the base's backend list). Without a base,
    /// the defaults with the environment variables applied are used.
    public static func parse(_ arguments: [String], environment: [String: String] = [:],
                             base: LoadBalancerConfiguration? = nil, baseSettings: LBServeSettings? = nil) throws(CommandLineError) -> LBServeOptions {
        var state = try environmentState(environment)
        if let base { state.options.balancer = base }
        if let baseSettings { state.options.serve = baseSettings }
        var i = 0
        while i < arguments.count {
            var name = arguments[i]
            var inlineValue: String?
            // Accept --flag=value as well as --flag value.
            if name.hasPrefix("--"), let eq = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let flag = byName[name] else { throw CommandLineError("\(name): unknown flag (see lbserve --help)") }
            var value = ""
            if flag.value != nil {
                if let inlineValue {
                    value = inlineValue
                } else {
                    i += 1
                    guard i < arguments.count else { throw CommandLineError("\(name): missing value") }
                    value = arguments[i]
                }
            } else if inlineValue != nil {
                throw CommandLineError("\(name): takes no value")
            }
            try flag.apply(&state, value)
            i += 1
        }
        state.options.backendsFromFlags = state.backendsFromFlags
        try validate(state.options.balancer)
        return state.options
    }

    /// Checks that go across settings (each value alone was checked when it was read).
    static func validate(_ c: LoadBalancerConfiguration) throws(CommandLineError) {
        if c.ejectionMax < c.ejectionBase {
            throw CommandLineError("--ejection-max-ms: \(Int64(c.ejectionMax.milliseconds)) is below --ejection-base-ms \(Int64(c.ejectionBase.milliseconds)) (ejection_max_ms must be at least ejection_base_ms)")
        }
    }

    /// The environment variables lbserve reads: one per flag except `--help`, `--version` and
    /// `--check-config` (`LB_PORT`, `LB_BACKEND`, `LB_STRATEGY`, `LB_RATE_LIMIT`, `LB_ACCESS_LOG`...).
    public static let environmentVariables = flags.compactMap(\.environment)

    /// The default configuration with the `LB_*` variables applied (checked exactly like their
    /// flags; the error names the variable).
    public static func defaults(environment: [String: String]) throws(CommandLineError) -> LoadBalancerConfiguration {
        try environmentState(environment).options.balancer
    }

    /// lbserve's own settings (log level and format, admin listener) from the `LB_*` variables.
    public static func defaultSettings(environment: [String: String]) throws(CommandLineError) -> LBServeSettings {
        try environmentState(environment).options.serve
    }

    /// The defaults with every `LB_*` variable applied through its flag's own parser, so a value
    /// is checked exactly as on the command line; an error names the variable, not the flag.
    static func environmentState(_ environment: [String: String]) throws(CommandLineError) -> ParseState {
        var state = ParseState(options: LBServeOptions())
        guard !environment.isEmpty else { return state }
        for flag in flags {
            guard let name = flag.environment, let text = environment[name] else { continue }
            let values: [String]
            if flag.value == nil {
                switch text.lowercased() {
                case "1", "true", "yes", "on": values = [""]
                case "0", "false", "no", "off", "": values = []
                default: throw CommandLineError("\(name): '\(text)' is not true or false (1/0, yes/no, on/off)")
                }
            } else if flag.repeatable {
                values = text.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
            } else {
                values = [text]
            }
            do throws(CommandLineError) {
                for value in values { try flag.apply(&state, value) }
            } catch {
                // "--strategy: 'x' is not ..." -> "LB_STRATEGY: 'x' is not ..."
                var message = error.message
                if message.hasPrefix(flag.name + ":") { message = name + message.dropFirst(flag.name.count) }
                throw CommandLineError(message)
            }
        }
        // Backends from LB_BACKEND are a default: the first --backend flag replaces them, and a
        // config file's "backends" key too.
        state.backendsFromFlags = false
        return state
    }
}

extension LBServeCommandLine {
    /// What lbserve runs with: the options and, when backends came from a config file, their
    /// per-backend health paths (parallel to `options.balancer.backends`).
    public struct Setup: Sendable {
        /// Flags applied on top of the file.
        public var options: LBServeOptions
        /// Per-backend health-check paths (nil = the global one).
        public var healthPaths: [String?]
    }

    /// Reads the command line and, with `--config`, the file: defaults < environment < file < flags.
    /// Every problem of the file is reported, one per line (`config.json: backends[1].url: ...`).
    ///
    /// ```swift
    /// let setup = try LBServeCommandLine.load(["--config", "lb.json", "--port", "9000"])
    /// ```
    public static func load(_ arguments: [String], environment: [String: String] = [:]) throws(CommandLineError) -> Setup {
        let first = try parse(arguments, environment: environment)
        guard let path = first.configFile else { return Setup(options: first, healthPaths: []) }
        let fromEnvironment = try environmentState(environment).options
        let loaded: LoadedConfiguration
        do throws(ConfigFileErrors) {
            loaded = try ConfigFile.load(path: path, base: fromEnvironment.balancer, baseSettings: fromEnvironment.serve)
        } catch {
            throw CommandLineError(lines: error.errors.map(\.description))
        }
        let options = try parse(arguments, environment: environment, base: loaded.balancer, baseSettings: loaded.settings)
        return Setup(options: options, healthPaths: options.backendsFromFlags ? [] : loaded.healthPaths)
    }

    /// Settings that have no effect as configured, one line each (lbserve logs them as
    /// `[CONFIG] warning: ...`, `--check-config` prints them on stderr).
    public static func warnings(_ setup: Setup) -> [String] {
        let c = setup.options.balancer
        var out: [String] = []
        if c.strategy == .roundRobin, c.weights.contains(where: { $0 != 1 }) {
            out.append("backend weights have no effect under strategy round-robin (use --strategy weighted, or \"strategy\": \"weighted\")")
        }
        if c.healthInterval == .zero {
            var unused: [String] = []
            if c.healthPathIsExplicit || setup.healthPaths.contains(where: { $0 != nil }) { unused.append("health path") }
            if c.healthExpectStatus != nil { unused.append("--health-expect-status") }
            if c.healthFall != LoadBalancerConfiguration().healthFall { unused.append("--health-fall") }
            if c.healthRise != LoadBalancerConfiguration().healthRise { unused.append("--health-rise") }
            if !unused.isEmpty {
                out.append("active health checks are off (--health-interval-ms 0): \(unused.joined(separator: ", ")) have no effect")
            }
        }
        if c.throttleStore != nil && c.rateLimit == nil {
            out.append("--throttle-store has no effect without --rate-limit (there is no per-client limit to share)")
        }
        let defaults = LoadBalancerConfiguration()
        if c.rateLimit == nil {
            var unused: [String] = []
            if c.burst != nil { unused.append("--burst") }
            if c.penaltyThreshold != defaults.penaltyThreshold { unused.append("--penalty-threshold") }
            if c.penaltyWindow != defaults.penaltyWindow { unused.append("--penalty-window-ms") }
            if c.penaltyDuration != defaults.penaltyDuration { unused.append("--penalty-duration-ms") }
            if c.penaltyFactor != defaults.penaltyFactor { unused.append("--penalty-factor") }
            if c.throttleMaxKeys != defaults.throttleMaxKeys { unused.append("--throttle-max-keys") }
            if !unused.isEmpty { out.append("\(unused.joined(separator: ", ")) \(unused.count == 1 ? "has" : "have") no effect without --rate-limit") }
        }
        if c.throttleStore == nil {
            var unused: [String] = []
            if c.throttleKeyPrefix != defaults.throttleKeyPrefix { unused.append("--throttle-key-prefix") }
            if c.throttleSyncInterval != defaults.throttleSyncInterval { unused.append("--throttle-sync-ms") }
            if c.throttleStoreTimeout != defaults.throttleStoreTimeout { unused.append("--throttle-store-timeout-ms") }
            if !unused.isEmpty { out.append("\(unused.joined(separator: ", ")) \(unused.count == 1 ? "has" : "have") no effect without --throttle-store") }
        }
        if c.healthInterval == .zero && (c.maxBackendCPU != nil || c.maxBackendMemory != nil) {
            out.append("--max-backend-cpu/--max-backend-memory have no effect with --health-interval-ms 0 (backends report their load in health answers)")
        }
        return out
    }
}
