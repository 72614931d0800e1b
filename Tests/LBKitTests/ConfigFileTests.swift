import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// The package root (this file is Tests/LBKitTests/ConfigFileTests.swift).
private let packageRoot: String = {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

private func parse(_ json: String, base: LoadBalancerConfiguration = LoadBalancerConfiguration()) throws(ConfigFileErrors) -> LoadedConfiguration {
    try ConfigFile.parse(Array(json.utf8), file: "config.json", base: base)
}

/// The error lines `json` produces (empty when it parses).
private func problems(_ json: String) -> [String] {
    do {
        _ = try parse(json)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

@Suite("ConfigFile")
struct ConfigFileTests {
    @Test("a full file maps onto every property")
    func fullFile() throws {
        let json = """
            {
              "port": 9000, "host": "127.0.0.1",
              "backends": ["http://127.0.0.1:5001", {"url": "http://localhost:5002/", "weight": 5, "health_path": "/ready"}],
              "timeout_ms": 300, "request_timeout_ms": 900, "connect_timeout_ms": 150, "max_attempts": 2,
              "retry_non_idempotent": true, "hedge_after_ms": 0, "max_fails": 5, "health_interval_ms": 250,
              "health_path": "/healthz", "health_timeout_ms": 120, "max_delay_ms": 200, "strategy": "peak-ewma",
              "rate_limit": 2.5, "burst": 4, "throttle_max_keys": 1000, "penalty_threshold": 0,
              "penalty_window_ms": 5000, "penalty_duration_ms": 7000, "penalty_factor": 8,
              "trusted_proxies": ["10.0.0.0/8", "::1"], "max_body_bytes": 1024, "access_log": true, "threads": 1
            }
            """
        let loaded = try parse(json)
        let c = loaded.balancer
        #expect(c.port == 9000 && c.host == "127.0.0.1")
        #expect(c.backends.map(\.description) == ["http://127.0.0.1:5001", "http://localhost:5002"])
        #expect(c.weights == [1, 5])
        #expect(loaded.healthPaths == [nil, "/ready"])
        #expect(c.attemptTimeout == .milliseconds(300) && c.requestTimeout == .milliseconds(900))
        #expect(c.connectTimeout == .milliseconds(150) && c.maxAttempts == 2 && c.retryNonIdempotent)
        #expect(c.hedgeAfter == .zero && c.maxFails == 5 && c.healthInterval == .milliseconds(250))
        #expect(c.healthPath == "/healthz" && c.healthTimeout == .milliseconds(120) && c.maxDelay == .milliseconds(200))
        #expect(c.strategy == .peakEWMA && c.rateLimit == 2.5 && c.burst == 4 && c.throttleMaxKeys == 1000)
        #expect(c.penaltyThreshold == 0 && c.penaltyWindow == .milliseconds(5000))
        #expect(c.penaltyDuration == .milliseconds(7000) && c.penaltyFactor == 8)
        #expect(c.trustedProxies.map(\.description) == ["10.0.0.0/8", "::1/128"])
        #expect(c.maxBodyBytes == 1024 && c.accessLog && c.loopCount == 1)
    }

    @Test("string and object backends; weights and health paths are parallel to the backends")
    func backendForms() throws {
        let loaded = try parse("""
            {"health_path": "/h", "backends": [
              {"url": "http://10.0.0.1:80", "weight": 3},
              "http://10.0.0.2:8080",
              {"url": "http://[::1]:9000", "health_path": "/ready"},
              {"url": "http://b.example", "weight": 1000, "health_path": "/x/y?full=1"}
            ]}
            """)
        let c = loaded.balancer
        #expect(c.backends.map(\.description) == ["http://10.0.0.1:80", "http://10.0.0.2:8080", "http://[::1]:9000", "http://b.example:80"])
        #expect(c.weights == [3, 1, 1, 1000])
        #expect(loaded.healthPaths == [nil, nil, "/ready", "/x/y?full=1"])
        #expect((0..<4).map { loaded.healthPath(forBackendAt: $0) } == ["/h", "/h", "/ready", "/x/y?full=1"])
        #expect(loaded.healthPath(forBackendAt: 9) == "/h")
    }

    @Test("absent keys keep the base values; a backends key replaces the base list")
    func baseKept() throws {
        var base = LoadBalancerConfiguration()
        base.port = 1234
        base.backends = [try BackendURL(parsing: "http://127.0.0.1:7001"), try BackendURL(parsing: "http://127.0.0.1:7002")]
        base.weights = [2, 4]
        base.maxDelay = .milliseconds(50)
        base.rateLimit = 9
        base.accessLog = true
        base.trustedProxies = [try #require(CIDRRange("192.168.0.0/16"))]

        let kept = try parse(#"{"threads": 2}"#, base: base)
        #expect(kept.balancer.loopCount == 2 && kept.balancer.port == 1234)
        #expect(kept.balancer.backends == base.backends && kept.balancer.weights == [2, 4])
        #expect(kept.healthPaths == [nil, nil])
        #expect(kept.balancer.maxDelay == .milliseconds(50) && kept.balancer.rateLimit == 9 && kept.balancer.accessLog)
        #expect(kept.balancer.trustedProxies == base.trustedProxies)

        let replaced = try parse(#"{"backends": ["http://127.0.0.1:7003"], "access_log": false, "trusted_proxies": []}"#, base: base)
        #expect(replaced.balancer.backends.map(\.description) == ["http://127.0.0.1:7003"])
        #expect(replaced.balancer.weights == [1] && replaced.healthPaths == [nil])
        #expect(!replaced.balancer.accessLog && replaced.balancer.trustedProxies.isEmpty)

        let empty = try parse("{}", base: base)
        #expect(empty.balancer.port == 1234 && empty.balancer.backends.count == 2)
    }

    @Test("null turns an optional setting back to off/auto")
    func nullResets() throws {
        var base = LoadBalancerConfiguration()
        base.requestTimeout = .seconds(1)
        base.hedgeAfter = .zero
        base.healthTimeout = .seconds(1)
        base.maxDelay = .seconds(1)
        base.rateLimit = 5
        base.burst = 5
        let c = try parse("""
            {"request_timeout_ms": null, "hedge_after_ms": null, "health_timeout_ms": null,
             "max_delay_ms": null, "rate_limit": null, "burst": null}
            """, base: base).balancer
        #expect(c.requestTimeout == nil && c.hedgeAfter == nil && c.healthTimeout == nil)
        #expect(c.maxDelay == nil && c.rateLimit == nil && c.burst == nil)
    }

    @Test("integral JSON numbers count as integers, in any spelling")
    func integralNumbers() throws {
        let c = try parse(#"{"timeout_ms": 1e3, "max_fails": 2.0, "rate_limit": 7}"#).balancer
        #expect(c.attemptTimeout == .milliseconds(1000) && c.maxFails == 2 && c.rateLimit == 7)
    }

    @Test("each problem has its exact one-line message", arguments: [
        (#"{"timeout": 5}"#, "config.json: (top level): unknown key 'timeout' (did you mean 'timeout_ms'?)"),
        (#"{"trusted-proxy": []}"#, "config.json: (top level): unknown key 'trusted-proxy' (did you mean 'trusted_proxies'?)"),
        (#"{"colour": "blue"}"#, "config.json: (top level): unknown key 'colour'"),
        (#"{"timeout_ms": "5"}"#, "config.json: timeout_ms: expected an integer, got a string"),
        (#"{"port": true}"#, "config.json: port: expected an integer, got a boolean"),
        (#"{"port": null}"#, "config.json: port: expected an integer, got null"),
        (#"{"port": [80]}"#, "config.json: port: expected an integer, got an array"),
        (#"{"port": 80.5}"#, "config.json: port: expected an integer, got 80.5"),
        (#"{"port": 65536}"#, "config.json: port: expected an integer in 0...65535, got 65536"),
        (#"{"max_attempts": 0}"#, "config.json: max_attempts: expected an integer in 1...10, got 0"),
        (#"{"max_body_bytes": 100000000000000000000}"#,
         "config.json: max_body_bytes: expected an integer in 0...17179869184, got 100000000000000000000"),
        (#"{"access_log": 1}"#, "config.json: access_log: expected a boolean, got an integer"),
        (#"{"retry_non_idempotent": "yes"}"#, "config.json: retry_non_idempotent: expected a boolean, got a string"),
        (#"{"host": 5}"#, "config.json: host: expected a string, got an integer"),
        (#"{"host": ""}"#, "config.json: host: must not be empty"),
        (#"{"health_path": "health"}"#, "config.json: health_path: 'health' must start with /"),
        (#"{"health_path": "/a b"}"#,
         "config.json: health_path: '/a b' has byte 0x20 at offset 2, which a request path cannot contain"),
        (#"{"strategy": "fastest"}"#,
         "config.json: strategy: 'fastest' is not one of round-robin, weighted, least-requests, peak-ewma"),
        (#"{"rate_limit": 0}"#, "config.json: rate_limit: expected a rate in 0.000001...1000000000 per second, written N, N/s, N/minute or N/hour, got 0"),
        (#"{"rate_limit": 1e19}"#, "config.json: rate_limit: expected a rate in 0.000001...1000000000 per second, written N, N/s, N/minute or N/hour, got 1e19"),
        (#"{"rate_limit": "5/fortnight"}"#, "config.json: rate_limit: expected a rate in 0.000001...1000000000 per second, written N, N/s, N/minute or N/hour, got \"5/fortnight\""),
        (#"{"rate_limit": true}"#, "config.json: rate_limit: expected a number, got a boolean"),
        (#"{"max_backend_cpu": 1.5}"#, "config.json: max_backend_cpu: expected a number in 0.01...1, got 1.5"),
        (#"{"trusted_proxies": "10.0.0.0/8"}"#, "config.json: trusted_proxies: expected an array of CIDR strings, got a string"),
        (#"{"trusted_proxies": ["10.0.0.0/8", "10.0.0.0/33"]}"#, "config.json: trusted_proxies[1]: '10.0.0.0/33' is not a CIDR range"),
        (#"{"trusted_proxies": [8]}"#, "config.json: trusted_proxies[0]: expected a string, got an integer"),
        (#"{"backends": "http://127.0.0.1:5001"}"#, "config.json: backends: expected an array, got a string"),
        (#"{"backends": []}"#, "config.json: backends: must list at least one backend"),
        (#"{"backends": ["http://127.0.0.1:5001", "ftp://x"]}"#,
         "config.json: backends[1].url: not an http URL (expected http://host:port, got 'ftp://x')"),
        (#"{"backends": [{"url": "127.0.0.1:5001"}]}"#,
         "config.json: backends[0].url: not an http URL (expected http://host:port, got '127.0.0.1:5001')"),
        (#"{"backends": ["https://a:1"]}"#, "config.json: backends[0].url: https backends are not supported (use http://)"),
        (#"{"backends": ["http://a:1/api"]}"#, "config.json: backends[0].url: a backend URL cannot have a path or query"),
        (#"{"backends": ["http://a:70000"]}"#, "config.json: backends[0].url: port must be 1-65535"),
        (#"{"backends": ["http://127.0.0.1:5001", "http://127.0.0.1:5001/"]}"#,
         "config.json: backends[1].url: duplicate of backends[0] (http://127.0.0.1:5001)"),
        (#"{"backends": ["http://a", {"url": "http://A:80"}]}"#, "config.json: backends[1].url: duplicate of backends[0] (http://A:80)"),
        (#"{"backends": [5001]}"#, "config.json: backends[0]: expected a URL string or an object, got an integer"),
        (#"{"backends": [{"weight": 2}]}"#, "config.json: backends[0]: missing required key 'url'"),
        (#"{"backends": [{"url": 5}]}"#, "config.json: backends[0].url: expected a string, got an integer"),
        (#"{"backends": [{"url": "http://a:1", "wieght": 2}]}"#, "config.json: backends[0]: unknown key 'wieght'"),
        (#"{"backends": [{"url": "http://a:1", "health-path": "/h"}]}"#,
         "config.json: backends[0]: unknown key 'health-path' (did you mean 'health_path'?)"),
        (#"{"backends": [{"url": "http://a:1", "weight": 0}]}"#, "config.json: backends[0].weight: expected an integer in 1...1000, got 0"),
        (#"{"backends": [{"url": "http://a:1", "health_path": "ready"}]}"#,
         "config.json: backends[0].health_path: 'ready' must start with /"),
        ("[1, 2]", "config.json: (top level): expected an object, got an array"),
        ("42", "config.json: (top level): expected an object, got an integer"),
        ("  \n", "config.json: (top level): the file is empty (expected a JSON object)"),
        ("{\"port\": 80,\n  \"host\": *}", "config.json: host: invalid JSON: invalid value at line 2, column 11"),
        ("{\"port\": 80,\n  \"port\": 81}", #"config.json: (top level): duplicate key "port""#),
        ("{\"backends\": [\"http://a:1\",\n ]}", "config.json: backends: invalid JSON: trailing comma at line 1, column 27"),
    ])
    func errorMessages(json: String, expected: String) {
        #expect(problems(json) == [expected])
    }

    @Test("every problem is reported, in schema order")
    func severalProblems() {
        let lines = problems("""
            {
              "threads": 0,
              "timout_ms": 5,
              "backends": ["http://127.0.0.1:5001", "ftp://x", {"url": "http://127.0.0.1:5001", "weight": "3"}],
              "port": "8000",
              "trusted_proxies": ["nope", "10.0.0.0/8", "also nope"]
            }
            """)
        #expect(lines == [
            "config.json: (top level): unknown key 'timout_ms'",
            "config.json: port: expected an integer, got a string",
            "config.json: backends[1].url: not an http URL (expected http://host:port, got 'ftp://x')",
            "config.json: backends[2].weight: expected an integer, got a string",
            "config.json: backends[2].url: duplicate of backends[0] (http://127.0.0.1:5001)",
            "config.json: trusted_proxies[0]: 'nope' is not a CIDR range",
            "config.json: trusted_proxies[2]: 'also nope' is not a CIDR range",
            "config.json: threads: expected an integer in 1...256, got 0",
        ])
        do {
            _ = try parse(#"{"port": -1, "threads": 0}"#)
            Issue.record("expected errors")
        } catch {
            #expect(error.description == """
                config.json: port: expected an integer in 0...65535, got -1
                config.json: threads: expected an integer in 1...256, got 0
                """)
            #expect(error.errors.first == ConfigFileError(file: "config.json", field: "port", message: "expected an integer in 0...65535, got -1"))
        }
    }

    @Test("integer ranges mirror the command line exactly", arguments: [
        ("port", 0, 65535), ("timeout_ms", 1, 3_600_000), ("request_timeout_ms", 1, 3_600_000),
        ("connect_timeout_ms", 1, 600_000), ("max_attempts", 1, 10), ("hedge_after_ms", 0, 3_600_000),
        ("max_fails", 1, 1000), ("health_interval_ms", 0, 3_600_000), ("health_timeout_ms", 1, 600_000),
        ("max_delay_ms", 1, 3_600_000), ("burst", 1, 1_000_000), ("throttle_max_keys", 1, 100_000_000),
        ("penalty_threshold", 0, 1_000_000), ("penalty_window_ms", 1, 86_400_000),
        ("penalty_duration_ms", 0, 86_400_000), ("penalty_factor", 1, 1000), ("max_body_bytes", 0, 1 << 34),
        ("threads", 1, 256),
    ])
    func rangesMirrorFlags(key: String, lower: Int, upper: Int) {
        let flag = "--" + key.replacingOccurrences(of: "_", with: "-")
        for (value, valid) in [(lower - 1, false), (lower, true), (upper, true), (upper + 1, false)] {
            let fileOK = problems("{\"\(key)\": \(value)}").isEmpty
            let flagOK = (try? LBServeCommandLine.parse([flag, String(value)])) != nil
            #expect(fileOK == valid, "\(key) = \(value)")
            #expect(flagOK == valid, "\(flag) \(value)")
        }
    }

    @Test("every lbserve flag in the README has a config key")
    func everyFlagHasAKey() throws {
        let readme = try String(contentsOfFile: packageRoot + "/README.md", encoding: .utf8)
        let flags = readme.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("| `--") else { return nil }
            return String(line.dropFirst(5).prefix(while: { $0 != " " && $0 != "`" }))
        }
        #expect(flags.count >= 26)
        let renamed = ["backend": "backends", "trusted_proxy": "trusted_proxies"]
        for flag in flags where !["config", "help", "version", "check-config"].contains(flag) {
            let snake = flag.replacingOccurrences(of: "-", with: "_")
            #expect(ConfigFile.topLevelKeys.contains(renamed[snake] ?? snake), "no key for --\(flag)")
        }
    }

    @Test("load reads a file; an unreadable path is one error naming it")
    func loadPaths() throws {
        let dir = NSTemporaryDirectory() + "lbkit-config-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/lb.json"
        try Data(#"{"port": 8123, "backends": ["http://127.0.0.1:5001"]}"#.utf8).write(to: URL(fileURLWithPath: path))
        let loaded = try ConfigFile.load(path: path)
        #expect(loaded.balancer.port == 8123 && loaded.balancer.backends.count == 1)

        try Data(#"{"port": "x"}"#.utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: ConfigFileErrors([.init(file: path, field: "port", message: "expected an integer, got a string")])) {
            try ConfigFile.load(path: path)
        }

        let missing = dir + "/missing.json"
        #expect(throws: ConfigFileErrors([.init(file: missing, field: "", message: "cannot read: No such file or directory")])) {
            try ConfigFile.load(path: missing)
        }
        do {
            _ = try ConfigFile.load(path: dir)
            Issue.record("a directory is not a config file")
        } catch {
            #expect(error.description == "\(dir): cannot read: not a regular file (a directory)")
        }
    }

    @Test("Docs/Configuration.md shows the example file and documents every key")
    func docsInSync() throws {
        let doc = try String(contentsOfFile: packageRoot + "/Docs/Configuration.md", encoding: .utf8)
        let example = try String(contentsOfFile: packageRoot + "/Docs/example-config.json", encoding: .utf8)
        #expect(doc.contains("```json\n" + example + "```"))
        for key in ConfigFile.topLevelKeys + ConfigFile.backendKeys {
            #expect(doc.contains("| `\(key)` |"), "\(key) missing from the schema tables")
        }
    }

    @Test("Docs/example-config.json parses")
    func exampleFile() throws {
        let loaded = try ConfigFile.load(path: packageRoot + "/Docs/example-config.json")
        let c = loaded.balancer
        #expect(c.backends.count == 4 && c.weights == [3, 3, 1, 1])
        #expect(loaded.healthPaths == ["/ready", "/ready", nil, nil])
        #expect(c.strategy == .weighted && c.rateLimit == 50 && c.trustedProxies.count == 2)
        #expect(c.maxDelay == .milliseconds(800) && c.hedgeAfter == nil && c.accessLog)
    }
}
