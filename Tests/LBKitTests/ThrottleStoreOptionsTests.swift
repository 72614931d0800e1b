import Foundation
import Glibc
import Testing
@testable import LBKit
@testable import LBKitHTTP
import LBServeSupport

@Suite("lbserve: --throttle-store, --throttle-key-prefix, --throttle-sync-ms")
struct ThrottleStoreOptionsTests {
    @Test("flags, = form, defaults")
    func flags() throws {
        let defaults = try LBServeCommandLine.load(["--rate-limit", "5"]).options.balancer
        #expect(defaults.throttleStore == nil && defaults.throttleKeyPrefix == "lbkit:" && defaults.throttleSyncInterval == .milliseconds(20))
        let c = try LBServeCommandLine.load(["--rate-limit", "5", "--throttle-store", "redis://127.0.0.1:6380/2",
                                             "--throttle-key-prefix", "shop-eu:", "--throttle-sync-ms", "50"]).options.balancer
        #expect(c.throttleStore == RedisURL(host: "127.0.0.1", port: 6380, database: 2))
        #expect(c.throttleKeyPrefix == "shop-eu:" && c.throttleSyncInterval == .milliseconds(50))
        let t = try LBServeCommandLine.load(["--rate-limit", "5", "--throttle-store-timeout-ms", "1000"]).options.balancer
        #expect(t.throttleStoreTimeout == .seconds(1) && defaults.throttleStoreTimeout == .milliseconds(250))
        let withPassword = try LBServeCommandLine.load(["--rate-limit", "5", "--throttle-store=redis://:s3cret@redis.internal"]).options.balancer
        #expect(withPassword.throttleStore == RedisURL(host: "redis.internal", port: 6379, password: "s3cret"))
    }

    @Test("a store without a rate limit is a warning (it has no effect)")
    func storeWithoutRateLimit() throws {
        let setup = try LBServeCommandLine.load(["--throttle-store", "redis://h:1"])
        #expect(LBServeCommandLine.warnings(setup).contains { $0.hasPrefix("--throttle-store has no effect without --rate-limit") })
        #expect(LBServeCommandLine.warnings(try LBServeCommandLine.load(["--throttle-store", "redis://h:1", "--rate-limit", "1"])).isEmpty)
    }

