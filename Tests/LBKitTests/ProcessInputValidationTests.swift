import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// The built `lbserve` fed hostile numbers and hostile config files: it must exit 2 with one line
/// (never trap), and a FIFO as config file must never block it, at start or on SIGHUP.
@Suite("Processes: lbserve input validation", .serialized, .timeLimit(.minutes(2)))
struct ProcessInputValidationTests {
    private func temporaryPath(_ name: String) -> String {
        NSTemporaryDirectory() + "lbkit-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Exit status 2 within 5 s and exactly one stderr line containing `text`.
    private func expectOneLineExit2(_ child: ChildProcess, containing text: String, label: String) async {
        let exit = await child.waitForExit(timeout: .seconds(5))
        #expect(exit?.reason == .exit && exit?.status == 2,
                "\(label): expected exit 2, got \(exit.map { "\($0.reason == .exit ? "exit" : "signal") \($0.status)" } ?? "still running")")
        _ = await eventually(timeout: .seconds(5)) { child.stderr.reachedEOF }
        let err = child.stderr.text
        #expect(err.hasSuffix("\n") && err.split(separator: "\n", omittingEmptySubsequences: false).count == 2,
                "\(label): exactly one stderr line, got \(err.debugDescription)")
        #expect(err.contains(text), "\(label): stderr must contain \(text), got \(err.debugDescription)")
        #expect(!err.contains("Fatal error"), "\(label): \(err)")
    }

    static let hostileNumbers: [(arguments: [String], environment: [String: String], names: String)] = [
        (["--rate-limit", "1e19"], [:], "--rate-limit"),
        (["--rate-limit", "nan"], [:], "--rate-limit"),
        (["--timeout-ms", "99999999999999999999"], [:], "--timeout-ms"),
        (["--max-body-bytes", "-1"], [:], "--max-body-bytes"),
        ([], ["LB_RATE_LIMIT": "inf"], "LB_RATE_LIMIT"),
        ([], ["LB_BURST": "1e19"], "LB_BURST"),
    ]

    @Test("hostile numbers on the command line and in the environment: exit 2, one line naming them",
          arguments: ProcessInputValidationTests.hostileNumbers)
    func hostileNumberRefused(_ c: (arguments: [String], environment: [String: String], names: String)) async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let child = try harness.start("lbserve", ["--host", "127.0.0.1", "--port", "0", "--backend", "http://127.0.0.1:9"] + c.arguments,
                                      environment: c.environment)
        await expectOneLineExit2(child, containing: c.names, label: "\(c.environment) \(c.arguments)")
        #expect(!child.stdout.text.contains("Router running"))
    }

    @Test("a config file with a duplicate key or 1e19: exit 2, one line with the JSON path")
    func hostileConfigFile() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let path = temporaryPath("dup") + ".json"
        defer { unlink(path) }
        for (json, expected) in [
            (#"{"backends": ["http://127.0.0.1:9", {"url": "http://127.0.0.1:10", "url": "http://127.0.0.1:11"}]}"#,
             #"backends[1]: duplicate key "url""#),
            (#"{"backends": ["http://127.0.0.1:9"], "rate_limit": 1e19}"#, "rate_limit: "),
            (#"{"backends": ["http://127.0.0.1:9",]}"#, "backends: "),
        ] {
            try Data(json.utf8).write(to: URL(fileURLWithPath: path))
            let child = try harness.start("lbserve", ["--config", path, "--host", "127.0.0.1", "--port", "0"])
            await expectOneLineExit2(child, containing: "\(path): \(expected)", label: json)
        }
    }

    @Test("--config naming a FIFO: refused at once with one line, exit 2")
    func fifoAtStart() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let fifo = temporaryPath("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let child = try harness.start("lbserve", ["--config", fifo, "--host", "127.0.0.1", "--port", "0"])
        await expectOneLineExit2(child, containing: "\(fifo): cannot read: not a regular file", label: "FIFO")
    }

    @Test("SIGHUP while the config path is a FIFO: reload refused, SIGTERM still handled")
    func fifoOnReload() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (_, ports) = try await harness.startEcho()
        let path = temporaryPath("reload-fifo") + ".json"
        defer { unlink(path) }
        try Data("{\"host\": \"127.0.0.1\", \"port\": 0, \"backends\": [\"http://127.0.0.1:\(ports[0])\"]}".utf8)
            .write(to: URL(fileURLWithPath: path))
        let (lb, port) = try await harness.startLBServe(["--config", path])
        unlink(path)
        #expect(mkfifo(path, 0o600) == 0)
        lb.send(SIGHUP)
        let failed = await lb.waitForLine(containing: "[CONFIG] reload failed", timeout: .seconds(5))
        #expect(failed?.contains("not a regular file") == true, "stdout: \(lb.stdout.text)")
        #expect(try await rawRequest(port: port, method: "POST", body: Array(#"{"a":1}"#.utf8)).status == 200)
        lb.send(SIGTERM)
        let exit = await lb.waitForExit(timeout: .seconds(5))
        #expect(exit?.reason == .exit && exit?.status == 0, "SIGTERM after a FIFO reload must still stop lbserve")
        if lb.isRunning {
            // Unblock a reader stuck in open/read so the harness can clean up.
            let fd = open(path, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
        }
    }
}
