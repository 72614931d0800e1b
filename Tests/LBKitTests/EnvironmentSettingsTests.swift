import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
@testable import LBServeSupport

/// Every flag from an `LB_*` variable, rates with units, warnings for settings without effect.
@Suite("lbserve settings from the environment, rates with units, no-effect warnings")
struct EnvironmentSettingsTests {
    @Test("every flag but --help/--version/--check-config has an LB_* variable, named after it and listed in --help")
    func everyFlagHasAVariable() {
        for flag in LBServeCommandLine.flags {
            if ["--help", "--version", "--check-config"].contains(flag.name) {
                #expect(flag.environment == nil, "\(flag.name)")
                continue
            }
            let expected = "LB_" + flag.name.dropFirst(2).replacingOccurrences(of: "-", with: "_").uppercased()
            #expect(flag.environment == expected, "\(flag.name)")
            #expect(LBServeCommandLine.usage.contains("env \(expected)"), "--help does not name \(expected)")
        }
        #expect(Set(LBServeCommandLine.environmentVariables).count == LBServeCommandLine.flags.count - 3)
    }

    @Test("non-numeric settings from the environment: strategy, backends (list), paths, switches, lists, log settings")
    func nonNumeric() throws {
        let env = [
            "LB_STRATEGY": "least-requests",
            "LB_BACKEND": "http://127.0.0.1:5001, http://127.0.0.1:5002",
            "LB_HEALTH_PATH": "/ready", "LB_HEALTH_EXPECT_STATUS": "200-204",
            "LB_ROUTER_HEALTH_PATH": "/health", "LB_BACKEND_HEADER": "X-App-Url",
            "LB_RETRY_NON_IDEMPOTENT": "true", "LB_ACCESS_LOG": "1",
            "LB_TRUSTED_PROXY": "10.0.0.0/8,192.168.0.0/16", "LB_ADMIN_ALLOW": "127.0.0.1/32",
            "LB_LOG_LEVEL": "debug", "LB_LOG_FORMAT": "json", "LB_ADMIN_LISTEN": "127.0.0.1:9901",
            "LB_HOST": "127.0.0.1", "LB_ADMIN_TOKEN": "long-enough-token", "LB_THROTTLE_KEY_PREFIX": "app:",
        ]
        let options = try LBServeCommandLine.parse([], environment: env)
        let c = options.balancer
        #expect(c.strategy == .leastRequests)
        #expect(c.backends.map(\.description) == ["http://127.0.0.1:5001", "http://127.0.0.1:5002"])
        #expect(!options.demoBackends && !options.backendsFromFlags)
        #expect(c.healthPath == "/ready" && c.healthPathIsExplicit && c.healthExpectStatus?.description == "200-204")
        #expect(c.routerHealthPath == "/health" && c.backendHeader == "X-App-Url")
        #expect(c.retryNonIdempotent && c.accessLog)
        #expect(c.trustedProxies.count == 2 && c.adminAllow.count == 1)
        #expect(options.serve.logLevel == .debug && options.serve.logFormat == .json)
        #expect(options.serve.adminListen == ListenAddress(host: "127.0.0.1", port: 9901))
        #expect(c.host == "127.0.0.1" && c.adminToken == "long-enough-token" && c.throttleKeyPrefix == "app:")

        // Flags win; the first --backend replaces the environment's list instead of adding to it.
        let flags = try LBServeCommandLine.parse(["--strategy", "weighted", "--backend", "http://127.0.0.1:6000"], environment: env)
        #expect(flags.balancer.strategy == .weighted)
        #expect(flags.balancer.backends.map(\.description) == ["http://127.0.0.1:6000"])
        // A switch set to false leaves the default.
        #expect(try !LBServeCommandLine.parse([], environment: ["LB_ACCESS_LOG": "off"]).balancer.accessLog)
    }

