import Foundation
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
@testable import LBServeSupport

private let packageRoot: String = {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

/// A value each flag accepts, for the "every listed flag parses" check.
private func sampleValue(_ flag: LBServeFlag) -> String? {
    guard flag.value != nil else { return nil }
    if let setting = NumericSetting.named(flag: flag.name) {
        switch setting.kind {
        // The largest value, except where that would put the base ejection above its maximum.
        case .integer(let r): return String(flag.name == "--ejection-base-ms" ? r.lowerBound : r.upperBound)
        case .decimal(let r): return NumericSetting.plain(r.upperBound)
        }
    }
    switch flag.name {
    case "--backend": return "http://127.0.0.1:5001"
    case "--host": return "127.0.0.1"
    case "--config": return "lb.json"
    case "--strategy": return "weighted"
    case "--health-path", "--router-health-path": return "/ready"
    case "--health-expect-status": return "200,204"
    case "--trusted-proxy", "--admin-allow": return "10.0.0.0/8"
    case "--admin-listen": return "127.0.0.1:9901"
    case "--admin-token": return "0123456789"
    case "--backend-header": return "off"
    case "--log-level": return "warning"
    case "--throttle-store": return "redis://127.0.0.1:6379/0"
    case "--throttle-key-prefix": return "app:"
    case "--log-format": return "json"
    default: return "x"
    }
}

@Suite("lbserve command line: help, version, check-config, new settings, logs")
struct OperatorCommandLineTests {
    @Test("--help lists exactly the flags the parser accepts, each with a default and a meaning")
    func helpMatchesParser() throws {
        let listed = LBServeCommandLine.usage.split(separator: "\n").filter { $0.hasPrefix("  --") }
            .map { String($0.dropFirst(2).prefix { $0 != " " }) }
        #expect(Set(listed).count == listed.count, "a flag is listed twice")
        #expect(Set(listed) == Set(LBServeCommandLine.flagNames))
        // Every numeric setting is a flag, and the parser accepts every listed flag ...
        #expect(Set(NumericSetting.all.map(\.flag)).isSubset(of: Set(listed)))
        for flag in LBServeCommandLine.flags {
            let args = [flag.name] + (sampleValue(flag).map { [$0] } ?? [])
            do {
                _ = try LBServeCommandLine.parse(args)
            } catch {
                Issue.record("\(args) rejected: \(error.message)")
            }
            #expect(!flag.meaning.isEmpty)
            let line = try #require(LBServeCommandLine.usage.split(separator: "\n").first { $0.hasPrefix("  \(flag.name) ") || $0 == "  \(flag.name)" })
            if flag.value != nil { #expect(line.contains("(default "), "\(line)") }
        }
        // ... and nothing else.
        for unlisted in ["--bogus", "--health", "--admin", "--log"] {
            #expect(throws: CommandLineError.self) { try LBServeCommandLine.parse([unlisted, "1"]) }
        }
    }

    @Test("the README flag table lists the same flags as --help")
    func readmeMatchesParser() throws {
        let readme = try String(contentsOfFile: packageRoot + "/README.md", encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "## lbserve flags").dropFirst().first)
        let flags = section.split(separator: "\n").prefix { !$0.hasPrefix("## ") }.compactMap { line -> String? in
            guard line.hasPrefix("| `--") else { return nil }
            return String(line.dropFirst(3).prefix { $0 != " " && $0 != "`" })
        }
        #expect(Set(flags) == Set(LBServeCommandLine.flagNames), "README only: \(Set(flags).subtracting(LBServeCommandLine.flagNames)); missing: \(Set(LBServeCommandLine.flagNames).subtracting(flags))")
    }

    @Test("new flags map onto the configuration")
    func newFlags() throws {
        let o = try LBServeCommandLine.parse([
            "--health-fall", "5", "--health-rise", "4", "--slow-start-ms", "0", "--ejection-base-ms", "250",
            "--ejection-max-ms", "1000", "--max-ejected-percent", "100", "--health-expect-status", "200-299,304",
            "--admin-allow", "10.0.0.0/8", "--admin-allow=192.168.0.0/16", "--admin-listen", "127.0.0.1:9901",
            "--backend-header", "X-App-Url", "--router-health-path", "/health", "--log-level", "warning", "--log-format", "json",
            "--check-config", "--version",
        ])
        let c = o.balancer
        #expect(c.healthFall == 5 && c.healthRise == 4 && c.slowStart == .zero)
        #expect(c.ejectionBase == .milliseconds(250) && c.ejectionMax == .seconds(1) && c.maxEjectedPercent == 100)
        #expect(c.healthExpectStatus?.description == "200-299,304")
        #expect(c.adminAllow.map(\.description) == ["10.0.0.0/8", "192.168.0.0/16"])
        #expect(o.serve.adminListen == ListenAddress(host: "127.0.0.1", port: 9901))
        #expect(c.backendHeader == "X-App-Url" && c.routerHealthPath == "/health")
        #expect(o.serve.logLevel == .warning && o.serve.logFormat == .json)
        #expect(o.checkConfig && o.showVersion)
        #expect(!c.healthPathIsExplicit)
        #expect(try LBServeCommandLine.parse(["--health-path", "/health"]).balancer.healthPathIsExplicit)
        #expect(try LBServeCommandLine.parse(["--backend-header", "off"]).balancer.backendHeader == nil)
        #expect(try LBServeCommandLine.parse(["--admin-listen", "[::1]:0"]).serve.adminListen == ListenAddress(host: "::1", port: 0))
        #expect(LBServeCommandLine.versionLine == "lbserve \(LBKitVersion.string)")
    }

    @Test("bad values of the new flags name the flag", arguments: [
        (["--health-expect-status", "2xx"], "--health-expect-status"),
        (["--health-fall", "0"], "--health-fall"),
        (["--max-ejected-percent", "101"], "--max-ejected-percent"),
        (["--ejection-base-ms", "5000", "--ejection-max-ms", "1000"], "--ejection-max-ms"),
        (["--admin-allow", "10.0.0.0/33"], "--admin-allow"),
        (["--admin-listen", "9901"], "--admin-listen"),
        (["--backend-header", "X Backend"], "--backend-header"),
        (["--router-health-path", "health"], "--router-health-path"),
        (["--log-level", "loud"], "--log-level"),
        (["--log-format", "xml"], "--log-format"),
        (["--version=1"], "--version"),
    ])
    func rejects(arguments: [String], flag: String) {
        do {
            _ = try LBServeCommandLine.parse(arguments)
            Issue.record("accepted \(arguments)")
        } catch {
            #expect(error.message.hasPrefix(flag), "message: \(error.message)")
            #expect(!error.message.contains("\n"))
        }
    }

    @Test("LB_* environment variables for the numeric settings: same checks, flags and file win")
    func environment() throws {
        let env = ["LB_HEALTH_FALL": "6", "LB_SLOW_START_MS": "0", "LB_MAX_EJECTED_PERCENT": "20"]
        let c = try LBServeCommandLine.parse([], environment: env).balancer
        #expect(c.healthFall == 6 && c.slowStart == .zero && c.maxEjectedPercent == 20)
        #expect(try LBServeCommandLine.parse(["--health-fall", "2"], environment: env).balancer.healthFall == 2)
        do {
            _ = try LBServeCommandLine.parse([], environment: ["LB_HEALTH_RISE": "0"])
            Issue.record("LB_HEALTH_RISE=0 accepted")
        } catch {
            #expect(error.message.hasPrefix("LB_HEALTH_RISE: '0' is not an integer in 1...100"))
        }
        #expect(LBServeCommandLine.environmentVariables.contains("LB_EJECTION_BASE_MS"))
    }

    @Test("config keys for the new settings; errors name the key")
    func configKeys() throws {
        let loaded = try ConfigFile.parse(Array("""
            {"backends": ["http://127.0.0.1:5001"], "health_fall": 4, "health_rise": 3, "slow_start_ms": 2000,
             "ejection_base_ms": 1000, "ejection_max_ms": 8000, "max_ejected_percent": 30,
             "health_path": "/ready", "health_expect_status": "200,204", "admin_allow": ["10.0.0.0/8"],
             "admin_listen": "127.0.0.1:9901", "backend_header": "off", "router_health_path": "/health",
             "log_level": "debug", "log_format": "json"}
            """.utf8), file: "lb.json")
        let c = loaded.balancer
        #expect(c.healthFall == 4 && c.healthRise == 3 && c.slowStart == .seconds(2))
        #expect(c.ejectionBase == .seconds(1) && c.ejectionMax == .seconds(8) && c.maxEjectedPercent == 30)
        #expect(c.healthPath == "/ready" && c.healthPathIsExplicit && c.healthExpectStatus?.description == "200,204")
        #expect(c.adminAllow.count == 1 && c.backendHeader == nil && c.routerHealthPath == "/health")
        #expect(loaded.settings.adminListen == ListenAddress(host: "127.0.0.1", port: 9901))
        #expect(loaded.settings.logLevel == .debug && loaded.settings.logFormat == .json)

        do {
            _ = try ConfigFile.parse(Array("""
                {"health_expect_status": "2xx", "ejection_base_ms": 9000, "ejection_max_ms": 1000, "log_level": "loud",
                 "admin_listen": "x", "backend_header": "a b", "health_fall": 0}
                """.utf8), file: "lb.json")
            Issue.record("accepted")
        } catch {
            let fields = error.errors.map(\.field)
            #expect(fields == ["health_expect_status", "health_fall", "admin_listen", "backend_header", "log_level", "ejection_max_ms"],
                    "\(error.description)")
        }
    }

    @Test("--check-config output is the effective configuration, and reads back as the same configuration")
    func checkConfigRoundTrip() throws {
        let options = try LBServeCommandLine.parse([
            "--backend", "http://127.0.0.1:5001", "--backend", "http://127.0.0.1:5002", "--rate-limit", "2.5",
            "--health-fall", "5", "--admin-allow", "10.0.0.0/8", "--backend-header", "off", "--log-format", "json",
            "--admin-listen", "127.0.0.1:9901", "--health-expect-status", "200-299", "--trusted-proxy", "fd00::/8",
        ])
        let text = ConfigFile.render(options)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(Set(object.keys) == Set(ConfigFile.topLevelKeys))
        #expect(object["health_path"] is NSNull)  // the default: not configured
        let back = try ConfigFile.parse(Array(text.utf8), file: "effective.json")
        var expected = options.balancer
        expected.weights = [1, 1]  // a file states every backend's weight
        #expect(back.balancer == expected)
        #expect(back.settings == options.serve)
        // An explicit path and an admin token: the path round-trips, the token is not printed.
        let secret = try LBServeCommandLine.parse(["--backend", "http://127.0.0.1:5001", "--health-path", "/health", "--admin-token", "very-secret-token"])
        let secretText = ConfigFile.render(secret)
        #expect(!secretText.contains("very-secret-token"))
        #expect(try ConfigFile.parse(Array(secretText.utf8), file: "e.json").balancer.healthPathIsExplicit)
    }

    @Test("a warning when weights are set under round robin (and none under weighted)")
    func weightWarning() throws {
        func setup(_ strategy: String) throws -> LBServeCommandLine.Setup {
            let dir = NSTemporaryDirectory() + "lbkit-warn-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let path = dir + "/lb.json"
            try Data(#"{"strategy": "\#(strategy)", "backends": [{"url": "http://127.0.0.1:5001", "weight": 3}, "http://127.0.0.1:5002"]}"#.utf8)
                .write(to: URL(fileURLWithPath: path))
            return try LBServeCommandLine.load(["--config", path])
        }
        let warnings = LBServeCommandLine.warnings(try setup("round-robin"))
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("weights have no effect") == true)
        #expect(LBServeCommandLine.warnings(try setup("weighted")).isEmpty)
    }

    @Test("log lines: text has an RFC 3339 timestamp and the level; json is one object with ts, level, category, message, metadata")
    func logLines() throws {
        let event = LBLogEvent(level: .warning, category: .health, message: "Marking http://127.0.0.1:5002 as UNHEALTHY (3 failed checks: status 500)",
                               metadata: ["backend": "http://127.0.0.1:5002", "state": "down"])
        let ts = AccessLogClock.timestamp()
        #expect(ts.count == 24 && ts.hasSuffix("Z") && ts.dropFirst(10).first == "T")
        let text = LogOutput.line(for: event, format: .text, timestamp: ts)
        #expect(text == "\(ts) warning [HEALTH] Marking http://127.0.0.1:5002 as UNHEALTHY (3 failed checks: status 500)")
        let json = LogOutput.line(for: event, format: .json, timestamp: ts)
        #expect(!json.contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["ts"] as? String == ts && object["level"] as? String == "warning" && object["category"] as? String == "HEALTH")
        #expect(object["message"] as? String == event.message)
        #expect(object["metadata"] as? [String: String] == event.metadata)
        let multiline = LBLogEvent(level: .info, category: .config, message: "a\nb")
        #expect(!LogOutput.line(for: multiline, format: .text, timestamp: ts).contains("\n"))
    }

    @Test("access-log lines escape quotes and control bytes and carry upstream status, bytes, attempts, user agent")
    func accessLogLine() throws {
        let record = AccessLogRecord(client: "203.0.113.9", method: "GET", target: "/a\"b\\c\u{1B}[31m", status: 502, backend: nil, attempts: 3,
                                     duration: .microseconds(1500), userAgent: "evil\" agent\n", upstreamStatus: nil, bytesIn: 0, bytesOut: 91)
        let line = AccessLogFormat.line(record, timestamp: "2026-11-29T10:00:00.000Z")
        #expect(line == #"2026-11-29T10:00:00.000Z 203.0.113.9 "GET /a\"b\\c\x1B[31m" 502 backend=- attempts=3 duration_ms=1.500 upstream_status=- bytes_in=0 bytes_out=91 user_agent="evil\" agent\x0A""#)
        let json = AccessLogFormat.json(record, timestamp: "2026-11-29T10:00:00.000Z")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["target"] as? String == record.target && object["user_agent"] as? String == record.userAgent)
        #expect(object["status"] as? Int == 502 && object["attempts"] as? Int == 3 && object["bytes_out"] as? Int == 91)
        #expect(object["upstream_status"] is NSNull)
    }
}
