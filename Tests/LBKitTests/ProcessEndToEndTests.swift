import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// The real `echo` and `lbserve` executables (built next to this test bundle), started as child
/// processes on ephemeral loopback ports and driven over raw sockets. Every child is SIGKILLed at
/// the end of its test if it is still running.
@Suite("Processes: echo and lbserve", .serialized, .timeLimit(.minutes(3)))
struct ProcessEndToEndTests {
    let demo = Array(#"{"msg":"demo"}"#.utf8)

    // MARK: echo

    @Test("echo with two ports: JSON echo with handled_by and X-Handled-By, 400 for non-JSON, SIGTERM exits 0")
    func echoTwoPorts() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (echo, ports) = try await harness.startEcho(ports: 2)
        #expect(ports.count == 2)
        #expect(Set(ports).count == 2, "two distinct ports: \(ports)")
        #expect(!ports.contains(0))
        for port in ports {
            let r = try await rawRequest(port: port, method: "POST", path: "/anything", headers: [("Content-Type", "application/json")], body: demo)
            #expect(r.status == 200)
            #expect(r.bodyText == "{\"msg\":\"demo\",\"handled_by\":\(port)}")
            #expect(r.header("X-Handled-By") == String(port))
            #expect(r.header("Content-Type")?.hasPrefix("application/json") == true)

            let bad = try await rawRequest(port: port, method: "POST", path: "/", body: Array("not json".utf8))
            #expect(bad.status == 400)
            #expect(bad.header("Content-Type")?.hasPrefix("application/json") == true)
            let json = try? JSONSerialization.jsonObject(with: Data(bad.body)) as? [String: Any]
            #expect(json?["error"] != nil, "400 body: \(bad.bodyText)")
        }
        echo.send(SIGTERM)
        let exit = await echo.waitForExit(timeout: .seconds(5))
        #expect(exit?.reason == .exit, "echo must exit on SIGTERM within 5 s, got \(String(describing: exit))")
        #expect(exit?.status == 0)
    }

