import LBKit
/// What `lbserve`'s command line asked for.
public struct LBServeOptions: Sendable {
    /// The balancer settings built from the flags.
    public var balancer: LoadBalancerConfiguration
    /// `--help` was given.
    public var showHelp = false
    /// `--config FILE.json`, if given.
    public var configFile: String?
    /// Whether `--backend` flags replaced the base configuration's backends.
    public var backendsFromFlags = false
    /// No `--backend` and no `--config`: start the three demo echo backends in-process.
    public var demoBackends: Bool { balancer.backends.isEmpty && configFile == nil }

    /// Options with every default.
    public init() { balancer = LoadBalancerConfiguration() }
}

/// A bad command line: the message names the flag and what is wrong (`lbserve` prints it on one
/// line and exits with status 2).
public struct CommandLineError: Error, Sendable, CustomStringConvertible {
    /// One line naming the flag (one line per problem for a config file's problems).
    public var message: String
    /// Creates an error; control characters in `message` (from quoted user input) are escaped, so
    /// it is always one line.
    public init(_ message: String) { self.message = message.escapingControlCharacters }
    /// Several problems, one line each (each line escaped).
    init(lines: [String]) { message = lines.map(\.escapingControlCharacters).joined(separator: "\n") }
    public var description: String { message }
}

/// Parses `lbserve` flags (see the contract and README); environment variables `LB_RATE_LIMIT` and
/// `LB_BURST` provide defaults that flags override.
///
/// ```swift
/// let options = try LBServeCommandLine.parse(["--port", "8000", "--backend", "http://127.0.0.1:5001"])
/// ```
public enum LBServeCommandLine {
    /// The usage text printed by `--help`.
    public static let usage = """
        usage: lbserve [--port 8000] [--host 0.0.0.0] [--backend URL]... [--timeout-ms 3000]
                       [--max-delay-ms N] [--max-fails 3] [--health-interval-ms 2000] [--health-path /health]
                       [--rate-limit R] [--burst B] [--throttle-max-keys 100000] [--penalty-threshold 10]
                       [--penalty-window-ms 10000] [--penalty-duration-ms 60000] [--penalty-factor 4]
                       [--max-body-bytes 8388608] [--max-attempts 3]
                       [--retry-non-idempotent] [--hedge-after-ms N] [--strategy round-robin|weighted|least-requests|peak-ewma]
                       [--trusted-proxy CIDR]... [--access-log] [--admin-token T] [--threads N]
                       [--throttle-store redis://[:password@]host:port[/db]] [--throttle-key-prefix lbkit:]
                       [--throttle-sync-ms 20] [--throttle-store-timeout-ms 250]
        With no --backend, starts three demo echo backends on 127.0.0.1:5001-5003 and balances them.
        """

