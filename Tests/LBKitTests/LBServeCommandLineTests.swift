import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite("lbserve command line")
struct LBServeCommandLineTests {
    @Test("flags map onto the configuration")
    func parsesFlags() throws {
        let o = try LBServeCommandLine.parse([
            "--port", "9000", "--host", "127.0.0.1", "--backend", "http://127.0.0.1:5001", "--backend=http://localhost:5002/",
            "--timeout-ms", "300", "--max-delay-ms", "200", "--max-fails", "5", "--health-interval-ms", "250",
            "--health-path", "/ready", "--rate-limit", "2.5", "--burst", "4", "--max-body-bytes", "1024",
            "--max-attempts", "2", "--retry-non-idempotent", "--strategy", "peak-ewma", "--trusted-proxy", "10.0.0.0/8",
            "--access-log", "--threads", "1", "--penalty-threshold", "0", "--penalty-factor", "8",
        ])
        let c = o.balancer
        #expect(c.port == 9000 && c.host == "127.0.0.1")
        #expect(c.backends.map(\.description) == ["http://127.0.0.1:5001", "http://localhost:5002"])
        #expect(c.attemptTimeout == .milliseconds(300) && c.maxDelay == .milliseconds(200))
        #expect(c.maxFails == 5 && c.healthInterval == .milliseconds(250) && c.healthPath == "/ready")
        #expect(c.rateLimit == 2.5 && c.burst == 4 && c.maxBodyBytes == 1024 && c.maxAttempts == 2)
        #expect(c.retryNonIdempotent && c.accessLog && c.loopCount == 1)
        #expect(c.strategy == .peakEWMA)
        #expect(c.trustedProxies.count == 1)
        #expect(c.penaltyThreshold == 0 && c.penaltyFactor == 8)
        #expect(c.effectiveRequestTimeout == .milliseconds(600))
        #expect(!o.demoBackends)
    }

    @Test("no backend and no config means the demo backends")
    func demoDefault() throws {
        let o = try LBServeCommandLine.parse([])
        #expect(o.demoBackends)
        #expect(o.balancer.port == 8000 && o.balancer.host == "0.0.0.0")
    }

    @Test("environment gives defaults, flags win")
    func environment() throws {
        let env = ["LB_RATE_LIMIT": "7", "LB_BURST": "9"]
        let fromEnv = try LBServeCommandLine.parse([], environment: env)
        #expect(fromEnv.balancer.rateLimit == 7 && fromEnv.balancer.burst == 9)
        let flagsWin = try LBServeCommandLine.parse(["--rate-limit", "3"], environment: env)
        #expect(flagsWin.balancer.rateLimit == 3 && flagsWin.balancer.burst == 9)
        #expect(throws: CommandLineError.self) { try LBServeCommandLine.parse([], environment: ["LB_BURST": "lots"]) }
    }

    @Test("bad input names the flag", arguments: [
        (["--bogus"], "--bogus"),
        (["--backend", "ftp://x"], "--backend"),
        (["--backend", "http://"], "--backend"),
        (["--backend", "http://h:99999"], "--backend"),
        (["--backend", "http://h:80/path"], "--backend"),
        (["--port", "99999"], "--port"),
        (["--port"], "--port"),
        (["--timeout-ms", "soon"], "--timeout-ms"),
        (["--strategy", "fastest"], "--strategy"),
        (["--trusted-proxy", "10.0.0.0/33"], "--trusted-proxy"),
        (["--rate-limit", "-1"], "--rate-limit"),
        (["--health-path", "health"], "--health-path"),
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

    @Test("backend URLs: IPv6, default port, normalisation")
    func backendURLs() throws {
        #expect(try BackendURL(parsing: "http://[::1]:5001").authority == "[::1]:5001")
        #expect(try BackendURL(parsing: "http://example.test").port == 80)
        #expect(try BackendURL(parsing: "HTTP://127.0.0.1:5001/").description == "http://127.0.0.1:5001")
        #expect(throws: BackendURLError.self) { try BackendURL(parsing: "https://127.0.0.1") }
        #expect(throws: BackendURLError.self) { try BackendURL(parsing: "http://user@host:1") }
    }
}