    @Test("echo --mode alternate: 200, 500 App failure, 200; GET /health stays 200")
    func echoAlternate() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (_, ports) = try await harness.startEcho(ports: 1, ["--mode", "alternate"])
        let port = ports[0]
        var posts: [RawHTTPClient.Response] = []
        var health: [Int] = []
        for _ in 0..<3 {
            posts.append(try await rawRequest(port: port, method: "POST", body: demo))
            health.append(try await rawRequest(port: port, path: "/health").status)
        }
        #expect(posts.map(\.status) == [200, 500, 200])
        #expect(posts[0].bodyText == "{\"msg\":\"demo\",\"handled_by\":\(port)}")
        #expect(posts[1].bodyText == #"{"error":"App failure"}"#)
        #expect(health == [200, 200, 200])
        let h = try await rawRequest(port: port, path: "/health")
        // Exactly `{"status":"ok"}`; the process's own load rides in X-LB-Agent (issue 11).
        #expect(h.bodyText == #"{"status":"ok"}"#)
        let agent = h.header("X-LB-Agent") ?? ""
        #expect(agent.hasPrefix("cpu:") && agent.contains(" memory:"), "\(agent)")
    }

    // MARK: lbserve

    @Test("lbserve over three echo processes: strict rotation, X-Backend header, SIGTERM exits 0")
    func lbserveRotation() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        var ports: [Int] = []
        for _ in 0..<3 { ports += try await harness.startEcho().1 }
        let (lb, port) = try await harness.startLBServe(
            ["--host", "127.0.0.1", "--port", "0"] + ports.flatMap { ["--backend", "http://127.0.0.1:\($0)"] })
        #expect(port != 0)
        var handled: [Int?] = []
        for _ in 0..<6 {
            let r = try await rawRequest(port: port, method: "POST", body: demo)
            #expect(r.status == 200)
            let by = handledBy(r)
            #expect(r.header("X-Backend") == "http://127.0.0.1:\(by ?? -1)")
            #expect(r.bodyText == "{\"msg\":\"demo\",\"handled_by\":\(by ?? -1)}")
            handled.append(by)
        }
        #expect(handled == (ports + ports).map { Optional($0) })
        lb.send(SIGTERM)
        let exit = await lb.waitForExit(timeout: .seconds(5))
        #expect(exit?.reason == .exit, "lbserve must exit on SIGTERM within 5 s, got \(String(describing: exit))")
        #expect(exit?.status == 0)
    }

    static let badCommandLines: [(program: String, arguments: [String], flag: String)] = [
        ("lbserve", ["--bogus"], "--bogus"),
        ("lbserve", ["--backend", "ftp://x"], "--backend"),
        ("lbserve", ["--port", "99999"], "--port"),
        ("lbserve", ["--backend", "http://127.0.0.1:9", "--strategy", "fastest"], "--strategy"),
        ("echo", ["--port", "0", "--mode", "weird"], "--mode"),
    ]

    @Test("bad command lines exit 2 with one stderr line naming the flag", arguments: ProcessEndToEndTests.badCommandLines)
    func badCommandLine(_ bad: (program: String, arguments: [String], flag: String)) async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let child = try harness.start(bad.program, bad.arguments)
        try await expectUsageFailure(child, flag: bad.flag, label: "\(bad.program) \(bad.arguments.joined(separator: " "))")
    }

    @Test("lbserve on a port already in use exits 2 with one stderr line naming --port")
    func portInUse() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let occupied = try OccupiedPort()
        let child = try harness.start("lbserve", ["--host", "127.0.0.1", "--port", String(occupied.port),
                                                  "--backend", "http://127.0.0.1:9"])
        try await expectUsageFailure(child, flag: "--port", label: "port \(occupied.port) in use")
        #expect(!child.stdout.text.contains("Router running"))
        withExtendedLifetime(occupied) {}
    }

    @Test("SIGKILL one of three echo processes: 20 POSTs all 200, lbserve logs UNHEALTHY with its URL")
    func backendKilled() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        var echos: [ChildProcess] = []
        var ports: [Int] = []
        for _ in 0..<3 {
            let (child, p) = try await harness.startEcho()
            echos.append(child)
            ports += p
        }
        let (lb, port) = try await harness.startLBServe(
            ["--host", "127.0.0.1", "--port", "0"] + ports.flatMap { ["--backend", "http://127.0.0.1:\($0)"] })
        // Warm up: every backend served once, so lbserve holds pooled connections to each.
        for _ in 0..<3 {
            #expect(try await rawRequest(port: port, method: "POST", body: demo).status == 200)
        }
        let victim = echos[1], victimURL = "http://127.0.0.1:\(ports[1])"
        victim.kill()
        #expect(!victim.isRunning)

        var statuses: [Int] = []
        var handled: [Int] = []
        for _ in 0..<20 {
            let r = try await rawRequest(port: port, method: "POST", body: demo)
            statuses.append(r.status)
            if let by = handledBy(r) { handled.append(by) }
        }
        #expect(statuses == Array(repeating: 200, count: 20), "statuses: \(statuses)")
        #expect(Set(handled) == [ports[0], ports[2]], "survivors serve everything: \(handled)")
        let line = await lb.waitForLine(containing: "UNHEALTHY", timeout: .seconds(5))
        #expect(line?.contains(victimURL) == true, "expected an UNHEALTHY line naming \(victimURL); stdout:\n\(lb.stdout.text)")
        #expect(lb.isRunning)
    }

    /// Regression: SIGTERM sent the instant the readiness line appeared used to be lost (the
    /// Dispatch signal source armed its handler asynchronously after SIG_IGN). Now the signals are
    /// blocked before any thread starts and taken by a sigwait thread.
    @Test("SIGTERM sent the instant the readiness line appears still exits 0")
    func sigtermRightAfterReadiness() async throws {
        let cases: [(program: String, arguments: [String], ready: String)] = [
            ("lbserve", ["--host", "127.0.0.1", "--port", "0", "--backend", "http://127.0.0.1:9"], "Router running on port "),
            ("echo", ["--port", "0"], "Backend running on port "),
        ]
        for c in cases {
            for attempt in 1...4 {
                let harness = ProcessHarness()
                defer { harness.killAll() }
                // The reader thread sends SIGTERM as soon as the line arrives (no polling delay).
                let child = try harness.start(c.program, c.arguments, signalOnOutput: (c.ready, SIGTERM))
                let exit = await child.waitForExit(timeout: .seconds(3))
                #expect(child.stdout.text.contains(c.ready), "\(c.program): readiness line missing")
                #expect(exit?.reason == .exit && exit?.status == 0,
                        "\(c.program) attempt \(attempt): expected exit 0 within 3 s after SIGTERM, got \(exit.map { "\($0.reason == .exit ? "exit" : "signal") \($0.status)" } ?? "still running")")
            }
        }
    }

    // MARK: Helpers

    /// Exit status 2 within 5 s, stderr exactly one line containing `flag`, no lingering process.
    private func expectUsageFailure(_ child: ChildProcess, flag: String, label: String) async throws {
        let exit = await child.waitForExit(timeout: .seconds(5))
        #expect(exit?.reason == .exit, "\(label): must exit, got \(String(describing: exit))")
        #expect(exit?.status == 2, "\(label): exit status")
        let eof = await eventually(timeout: .seconds(5)) { child.stderr.reachedEOF }
        #expect(eof)
        let err = child.stderr.text
        let lines = err.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(err.hasSuffix("\n") && lines.count == 2, "\(label): exactly one stderr line, got \(err.debugDescription)")
        #expect(err.contains(flag), "\(label): stderr must name \(flag), got \(err.debugDescription)")
    }
}