    @Test("--check-config renders the store without its password, and reads back")
    func rendered() throws {
        let options = try LBServeCommandLine.parse(["--backend", "http://127.0.0.1:5001", "--rate-limit", "3",
                                                    "--throttle-store", "redis://10.0.0.5:6380/2", "--throttle-key-prefix", "eu:",
                                                    "--throttle-sync-ms", "40", "--throttle-store-timeout-ms", "500"])
        let text = ConfigFile.render(options)
        #expect(text.contains(#""throttle_store": "redis://10.0.0.5:6380/2""#))
        let back = try ConfigFile.parse(Array(text.utf8), file: "effective.json")
        #expect(back.balancer.throttleStore == options.balancer.throttleStore)
        #expect(back.balancer.throttleKeyPrefix == "eu:" && back.balancer.throttleSyncInterval == .milliseconds(40)
                && back.balancer.throttleStoreTimeout == .milliseconds(500))
        let secret = try LBServeCommandLine.parse(["--rate-limit", "3", "--throttle-store", "redis://:hunter2@h:1"])
        #expect(!ConfigFile.render(secret).contains("hunter2"))
        #expect(ConfigFile.render(try LBServeCommandLine.parse([])).contains(#""throttle_store": null"#))
    }

    @Test("LB_THROTTLE_STORE gives the default; the flag wins")
    func environment() throws {
        #expect(LBServeCommandLine.environmentVariables.contains("LB_THROTTLE_STORE"))
        let env = ["LB_THROTTLE_STORE": "redis://10.0.0.5:7000", "LB_RATE_LIMIT": "3"]
        #expect(try LBServeCommandLine.load([], environment: env).options.balancer.throttleStore?.port == 7000)
        let flagWins = try LBServeCommandLine.load(["--throttle-store", "redis://10.0.0.6:7001"], environment: env).options.balancer
        #expect(flagWins.throttleStore?.host == "10.0.0.6")
        #expect {
            try LBServeCommandLine.load([], environment: ["LB_THROTTLE_STORE": "redis://h:0", "LB_RATE_LIMIT": "3"])
        } throws: { ($0 as? CommandLineError)?.message.hasPrefix("LB_THROTTLE_STORE: port must be 1-65535") == true }
    }

    @Test("bad values: one line naming the flag, never the password", arguments: [
        (["--rate-limit", "5", "--throttle-store", "http://h:1"], "--throttle-store: not a redis URL"),
        (["--rate-limit", "5", "--throttle-store", "rediss://h:1"], "--throttle-store: TLS"),
        (["--rate-limit", "5", "--throttle-store", "redis://:s3cret@h:99999"], "--throttle-store: port must be 1-65535"),
        (["--rate-limit", "5", "--throttle-store", "redis://:s3cret@h:1/x"], "--throttle-store: database must be"),
        (["--rate-limit", "5", "--throttle-store"], "--throttle-store: missing value"),
        (["--rate-limit", "5", "--throttle-key-prefix", ""], "--throttle-key-prefix: '' is not"),
        (["--rate-limit", "5", "--throttle-key-prefix", "a b"], "--throttle-key-prefix: 'a b' is not"),
        (["--rate-limit", "5", "--throttle-sync-ms", "0"], "--throttle-sync-ms: '0' is not an integer in 1...10000"),
    ])
    func badValues(arguments: [String], message: String) {
        #expect {
            try LBServeCommandLine.load(arguments)
        } throws: { error in
            guard let m = (error as? CommandLineError)?.message else { return false }
            return m.hasPrefix(message) && !m.contains("\n") && !m.contains("s3cret")
        }
    }

    @Test("config file keys throttle_store, throttle_key_prefix, throttle_sync_ms")
    func configFile() throws {
        let good = try ConfigFile.parse(Array(#"{"throttle_store": "redis://:pw@127.0.0.1:6379/1", "throttle_key_prefix": "x:", "throttle_sync_ms": 100}"#.utf8),
                                        file: "lb.json")
        #expect(good.balancer.throttleStore == RedisURL(host: "127.0.0.1", port: 6379, password: "pw", database: 1))
        #expect(good.balancer.throttleKeyPrefix == "x:" && good.balancer.throttleSyncInterval == .milliseconds(100))
        #expect {
            try ConfigFile.parse(Array(#"{"throttle_store": "redis://:pw@h:0", "throttle_key_prefix": "", "throttle_sync_ms": 0}"#.utf8), file: "lb.json")
        } throws: { error in
            let lines = (error as? ConfigFileErrors)?.errors.map(\.description) ?? []
            return lines.count == 3
                && lines[0].hasPrefix("lb.json: throttle_store: port must be 1-65535") && !lines[0].contains("pw@")
                && lines[1].hasPrefix("lb.json: throttle_key_prefix: '' is not")
                && lines[2].hasPrefix("lb.json: throttle_sync_ms: expected an integer in 1...10000")
        }
    }
}

@Suite("Processes: lbserve with --throttle-store", .serialized, .timeLimit(.minutes(2)))
struct ThrottleStoreProcessTests {
    @Test("a bad --throttle-store: exit 2, one line naming the flag")
    func badFlagExits2() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let child = try harness.start("lbserve", ["--host", "127.0.0.1", "--port", "0", "--backend", "http://127.0.0.1:9",
                                                  "--rate-limit", "5", "--throttle-store", "redis://:hunter2@h:0"])
        let exit = await child.waitForExit(timeout: .seconds(5))
        #expect(exit?.reason == .exit && exit?.status == 2)
        _ = await eventually(timeout: .seconds(5)) { child.stderr.reachedEOF }
        let err = child.stderr.text
        #expect(err.hasPrefix("lbserve: --throttle-store: port must be 1-65535") && err.split(separator: "\n").count == 1, "\(err)")
        #expect(!err.contains("hunter2"))
    }

    @Test("lbserve shares its throttle through redis-server: stats, metrics, log line",
          .enabled(if: redisAvailable(), "redis-server not installed"))
    func sharesThroughRedis() async throws {
        let server = try await RedisServerProcess.start(password: "pw\(UInt16.random(in: 0...9999))")
        defer { server.kill() }
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (echo, ports) = try await harness.startEcho()
        _ = echo
        let (lb, port) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0", "--backend", "http://127.0.0.1:\(ports[0])",
                                                         "--health-interval-ms", "0", "--rate-limit", "0.5", "--burst", "3",
                                                         "--throttle-store", server.url + "/4", "--throttle-key-prefix", "proc:"])
        let line = await lb.waitForLine(containing: "[THROTTLE] shared throttle store")
        #expect(line?.contains("connected") == true && line?.contains(":***@") == true, "\(line ?? "none")")
        #expect(!lb.stdout.text.contains(server.password ?? "?"))
        var statuses: [Int] = []
        for _ in 0..<5 { statuses.append(try await rawRequest(port: port, method: "POST", body: Array(#"{"a":1}"#.utf8)).status) }
        #expect(statuses == [200, 200, 200, 429, 429])
        // The admin paths are throttled too (this client is over its limit): wait for a token
        // (one every 2 s: the five requests above fit in that, however loaded the machine).
        try await Task.sleep(for: .milliseconds(2100))
        let stats = try await rawRequest(port: port, path: "/_lb/stats")
        #expect(stats.status == 200)
        let json = try JSONSerialization.jsonObject(with: Data(stats.body)) as? [String: Any]
        let store = try #require(json?["throttle_store"] as? [String: Any])
        #expect(store["kind"] as? String == "redis" && store["state"] as? String == "connected")
        #expect(store["url"] as? String == "redis://:***@127.0.0.1:\(server.port)/4")
        try await Task.sleep(for: .milliseconds(2100))   // the next token
        let metrics = try await rawRequest(port: port, path: "/_lb/metrics").bodyText
        #expect(metrics.contains("lb_throttle_store_up 1\n"))
        // The state is in database 4 under the prefix.
        let redis = RedisClient(url: try RedisURL(parsing: server.url + "/4"), group: RedisTestLoops.group)
        defer { redis.close() }
        let present = await eventually(timeout: .seconds(2)) {
            (try? await redis.send(["EXISTS", "proc:throttle:127.0.0.1"])) == .integer(1)
        }
        #expect(present)
    }
}