    @Test("bad environment values: one line naming the variable, not the flag", arguments: [
        ("LB_STRATEGY", "fastest", "LB_STRATEGY: 'fastest' is not one of round-robin, weighted, least-requests, peak-ewma"),
        ("LB_BACKEND", "http://127.0.0.1:5001,ftp://x", "LB_BACKEND: 'ftp://x' is not an http URL"),
        ("LB_ACCESS_LOG", "maybe", "LB_ACCESS_LOG: 'maybe' is not true or false (1/0, yes/no, on/off)"),
        ("LB_LOG_FORMAT", "xml", "LB_LOG_FORMAT: 'xml' is not one of text, json"),
        ("LB_TRUSTED_PROXY", "10.0.0.0/99", "LB_TRUSTED_PROXY: '10.0.0.0/99' is not a CIDR range"),
        ("LB_RATE_LIMIT", "5/fortnight", "LB_RATE_LIMIT: '5/fortnight' is not a rate in"),
        ("LB_MAX_BACKEND_CPU", "2", "LB_MAX_BACKEND_CPU: '2' is not a number in 0.01...1"),
    ])
    func badValues(_ c: (String, String, String)) {
        do {
            _ = try LBServeCommandLine.parse([], environment: [c.0: c.1])
            Issue.record("\(c.0)=\(c.1) accepted")
        } catch {
            #expect(error.message.hasPrefix(c.2), "\(error.message)")
            #expect(!error.message.contains("\n"))
        }
    }

    @Test("rates: N, N/s, N/minute, N/hour on flags, environment and config; stored per second")
    func rates() throws {
        func rate(_ text: String) throws -> Double? { try LBServeCommandLine.parse(["--rate-limit", text]).balancer.rateLimit }
        #expect(try rate("100") == 100)
        #expect(try rate("100/s") == 100 && rate("100/second") == 100 && rate("100/sec") == 100)
        #expect(try rate("120/minute") == 2 && rate("120/min") == 2 && rate("120/m") == 2 && rate("120/MINUTE") == 2)
        #expect(try rate("3600/hour") == 1 && rate("36/h") == 0.01)
        #expect(try rate("0.5/s") == 0.5)
        for bad in ["100/", "/s", "100/day", "100/s/s", "inf/s", "0/minute", "1e12/s", "100 /s"] {
            #expect(throws: CommandLineError.self, "\(bad)") { try rate(bad) }
        }
        #expect(try LBServeCommandLine.parse([], environment: ["LB_RATE_LIMIT": "100/minute"]).balancer.rateLimit == 100.0 / 60)
        let fromFile = try ConfigFile.parse(Array(#"{"rate_limit": "30/minute"}"#.utf8), file: "lb.json")
        #expect(fromFile.balancer.rateLimit == 0.5)
        #expect(try ConfigFile.parse(Array(#"{"rate_limit": "7"}"#.utf8), file: "lb.json").balancer.rateLimit == 7)
    }

    @Test("environment < config file < flags, for lbserve's own settings too")
    func precedenceWithFile() throws {
        let dir = NSTemporaryDirectory() + "lbkit-env-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/lb.json"
        try Data(#"{"backends": ["http://127.0.0.1:5009"], "strategy": "weighted"}"#.utf8).write(to: URL(fileURLWithPath: path))
        let env = ["LB_CONFIG": path, "LB_LOG_FORMAT": "json", "LB_STRATEGY": "peak-ewma", "LB_BACKEND": "http://127.0.0.1:5001",
                   "LB_HEALTH_FALL": "7"]
        let setup = try LBServeCommandLine.load(["--health-fall", "4"], environment: env)
        let c = setup.options.balancer
        #expect(setup.options.configFile == path)
        #expect(c.strategy == .weighted)  // the file beats the environment
        #expect(c.backends.map(\.description) == ["http://127.0.0.1:5009"])
        #expect(c.healthFall == 4)  // the flag beats the environment
        #expect(setup.options.serve.logFormat == .json)  // only the environment set it; the file kept it
    }

    @Test("warnings for settings that have no effect, one line each; none for a plain setup")
    func noEffectWarnings() throws {
        func warnings(_ arguments: [String]) throws -> [String] {
            LBServeCommandLine.warnings(try LBServeCommandLine.load(["--backend", "http://127.0.0.1:5001"] + arguments))
        }
        #expect(try warnings([]).isEmpty)
        #expect(try warnings(["--rate-limit", "5", "--burst", "10", "--penalty-factor", "2"]).isEmpty)
        #expect(try warnings(["--burst", "10", "--penalty-factor", "2"]) == ["--burst, --penalty-factor have no effect without --rate-limit"])
        #expect(try warnings(["--throttle-sync-ms", "50"]) == ["--throttle-sync-ms has no effect without --throttle-store"])
        #expect(try warnings(["--health-interval-ms", "0", "--max-backend-cpu", "0.9"])
                == ["--max-backend-cpu/--max-backend-memory have no effect with --health-interval-ms 0 (backends report their load in health answers)"])
    }
}
