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
    /// One line naming the flag.
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
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
        func int(_ flag: String, _ range: ClosedRange<Int>) throws(CommandLineError) -> Int {
            let text = try value(flag)
            guard let n = Int(text), range.contains(n) else {
                throw CommandLineError("\(flag): '\(text)' is not an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
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
            switch flag {
            case "-h", "--help": options.showHelp = true
            case "--port": config.port = try int(flag, 0...65535)
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
            case "--timeout-ms": config.attemptTimeout = .milliseconds(try int(flag, 1...3_600_000))
            case "--request-timeout-ms": config.requestTimeout = .milliseconds(try int(flag, 1...3_600_000))
            case "--connect-timeout-ms": config.connectTimeout = .milliseconds(try int(flag, 1...600_000))
            case "--max-delay-ms": config.maxDelay = .milliseconds(try int(flag, 1...3_600_000))
            case "--max-fails": config.maxFails = try int(flag, 1...1000)
            case "--hedge-after-ms": config.hedgeAfter = .milliseconds(try int(flag, 0...3_600_000))
            case "--health-interval-ms": config.healthInterval = .milliseconds(try int(flag, 0...3_600_000))
            case "--health-timeout-ms": config.healthTimeout = .milliseconds(try int(flag, 1...600_000))
            case "--health-path":
                let p = try value(flag)
                guard p.hasPrefix("/"), !p.contains(" ") else { throw CommandLineError("--health-path: '\(p)' must start with /") }
                config.healthPath = p
            case "--rate-limit":
                let text = try value(flag)
                guard let r = Double(text), r > 0, r.isFinite else { throw CommandLineError("--rate-limit: '\(text)' is not a positive number") }
                config.rateLimit = r
            case "--burst": config.burst = try int(flag, 1...1_000_000)
            case "--throttle-max-keys": config.throttleMaxKeys = try int(flag, 1...100_000_000)
            case "--penalty-threshold": config.penaltyThreshold = try int(flag, 0...1_000_000)
            case "--penalty-window-ms": config.penaltyWindow = .milliseconds(try int(flag, 1...86_400_000))
            case "--penalty-duration-ms": config.penaltyDuration = .milliseconds(try int(flag, 0...86_400_000))
            case "--penalty-factor": config.penaltyFactor = try int(flag, 1...1000)
            case "--max-body-bytes": config.maxBodyBytes = try int(flag, 0...(1 << 34))
            case "--max-attempts": config.maxAttempts = try int(flag, 1...10)
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
            case "--threads": config.loopCount = try int(flag, 1...256)
            default:
                throw CommandLineError("\(flag): unknown flag (see lbserve --help)")
            }
            i += 1
        }
        options.balancer = config
        options.backendsFromFlags = backendsFromFlags
        return options
    }

    /// The default configuration with `LB_RATE_LIMIT` / `LB_BURST` applied.
    public static func defaults(environment: [String: String]) throws(CommandLineError) -> LoadBalancerConfiguration {
        var config = LoadBalancerConfiguration()
        if let v = environment["LB_RATE_LIMIT"] {
            guard let r = Double(v), r > 0 else { throw CommandLineError("LB_RATE_LIMIT: '\(v)' is not a positive number") }
            config.rateLimit = r
        }
        if let v = environment["LB_BURST"] {
            guard let b = Int(v), b > 0 else { throw CommandLineError("LB_BURST: '\(v)' is not a positive integer") }
            config.burst = b
        }
        return config
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
        let loaded: LoadedConfiguration
        do {
            loaded = try ConfigFile.load(path: path, base: try defaults(environment: environment))
        } catch let error as ConfigFileErrors {
            throw CommandLineError(error.errors.map(\.description).joined(separator: "\n"))
        } catch {
            throw CommandLineError("--config: \(error)")
        }
        let options = try parse(arguments, environment: environment, base: loaded.balancer)
        return Setup(options: options, healthPaths: options.backendsFromFlags ? [] : loaded.healthPaths)
    }
}
