import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// The package root (this file is Tests/LBKitTests/InputValidationTests.swift).
private let packageRoot: String = {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

/// Every numeric `lbserve` flag, read from the README's flag table (rows whose value placeholder
/// is `N`, `R` or `B`), so a flag added to the README is covered without editing this test.
private let numericFlags: [String] = {
    guard let readme = try? String(contentsOfFile: packageRoot + "/README.md", encoding: .utf8) else { return [] }
    return readme.split(separator: "\n").compactMap { line -> String? in
        guard line.hasPrefix("| `--") else { return nil }
        let cell = line.dropFirst(3).prefix { $0 != "`" }          // "--port N"
        let parts = cell.split(separator: " ")
        guard parts.count == 2, ["N", "R", "B"].contains(parts[1]) else { return nil }
        return String(parts[0])
    }
}()

/// Flags whose documented range includes 0 (0 is meaningful: any port, never hedge, no active
/// checks, no penalty box, penalties last 0 ms, bodies must be empty, no slow start).
private let zeroAllowed: Set<String> = [
    "--port", "--hedge-after-ms", "--health-interval-ms", "--penalty-threshold", "--penalty-duration-ms",
    "--max-body-bytes", "--slow-start-ms", "--resolve-interval-ms",
]

/// Values that are never meaningful for any numeric setting.
private let alwaysBad = ["-1", "1e19", "99999999999999999999", "inf", "-inf", "nan", "Infinity", "1e400",
                         "9223372036854775808", "-9223372036854775809", " 5", "5 ", "0x10", ""]

private func configProblems(_ json: String) -> [String] {
    do {
        _ = try ConfigFile.parse(Array(json.utf8), file: "lb.json")
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

/// A fresh temporary directory (removed by the caller).
private func temporaryDirectory() throws -> String {
    let dir = NSTemporaryDirectory() + "lbkit-input-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

@Suite("Input validation: numbers, config files, health paths", .timeLimit(.minutes(1)))
struct InputValidationTests {
    // MARK: Numbers

    @Test("the README lists the numeric flags this suite walks")
    func numericFlagsFound() {
        #expect(numericFlags.count >= 19, "found \(numericFlags)")
        for flag in ["--port", "--rate-limit", "--burst", "--timeout-ms", "--max-body-bytes", "--threads", "--penalty-factor"] {
            #expect(numericFlags.contains(flag), "\(flag) missing from \(numericFlags)")
        }
    }

    @Test("every numeric flag x {0, -1, huge, inf, nan, ...}: accepted in range or one line naming the flag",
          arguments: numericFlags)
    func numericFlagExtremes(flag: String) {
        for value in ["0"] + alwaysBad {
            for arguments in [[flag, value], ["\(flag)=\(value)"]] {
                do {
                    let options = try LBServeCommandLine.parse(arguments)
                    #expect(value == "0" && zeroAllowed.contains(flag), "\(arguments) was accepted")
                    _ = options.balancer.effectiveRequestTimeout
                    _ = options.balancer.effectiveHealthTimeout
                } catch {
                    #expect(!(value == "0" && zeroAllowed.contains(flag)), "\(arguments): \(error.message)")
                    #expect(error.message.hasPrefix("\(flag): "), "\(arguments): \(error.message)")
                    #expect(!error.message.contains("\n"), "\(arguments): \(error.message)")
                }
            }
        }
    }

    @Test("--rate-limit: fractions and the documented upper bound are accepted, 1e19 is not")
    func rateLimitRange() throws {
        #expect(try LBServeCommandLine.parse(["--rate-limit", "0.5"]).balancer.rateLimit == 0.5)
        #expect(try LBServeCommandLine.parse(["--rate-limit", "1000000000"]).balancer.rateLimit == 1e9)
        for bad in ["1e19", "1000000001", "0", "1e-300", "inf", "nan"] {
            #expect(throws: CommandLineError.self, "--rate-limit \(bad)") { try LBServeCommandLine.parse(["--rate-limit", bad]) }
        }
    }

    @Test("environment variables: same ranges as their flags, one line naming the variable",
          arguments: ["LB_RATE_LIMIT", "LB_BURST"])
    func environmentExtremes(variable: String) {
        for value in ["0"] + alwaysBad {
            do {
                _ = try LBServeCommandLine.parse([], environment: [variable: value])
                Issue.record("\(variable)=\(value) was accepted")
            } catch {
                #expect(error.message.hasPrefix("\(variable): "), "\(variable)=\(value): \(error.message)")
                #expect(!error.message.contains("\n"))
            }
            do {
                _ = try LBServeCommandLine.load([], environment: [variable: value])
                Issue.record("load: \(variable)=\(value) was accepted")
            } catch {
                #expect(error.message.hasPrefix("\(variable): "))
            }
        }
        #expect((try? LBServeCommandLine.parse([], environment: ["LB_BURST": "1000001"])) == nil)
        #expect((try? LBServeCommandLine.parse([], environment: ["LB_BURST": "1000000"]))?.balancer.burst == 1_000_000)
        #expect((try? LBServeCommandLine.parse([], environment: ["LB_RATE_LIMIT": "2.5"]))?.balancer.rateLimit == 2.5)
    }

    @Test("every numeric config key x {0, -1, huge, 1e400, NaN, ...}: accepted in range or one error naming the key",
          arguments: numericFlags)
    func numericKeyExtremes(flag: String) {
        let key = String(flag.dropFirst(2)).replacingOccurrences(of: "-", with: "_")
        let values = ["0", "-1", "1e19", "99999999999999999999", "1e400", "-1e400", "NaN", "Infinity", "-9223372036854775809",
                      "9223372036854775808", "18446744073709551696", "1e-400", "0.5", "-0.0"]
        for value in values {
            let lines = configProblems("{\"\(key)\": \(value)}")
            let zeroOK = zeroAllowed.contains(flag) && ["0", "-0.0"].contains(value)
            if zeroOK {
                #expect(lines.isEmpty, "\(key): \(value): \(lines)")
                continue
            }
            if key == "rate_limit" && value == "0.5" {
                #expect(lines.isEmpty, "\(key): \(value): \(lines)")
                continue
            }
            #expect(lines.count == 1, "\(key): \(value): \(lines)")
            #expect(lines.first?.hasPrefix("lb.json: \(key): ") == true, "\(key): \(value): \(lines)")
        }
    }

    @Test("a huge number is quoted as written, never as a rounded neighbour")
    func numbersQuotedExactly() {
        #expect(configProblems(#"{"port": -9223372036854775809}"#)
            == ["lb.json: port: expected an integer in 0...65535, got -9223372036854775809"])
        #expect(configProblems(#"{"threads": 1e19}"#) == ["lb.json: threads: expected an integer in 1...256, got 1e19"])
        #expect(configProblems(#"{"rate_limit": 1e19}"#).first?.hasPrefix("lb.json: rate_limit: ") == true)
        #expect(configProblems(#"{"backends": [{"url": "http://a:1", "weight": 1e400}]}"#)
            == ["lb.json: backends[0].weight: expected an integer in 1...1000, got 1e400"])
    }

    @Test("backend weight extremes name backends[i].weight")
    func weightExtremes() {
        for value in ["0", "-1", "1e19", "99999999999999999999", "1e400", "NaN", "1001", "2.5"] {
            let lines = configProblems("{\"backends\": [\"http://a:1\", {\"url\": \"http://b:1\", \"weight\": \(value)}]}")
            #expect(lines.count == 1 && lines.first?.hasPrefix("lb.json: backends[1].weight: ") == true, "\(value): \(lines)")
        }
    }

    // MARK: Config file syntax

    @Test("duplicate keys are rejected with the path of their object", arguments: [
        (#"{"port": 1, "port": 2}"#, [#"lb.json: (top level): duplicate key "port""#]),
        (#"{"backends": ["http://a:1", {"url": "http://b:1", "url": "http://c:1"}]}"#,
         [#"lb.json: backends[1]: duplicate key "url""#]),
        (#"{"backends": [{"url": "http://b:1", "weight": 1, "weight": 2}], "port": 1, "port": 1}"#,
         [#"lb.json: (top level): duplicate key "port""#, #"lb.json: backends[0]: duplicate key "weight""#]),
        (#"{"trusted_proxies": [], "trusted_proxies": ["10.0.0.0/8"]}"#, [#"lb.json: (top level): duplicate key "trusted_proxies""#]),
    ])
    func duplicateKeys(json: String, expected: [String]) {
        #expect(Set(configProblems(json)) == Set(expected))
    }

    @Test("trailing commas are rejected with the path of their container", arguments: [
        (#"{"port": 1,}"#, "lb.json: (top level): "),
        (#"{"backends": ["http://a:1",]}"#, "lb.json: backends: "),
        (#"{"backends": [{"url": "http://a:1",}]}"#, "lb.json: backends[0]: "),
        (#"{"trusted_proxies": ["10.0.0.0/8", ], "port": 1}"#, "lb.json: trusted_proxies: "),
    ])
    func trailingCommas(json: String, prefix: String) {
        let lines = configProblems(json)
        #expect(lines.count == 1, "\(lines)")
        #expect(lines.first?.hasPrefix(prefix) == true, "\(lines)")
        #expect(lines.first?.contains("trailing comma") == true, "\(lines)")
    }

    @Test("other JSON the strict reader refuses: one line each", arguments: [
        "{\"port\": 1} x", "{\"port\": 01}", "{\"port\": +1}", "{\"host\": \"a\u{1}b\"}", "{\"host\": \"\\ud800\"}",
        "{\"port\": 1", "{\"port\" 1}", "{,}", "{\"port\": .5}", "{\"port\": 1.}", "{\"port\": 1e}",
        String(repeating: "[", count: 10_000), "{\"backends\": " + String(repeating: "[", count: 100) + "}",
    ])
    func strictJSON(json: String) {
        let lines = configProblems(json)
        #expect(lines.count == 1, "\(json.prefix(40)): \(lines)")
        #expect(lines.first?.contains("\n") == false)
    }

    // MARK: Non-regular files

    @Test("a FIFO as the config file is refused at once, before any read blocks")
    func fifoRefused() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/lb.json"
        #expect(mkfifo(fifo, 0o600) == 0)
        let outcome = try await withReaderUnblocked(fifo) {
            do throws(ConfigFileErrors) {
                _ = try ConfigFile.load(path: fifo)
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(outcome.hasPrefix("\(fifo): "), "\(outcome)")
        #expect(outcome.contains("not a regular file"), "\(outcome)")
        let viaCommandLine = try await withReaderUnblocked(fifo) {
            do throws(CommandLineError) {
                _ = try LBServeCommandLine.load(["--config", fifo])
                return "accepted"
            } catch {
                return error.message
            }
        }
        #expect(viaCommandLine.contains("not a regular file") && !viaCommandLine.contains("\n"), "\(viaCommandLine)")
    }

    @Test("directories and devices are refused with one line naming the path")
    func otherNonRegularFiles() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for path in [dir, "/dev/null", "/dev/zero"] {
            do {
                _ = try ConfigFile.load(path: path)
                Issue.record("\(path) accepted")
            } catch {
                #expect(error.errors.count == 1)
                #expect(error.description.hasPrefix("\(path): ") && error.description.contains("not a regular file"),
                        "\(error.description)")
            }
        }
        // A symbolic link to a regular file is fine.
        let file = dir + "/real.json", link = dir + "/link.json"
        try Data(#"{"port": 8123}"#.utf8).write(to: URL(fileURLWithPath: file))
        #expect(symlink(file, link) == 0)
        #expect(try ConfigFile.load(path: link).balancer.port == 8123)
    }

    // MARK: Health paths

    static let badHealthPaths = ["health", "", "/a b", "/a\r\nX-Injected: 1", "/a\nb", "/a\rb", "/a\u{0}", "/a\u{7F}",
                                 "/a\tb", "/é", "/a#frag", "/a%zz", "/a%4", "/a\"b", "/<x>", "*", "http://h/x", "/a\\b"]
    static let goodHealthPaths = ["/", "/health", "/x/y?full=1", "/a%20b", "/~user/a-b_c.d", "/p;v=1/q:@!$&'()*+,=",
                                  "/?a=/b?c"]

    @Test("--health-path: only request-target characters, starting with /", arguments: badHealthPaths)
    func badHealthPathFlag(path: String) {
        do {
            _ = try LBServeCommandLine.parse(["--health-path", path])
            Issue.record("accepted \(path.debugDescription)")
        } catch {
            #expect(error.message.hasPrefix("--health-path: "), "\(error.message)")
            #expect(!error.message.contains("\n") && !error.message.contains("\r"), "\(error.message.debugDescription)")
        }
    }

    @Test("health_path and backends[i].health_path: the same rule, one line", arguments: badHealthPaths)
    func badHealthPathKeys(path: String) {
        var escaped = ""
        for scalar in path.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            default:
                if scalar.value < 0x20 { escaped += String(format: "\\u%04x", scalar.value) } else { escaped.unicodeScalars.append(scalar) }
            }
        }
        let top = configProblems("{\"health_path\": \"\(escaped)\"}")
        #expect(top.count == 1 && top.first?.hasPrefix("lb.json: health_path: ") == true, "\(top)")
        let perBackend = configProblems("{\"backends\": [{\"url\": \"http://a:1\", \"health_path\": \"\(escaped)\"}]}")
        #expect(perBackend.count == 1 && perBackend.first?.hasPrefix("lb.json: backends[0].health_path: ") == true, "\(perBackend)")
        for line in top + perBackend {
            #expect(!line.contains("\n") && !line.contains("\r"), "\(line.debugDescription)")
        }
    }

    @Test("valid health paths are accepted everywhere", arguments: goodHealthPaths)
    func goodHealthPathAccepted(path: String) throws {
        #expect(try LBServeCommandLine.parse(["--health-path", path]).balancer.healthPath == path)
        #expect(configProblems("{\"health_path\": \"\(path)\"}") == [])
    }

    // MARK: One-line errors

    @Test("user text with control bytes never splits an error into several lines")
    func controlBytesEscaped() {
        for arguments in [["--bo\ngus"], ["--backend", "http://a\r\nb:1"], ["--strategy", "x\ny"], ["--trusted-proxy", "1\n2"],
                          ["--port", "1\n2"], ["--rate-limit", "1\n"]] {
            do {
                _ = try LBServeCommandLine.parse(arguments)
                Issue.record("accepted \(arguments)")
            } catch {
                #expect(!error.message.contains("\n") && !error.message.contains("\r"), "\(error.message.debugDescription)")
            }
        }
        let lines = configProblems("{\"strategy\": \"a\\nb\", \"colo\\nur\": 1}")
        #expect(lines.count == 2)
        for line in lines { #expect(!line.contains("\n"), "\(line.debugDescription)") }
    }
}

/// Runs `body` (which may block reading the FIFO at `fifo` on unfixed code) on its own thread;
/// if it has not finished after 3 s, records an issue and opens the FIFO for writing once so the
/// blocked reader sees EOF and the test can end.
private func withReaderUnblocked(_ fifo: String, _ body: @escaping @Sendable () -> String) async throws -> String {
    let done = CallCounter()
    async let result = offload { () -> String in
        let r = body()
        done.increment()
        return r
    }
    let finished = await eventually(timeout: .seconds(3)) { done.value == 1 }
    if !finished {
        Issue.record("reading \(fifo) blocked")
        let fd = open(fifo, O_WRONLY | O_NONBLOCK)
        if fd >= 0 { close(fd) }
    }
    return try await result
}