    /// Parses `arguments` (without the program name) on top of `base` (e.g. what a config file
    /// said; flags win, and a `--backend` flag replaces the base's backend list). Without a base,
    /// the defaults with the environment variables applied are used.
    public static func parse(_ arguments: [String], environment: [String: String] = [:],
                             base: LoadBalancerConfiguration? = nil) throws(CommandLineError) -> LBServeOptions {
        var options = LBServeOptions()
        var config: LoadBalancerConfiguration
        if let base { config = base } else { config = try defaults(environment: environment) }
        var backendsFromFlags = false
        var i = 0
        func value(_ flag: String) throws(CommandLineError) -> String {
            i += 1
            guard i < arguments.count else { throw CommandLineError("\(flag): missing value") }
            return arguments[i]
        }
        while i < arguments.count {
            var flag = arguments[i]
            // Accept --flag=value as well as --flag value.
            if flag.hasPrefix("--"), let eq = flag.firstIndex(of: "=") {
                let v = String(flag[flag.index(after: eq)...])
                flag = String(flag[..<eq])
                var rewritten = arguments
                rewritten[i] = flag
                rewritten.insert(v, at: i + 1)
                return try parse(rewritten, environment: environment, base: base)
            }
            if let setting = NumericSetting.named(flag: flag) {
                try setting.apply(try value(flag), to: &config)
                i += 1
                continue
            }
            switch flag {
            case "-h", "--help": options.showHelp = true
            case "--host": config.host = try value(flag)
            case "--backend":
                let text = try value(flag)
                if !backendsFromFlags {
                    backendsFromFlags = true
                    config.backends = []
                    config.weights = []
                }
                do {
                    config.backends.append(try BackendURL(parsing: text))
                } catch {
                    throw CommandLineError("--backend: \(error.message)")
                }
            case "--config": options.configFile = try value(flag)
            case "--health-path":
                let p = try value(flag)
                if let problem = HTTP1Syntax.originFormProblem(p) { throw CommandLineError("--health-path: '\(p)' \(problem)") }
                config.healthPath = p
            case "--retry-non-idempotent": config.retryNonIdempotent = true
            case "--strategy":
                let text = try value(flag)
                guard let s = BalancingStrategy(rawValue: text) else {
                    throw CommandLineError("--strategy: '\(text)' is not one of round-robin, weighted, least-requests, peak-ewma")
                }
                config.strategy = s
            case "--trusted-proxy":
                let text = try value(flag)
                guard let range = CIDRRange(text) else { throw CommandLineError("--trusted-proxy: '\(text)' is not a CIDR range") }
                config.trustedProxies.append(range)
            case "--access-log": config.accessLog = true
            case "--admin-token":
                let token = try value(flag)
                guard token.count >= 8 else { throw CommandLineError("--admin-token: use at least 8 characters") }
                config.adminToken = token
            case "--throttle-store": config.throttleStore = try throttleStore(try value(flag), name: flag)
            case "--throttle-key-prefix": config.throttleKeyPrefix = try throttleKeyPrefix(try value(flag), name: flag)
            default:
                throw CommandLineError("\(flag): unknown flag (see lbserve --help)")
            }
            i += 1
        }
        options.balancer = config
        options.backendsFromFlags = backendsFromFlags
        return options
    }

    /// The environment variables of the numeric settings (`LB_RATE_LIMIT`, `LB_BURST`).
    public static let environmentVariables = NumericSetting.all.compactMap(\.environment) + ["LB_THROTTLE_STORE"]

    /// The default configuration with `LB_RATE_LIMIT` / `LB_BURST` applied (checked exactly like
    /// their flags; the error names the variable).
    public static func defaults(environment: [String: String]) throws(CommandLineError) -> LoadBalancerConfiguration {
        var config = LoadBalancerConfiguration()
        for setting in NumericSetting.all {
            guard let name = setting.environment, let text = environment[name] else { continue }
            try setting.apply(text, to: &config, name: name)
        }
        if let text = environment["LB_THROTTLE_STORE"] { config.throttleStore = try throttleStore(text, name: "LB_THROTTLE_STORE") }
        return config
    }

    /// A `--throttle-store` URL; the error names `name` and never repeats a password.
    static func throttleStore(_ text: String, name: String) throws(CommandLineError) -> RedisURL {
        do {
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

    /// Checks that hold across flags, environment and file: a throttle store needs a rate limit.
    static func validate(_ config: LoadBalancerConfiguration) throws(CommandLineError) {
        if config.throttleStore != nil && config.rateLimit == nil {
            throw CommandLineError("--throttle-store: needs --rate-limit (there is nothing to share without a per-client limit)")
        }
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
        guard let path = first.configFile else {
            try validate(first.balancer)
            return Setup(options: first, healthPaths: [])
        }
        let base = try defaults(environment: environment)
        let loaded: LoadedConfiguration
        do throws(ConfigFileErrors) {
            loaded = try ConfigFile.load(path: path, base: base)
        } catch {
            throw CommandLineError(lines: error.errors.map(\.description))
        }
        let options = try parse(arguments, environment: environment, base: loaded.balancer)
        try validate(options.balancer)
        return Setup(options: options, healthPaths: options.backendsFromFlags ? [] : loaded.healthPaths)
    }
}
