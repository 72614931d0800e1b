import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite("Processes: lbserve --config and SIGHUP reload", .serialized, .timeLimit(.minutes(2)))
struct ProcessReloadTests {
    let demo = Array(#"{"msg":"demo"}"#.utf8)

    func write(_ text: String, to path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    @Test("SIGHUP swaps a backend from the file without failed requests; an invalid file keeps the old configuration")
    func sighupReload() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        var ports: [Int] = []
        for _ in 0..<3 { ports += try await harness.startEcho().1 }
        let path = NSTemporaryDirectory() + "lbkit-reload-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json"
        defer { unlink(path) }
        func config(_ backends: [Int]) -> String {
            // No slow start: a backend that joins by reload would otherwise get ~10% of its share at first.
            "{\"host\": \"127.0.0.1\", \"port\": 0, \"health_interval_ms\": 200, \"slow_start_ms\": 0, \"backends\": ["
                + backends.map { "\"http://127.0.0.1:\($0)\"" }.joined(separator: ", ") + "]}"
        }
        try write(config([ports[0], ports[1]]), to: path)
        let (lb, port) = try await harness.startLBServe(["--config", path])
        var before: Set<Int> = []
        for _ in 0..<4 { if let p = handledBy(try await rawRequest(port: port, method: "POST", body: demo)) { before.insert(p) } }
        #expect(before == [ports[0], ports[1]])

        try write(config([ports[0], ports[2]]), to: path)
        lb.send(SIGHUP)
        let reloaded = await lb.waitForLine(containing: "[CONFIG] reloaded", timeout: .seconds(5))
        #expect(reloaded?.contains("removed (draining) http://127.0.0.1:\(ports[1])") == true)
        var after: Set<Int> = []
        for _ in 0..<6 {
            let r = try await rawRequest(port: port, method: "POST", body: demo)
            #expect(r.status == 200)
            if let p = handledBy(r) { after.insert(p) }
        }
        #expect(after == [ports[0], ports[2]])

        try write("{\"backends\": [\"ftp://nope\"], \"timeout\": 1}", to: path)
        lb.send(SIGHUP)
        // One line per problem: the unknown key, then the bad URL.
        let failed = await lb.waitForLines(containing: "[CONFIG] reload failed", count: 2, timeout: .seconds(5))
        #expect(failed.count == 2 && failed[0].contains("unknown key 'timeout'") && failed[1].contains("backends[0].url"), "\(failed)")
        #expect(try await rawRequest(port: port, method: "POST", body: demo).status == 200)
        lb.send(SIGTERM)
        #expect(await lb.waitForExit(timeout: .seconds(5))?.status == 0)
    }

    @Test("an invalid config file at start: every problem on its own line, exit 2")
    func invalidAtStart() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let path = NSTemporaryDirectory() + "lbkit-bad-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json"
        defer { unlink(path) }
        try write("{\"port\": 99999, \"backends\": [\"http://127.0.0.1:1\", \"gopher://x\"]}", to: path)
        let child = try harness.start("lbserve", ["--config", path])
        let exit = await child.waitForExit(timeout: .seconds(5))
        #expect(exit?.status == 2)
        let lines = child.stderr.text.split(separator: "\n")
        #expect(lines.count == 2, "stderr: \(child.stderr.text)")
        #expect(lines.contains { $0.contains("port") })
        #expect(lines.contains { $0.contains("backends[1].url: not an http URL") })
    }
}
