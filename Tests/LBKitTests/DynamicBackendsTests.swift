import Foundation
import Synchronization
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// A resolver whose answers the test sets (host -> addresses, or a failure).
final class ScriptedResolver: BackendResolver {
    private let answers = Mutex<[String: [String]?]>([:])
    let calls = Atomic<Int>(0)

    /// `host` resolves to these IP literals (nil = fails).
    func answer(_ host: String, _ ips: [String]?) { answers.withLock { $0[host] = .some(ips) } }

    func resolve(host: String, port: Int) throws(BackendResolutionError) -> [IPSocketAddress] {
        calls.add(1, ordering: .relaxed)
        guard let ips = answers.withLock({ $0[host] ?? nil }) else { throw BackendResolutionError("cannot resolve \(host): no such host (scripted)") }
        return ips.compactMap { IPSocketAddress(ipLiteral: $0, port: port) }
    }
}

/// Echo backends listening on the same port on several loopback addresses (127.0.0.1, .2, ...),
/// as the pods behind one DNS name would.
struct SamePortFleet {
    let backends: [EchoBackend]
    let port: Int
    let ips: [String]

    static func start(count: Int, slowLast: Duration? = nil) async throws -> SamePortFleet {
        var lastError: (any Error)?
        for _ in 0..<10 {
            var started: [EchoBackend] = []
            do {
                let first = EchoBackend(configuration: EchoBackendConfiguration(host: "127.0.0.1", ports: [0]), group: TestLoops.group)
                started.append(first)
                guard let port = try first.start().first else { throw RawHTTPClient.Failure.closed }
                var ips = ["127.0.0.1"]
                for i in 2...max(2, count) where i <= count {
                    let slow = i == count ? slowLast : nil
                    let b = EchoBackend(configuration: EchoBackendConfiguration(host: "127.0.0.\(i)", ports: [port], mode: slow == nil ? .echo : .slow,
                                                                                delay: slow ?? .seconds(10)), group: TestLoops.group)
                    started.append(b)
                    _ = try b.start()
                    ips.append("127.0.0.\(i)")
                }
                return SamePortFleet(backends: started, port: port, ips: ips)
            } catch {
                lastError = error  // the port was taken on another address: try another one
                for b in started { await b.shutdown(timeout: .milliseconds(100)) }
            }
        }
        throw lastError ?? RawHTTPClient.Failure.closed
    }

    func url(_ i: Int) -> String { "http://\(ips[i]):\(port)" }

    func stop() async {
        for b in backends { await b.shutdown(timeout: .milliseconds(200)) }
    }
}

/// A balancer with an injected resolver behind an HTTP1Server on an ephemeral port.
struct ResolvingBalancer {
    let balancer: LoadBalancer
    let server: HTTP1Server
    let port: Int

    static func start(backends: [String], resolver: (any BackendResolver)? = nil, log: LogCapture = LogCapture(),
                      configure: (inout LoadBalancerConfiguration) -> Void = { _ in }) throws -> ResolvingBalancer {
        var config = LoadBalancerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.backends = try backends.map { try BackendURL(parsing: $0) }
        config.healthInterval = .zero
        config.hangDetection = HangDetection(factor: 0)
        // Resolution is driven by the test (refreshBackends), not by a timer.
        config.resolveInterval = .seconds(3600)
        configure(&config)
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, log: log.sink,
                                        resolver: resolver ?? SystemBackendResolver())
        let server = HTTP1Server(configuration: HTTP1ServerConfiguration(host: "127.0.0.1", port: 0), group: TestLoops.group,
                                 handler: balancer.responder(admin: true))
        let address = try server.start()
        return ResolvingBalancer(balancer: balancer, server: server, port: address.port)
    }

    func stats() async throws -> String { try await rawRequest(port: port, path: "/_lb/stats").bodyText }

    /// The `/_lb/stats` backend objects, as JSON objects.
    func statsBackends() async throws -> [[String: Any]] {
        let object = try JSONSerialization.jsonObject(with: Data(try await stats().utf8)) as? [String: Any]
        return object?["backends"] as? [[String: Any]] ?? []
    }

    func stop() async { await server.shutdown(timeout: .milliseconds(500)) }
}

@Suite("Backends that come and go: names resolve to several backends", .timeLimit(.minutes(2)))
struct DynamicBackendsTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    @Test("an injected resolver's several addresses become several backends; a new address joins in slow start")
    func expansionAndJoin() async throws {
        let fleet = try await SamePortFleet.start(count: 3)
        let resolver = ScriptedResolver()
        resolver.answer("svc.test", [fleet.ips[1], fleet.ips[0]])
        let log = LogCapture()
        let name = "http://svc.test:\(fleet.port)"
        let lb = try ResolvingBalancer.start(backends: [name], resolver: resolver, log: log) { $0.slowStart = .seconds(60) }
        var backends = try await lb.statsBackends()
        // Sorted by address, whatever order the resolver answered in; at start-up nothing warms up.
        #expect(backends.map { $0["url"] as? String } == [fleet.url(0), fleet.url(1)])
        #expect(backends.map { $0["address"] as? String } == ["127.0.0.1:\(fleet.port)", "127.0.0.2:\(fleet.port)"])
        #expect(backends.allSatisfy { $0["resolved_from"] as? String == name && $0["state"] as? String == "healthy" })
        var seen: Set<String> = []
        for _ in 0..<4 {
            let r = try await rawRequest(port: lb.port, method: "POST", body: body)
            #expect(r.status == 200)
            if let b = r.header("X-Backend") { seen.insert(b) }
        }
        #expect(seen == [fleet.url(0), fleet.url(1)])

        resolver.answer("svc.test", fleet.ips)
        await lb.balancer.refreshBackends()
        #expect(log.all.contains("[CONFIG] \(name) resolves to 3 addresses: added \(fleet.url(2))"))
        backends = try await lb.statsBackends()
        #expect(backends.count == 3)
        let joined = try #require(backends.first { $0["url"] as? String == fleet.url(2) })
        #expect(joined["state"] as? String == "warming")
        #expect((joined["share"] as? Double ?? 1) < 0.2)
        #expect(backends.filter { $0["state"] as? String == "healthy" }.count == 2)
        // The declared name lists its three addresses.
        let listing = try await rawRequest(port: lb.port, path: "/_lb/backends")
        #expect(listing.status == 200)
        #expect(listing.bodyText.contains("\"url\":\"\(name)\",\"weight\":1,\"health_path\":null,\"resolution\":{\"state\":\"resolved\",\"failures\":0,\"last_error\":null}"))
        #expect(listing.bodyText.contains("\"url\":\"\(fleet.url(2))\",\"address\":\"127.0.0.3:\(fleet.port)\",\"state\":\"warming\""))
        await lb.stop(); await fleet.stop()
    }

    @Test("a vanished address drains: visible as draining while its request is in flight, then removed")
    func vanishedAddressDrains() async throws {
        let fleet = try await SamePortFleet.start(count: 3, slowLast: .seconds(2))
        let resolver = ScriptedResolver()
        resolver.answer("svc.test", fleet.ips)
        let log = LogCapture()
        let lb = try ResolvingBalancer.start(backends: ["http://svc.test:\(fleet.port)"], resolver: resolver, log: log) {
            $0.slowStart = .zero
            $0.attemptTimeout = .seconds(5)
        }
        // Strict round robin: three concurrent requests put one on each address, one of them on
        // the slow 127.0.0.3.
        let port = lb.port, body = self.body
        let requests = (0..<3).map { _ in Task { try await rawRequest(port: port, method: "POST", body: body) } }
        let slowIndex = try #require(lb.balancer.upstreams.names.firstIndex(of: fleet.url(2)))
        #expect(await eventually { lb.balancer.upstreams.activity[slowIndex].total == 1 })

        resolver.answer("svc.test", Array(fleet.ips.prefix(2)))
        await lb.balancer.refreshBackends()
        #expect(log.all.contains { $0.contains("resolves to 2 addresses: removed (draining) \(fleet.url(2))") })
        let draining = try #require(try await lb.statsBackends().first { $0["url"] as? String == fleet.url(2) })
        #expect(draining["state"] as? String == "draining")
        #expect(draining["retiring"] as? Bool == true)
        #expect(draining["in_flight"] as? Int == 1)
        // No new request goes to it.
        for _ in 0..<4 {
            #expect(try await rawRequest(port: lb.port, method: "POST", body: body).header("X-Backend") != fleet.url(2))
        }
        // Its request finishes normally, then it leaves.
        var answeredBy: [String?] = []
        for r in requests { answeredBy.append(try await r.value.header("X-Backend")) }
        #expect(answeredBy.contains(fleet.url(2)))
        #expect(await eventually { (try? await lb.statsBackends().count) == 2 })
        #expect(log.all.contains("[CONFIG] removed \(fleet.url(2)) (drained: no requests in flight)"))
        await lb.stop(); await fleet.stop()
    }

    @Test("resolution failures keep the last known set, logged once per streak; recovery logged once")
    func failureKeepsLastSet() async throws {
        let fleet = try await SamePortFleet.start(count: 2)
        let resolver = ScriptedResolver()
        resolver.answer("svc.test", fleet.ips)
        let log = LogCapture()
        let name = "http://svc.test:\(fleet.port)"
        let lb = try ResolvingBalancer.start(backends: [name], resolver: resolver, log: log)
        resolver.answer("svc.test", nil)
        for _ in 0..<3 { await lb.balancer.refreshBackends() }
        #expect(log.count(containing: "cannot resolve \(name)") == 1)
        #expect(log.all.contains { $0.contains("keeping its last known addresses (\(fleet.url(0)), \(fleet.url(1)))") })
        #expect(try await lb.statsBackends().map { $0["url"] as? String } == [fleet.url(0), fleet.url(1)])
        for _ in 0..<2 { #expect(try await rawRequest(port: lb.port, method: "POST", body: body).status == 200) }
        let listing = try await rawRequest(port: lb.port, path: "/_lb/backends").bodyText
        #expect(listing.contains("\"resolution\":{\"state\":\"failing\",\"failures\":3,\"last_error\":\"cannot resolve svc.test: no such host (scripted)\"}"))
        resolver.answer("svc.test", fleet.ips)
        await lb.balancer.refreshBackends()
        #expect(log.count(containing: "\(name) resolves again after 3 failed resolutions") == 1)
        #expect(log.count(containing: "cannot resolve \(name)") == 1)
        await lb.stop(); await fleet.stop()
    }

    @Test("http://localhost:PORT goes through the system resolver and shows its address in stats")
    func systemResolverLocalhost() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let name = "http://localhost:\(fleet.ports[0])"
        let lb = try ResolvingBalancer.start(backends: [name])
        let backends = try await lb.statsBackends()
        #expect(backends.count == 1)
        let address = backends.first?["address"] as? String
        #expect(address == "127.0.0.1:\(fleet.ports[0])" || address == "[::1]:\(fleet.ports[0])")
        #expect(backends.first?["resolved_from"] as? String == name)
        let r = try await rawRequest(port: lb.port, method: "POST", body: body)
        #expect(r.status == 200)
        #expect(r.header("X-Backend") == "http://127.0.0.1:\(fleet.ports[0])")
        // Re-resolution through the system resolver (on a Dispatch thread) changes nothing.
        await lb.balancer.refreshBackends()
        #expect(try await lb.statsBackends().map { $0["address"] as? String } == [address])
        await lb.stop(); await fleet.stop()
    }

    @Test("lbserve --backend http://localhost:PORT: the address in /_lb/stats and /_lb/backends, the name in resolved_from")
    func lbserveLocalhost() async throws {
        let harness = ProcessHarness()
        defer { harness.killAll() }
        let (_, ports) = try await harness.startEcho()
        let name = "http://localhost:\(ports[0])"
        let (lb, port) = try await harness.startLBServe(["--host", "127.0.0.1", "--port", "0", "--backend", name,
                                                         "--health-interval-ms", "0", "--resolve-interval-ms", "100"])
        let r = try await rawRequest(port: port, method: "POST", body: body)
        #expect(r.status == 200)
        #expect(r.header("X-Backend") == "http://127.0.0.1:\(ports[0])")
        let stats = try await rawRequest(port: port, path: "/_lb/stats").bodyText
        #expect(stats.contains("\"url\":\"http://127.0.0.1:\(ports[0])\",\"address\":\"127.0.0.1:\(ports[0])\",\"resolved_from\":\"\(name)\""))
        let listing = try await rawRequest(port: port, path: "/_lb/backends").bodyText
        #expect(listing.hasPrefix("{\"resolve_interval_ms\":100,\"backends\":[{\"url\":\"\(name)\""))
        lb.send(SIGTERM)
        #expect(await lb.waitForExit(timeout: .seconds(5))?.status == 0)
    }

    @Test("run() re-resolves every resolve interval")
    func periodicResolution() async throws {
        let fleet = try await SamePortFleet.start(count: 2)
        let resolver = ScriptedResolver()
        resolver.answer("svc.test", [fleet.ips[0]])
        let lb = try ResolvingBalancer.start(backends: ["http://svc.test:\(fleet.port)"], resolver: resolver) {
            $0.resolveInterval = .milliseconds(20)
        }
        let running = Task { try await lb.balancer.run() }
        resolver.answer("svc.test", fleet.ips)
        #expect(await eventually { lb.balancer.upstreams.names == [fleet.url(0), fleet.url(1)] })
        #expect(resolver.calls.load(ordering: .relaxed) >= 2)
        lb.balancer.shutdown()
        _ = await running.result
        await lb.stop(); await fleet.stop()
    }

    @Test("with resolution off, a name that does not resolve is a configuration error; with it on, it waits")
    func unresolvableAtStart() throws {
        let resolver = ScriptedResolver()
        var config = LoadBalancerConfiguration()
        config.backends = [try BackendURL(parsing: "http://nope.test:8080")]
        config.healthInterval = .zero
        config.resolveInterval = .zero
        #expect {
            try LoadBalancer(configuration: config, group: TestLoops.group, resolver: resolver)
        } throws: { error in
            (error as? LoadBalancerError)?.message == "backend http://nope.test:8080: cannot resolve nope.test: no such host (scripted)"
        }
        config.resolveInterval = .seconds(1)
        let log = LogCapture()
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, log: log.sink, resolver: resolver)
        #expect(balancer.cluster.backends.isEmpty)
        #expect(log.all.contains { $0.contains("it has no backends until it resolves") })
    }

    @Test("--resolve-interval-ms, resolve_interval_ms and LB_RESOLVE_INTERVAL_MS set the interval; range checked")
    func resolveIntervalSetting() throws {
        #expect(LoadBalancerConfiguration().resolveInterval == .seconds(5))
        let flag = try LBServeCommandLine.load(["--backend", "http://127.0.0.1:5001", "--resolve-interval-ms", "0"])
        #expect(flag.options.balancer.resolveInterval == .zero)
        let env = try LBServeCommandLine.load(["--backend", "http://127.0.0.1:5001"], environment: ["LB_RESOLVE_INTERVAL_MS": "250"])
        #expect(env.options.balancer.resolveInterval == .milliseconds(250))
        let file = try ConfigFile.parse(Array(#"{"backends":["http://127.0.0.1:5001"],"resolve_interval_ms":1500}"#.utf8), file: "lb.json")
        #expect(file.balancer.resolveInterval == .milliseconds(1500))
        #expect(throws: CommandLineError.self) { try LBServeCommandLine.load(["--resolve-interval-ms", "-1"]) }
        #expect(throws: ConfigFileErrors.self) {
            try ConfigFile.parse(Array(#"{"resolve_interval_ms":3600001}"#.utf8), file: "lb.json")
        }
    }
}

@Suite("Run-time admin API: /_lb/backends", .timeLimit(.minutes(2)))
struct BackendsAdminTests {
    let body = Array(#"{"msg":"demo"}"#.utf8)

    func call(_ port: Int, _ method: String, _ path: String = "/_lb/backends", json: String? = nil) async throws -> RawHTTPClient.Response {
        try await rawRequest(port: port, method: method, path: path,
                             headers: json == nil ? [] : [("Content-Type", "application/json")], body: Array((json ?? "").utf8))
    }

    @Test("add, set a weight, list and remove backends; removal drains; SIGHUP-style reload replaces them")
    func addWeightListRemove() async throws {
        let fleet = try EchoFleet.start(count: 2)
        let log = LogCapture()
        let lb = try ResolvingBalancer.start(backends: [fleet.urls[0].description], log: log) {
            $0.strategy = .weighted
            $0.slowStart = .zero
        }
        let second = fleet.urls[1].description
        let added = try await call(lb.port, "POST", json: #"{"url":"\#(second)","weight":3,"health_path":"/health"}"#)
        #expect(added.status == 201)
        #expect(added.bodyText.hasPrefix("{\"url\":\"\(second)\",\"weight\":3,\"health_path\":\"/health\""))
        #expect(log.all.contains { $0.contains("[ADMIN] added \(second) through the admin API: 2 backends; added \(second)") })
        var byBackend: [String: Int] = [:]
        for _ in 0..<8 {
            if let b = try await rawRequest(port: lb.port, method: "POST", body: body).header("X-Backend") { byBackend[b, default: 0] += 1 }
        }
        #expect(byBackend[second] == 6 && byBackend[fleet.urls[0].description] == 2)

        let weighted = try await call(lb.port, "PUT", "/_lb/backends?url=\(second)", json: #"{"weight":1}"#)
        #expect(weighted.status == 200)
        #expect(weighted.bodyText.contains("\"weight\":1"))
        #expect(lb.balancer.cluster.backends.map(\.weight) == [1, 1])

        let list = try await call(lb.port, "GET")
        #expect(list.status == 200)
        let object = try JSONSerialization.jsonObject(with: Data(list.body)) as? [String: Any]
        let declared = object?["backends"] as? [[String: Any]] ?? []
        #expect(declared.map { $0["url"] as? String } == [fleet.urls[0].description, second])

        let removed = try await call(lb.port, "DELETE", "/_lb/backends?url=\(second.replacingOccurrences(of: ":", with: "%3A"))")
        #expect(removed.status == 200)
        #expect(removed.bodyText.hasPrefix("{\"url\":\"\(second)\",\"removed\":true"))
        for _ in 0..<3 {
            #expect(try await rawRequest(port: lb.port, method: "POST", body: body).header("X-Backend") == fleet.urls[0].description)
        }
        #expect(lb.balancer.upstreams.names == [fleet.urls[0].description])
        // The last backend cannot go.
        let last = try await call(lb.port, "DELETE", "/_lb/backends?url=\(fleet.urls[0])")
        #expect(last.status == 409)
        #expect(last.bodyText == #"{"error":"url: \#(fleet.urls[0]) is the last backend (add another one first)","status":409}"#)

        // A reload (lbserve: SIGHUP) puts back the file's list: run-time changes are not kept.
        _ = try await call(lb.port, "POST", json: #"{"url":"\#(second)"}"#)
        try lb.balancer.reload(backends: [fleet.urls[0]])
        #expect(try await call(lb.port, "GET").bodyText.contains(second) == false)
        await lb.stop(); await fleet.stop()
    }

    @Test("a backend added at run time joins in slow start; a name added resolves to its addresses")
    func addedBackendWarms() async throws {
        let fleet = try await SamePortFleet.start(count: 2)
        let resolver = ScriptedResolver()
        resolver.answer("svc.test", fleet.ips)
        let lb = try ResolvingBalancer.start(backends: ["http://127.0.0.1:1"], resolver: resolver) { $0.slowStart = .seconds(60) }
        let added = try await rawRequest(port: lb.port, method: "POST", path: "/_lb/backends",
                                         body: Array(#"{"url":"http://svc.test:\#(fleet.port)","weight":2}"#.utf8))
        #expect(added.status == 201)
        #expect(added.bodyText.contains("\"addresses\":[{\"url\":\"\(fleet.url(0))\",\"address\":\"127.0.0.1:\(fleet.port)\",\"state\":\"warming\",\"weight\":2"))
        let backends = try await lb.statsBackends()
        #expect(backends.map { $0["state"] as? String } == ["healthy", "warming", "warming"])
        #expect(backends.dropFirst().allSatisfy { $0["resolved_from"] as? String == "http://svc.test:\(fleet.port)" })
        await lb.stop(); await fleet.stop()
    }

    @Test("bad input: one-line JSON errors with 400, 404, 405 and 409", arguments: [
        ("POST", "/_lb/backends", #"{"url":"ftp://x"}"#, 400, "url: 'ftp://x' is not an http URL (expected http://host:port)"),
        ("POST", "/_lb/backends", #"{"url":"http://127.0.0.1:5001/path"}"#, 400, "url: 'http://127.0.0.1:5001/path': a backend URL cannot have a path or query"),
        ("POST", "/_lb/backends", #"{"weight":2}"#, 400, #"url: missing (expected {"url":"http://host:port"})"#),
        ("POST", "/_lb/backends", #"{"url":"http://127.0.0.1:5001","weight":0}"#, 400, "weight: 0 is not an integer in 1...1000"),
        ("POST", "/_lb/backends", #"{"url":"http://127.0.0.1:5001","weight":1.5}"#, 400, "weight: expected an integer in 1...1000"),
        ("POST", "/_lb/backends", #"{"url":"http://127.0.0.1:5001","health_path":"ready"}"#, 400, "health_path: 'ready' must start with /"),
        ("POST", "/_lb/backends", #"{"url":"http://127.0.0.1:5001","wieght":2}"#, 400, "wieght: unknown key (expected url, weight, health_path)"),
        ("POST", "/_lb/backends", #"{"url":"http://127.0.0.1:5001","url":"http://127.0.0.1:5002"}"#, 400, "url: appears twice"),
        ("POST", "/_lb/backends", #"["http://127.0.0.1:5001"]"#, 400, #"body: not an object at byte 0 (expected a JSON object such as {"url":"http://10.0.0.7:8080","weight":2})"#),
        ("POST", "/_lb/backends", #"{"url":"http://127.0.0.1:5001",}"#, 400, #"body: expected a string at byte 31 (expected a JSON object such as {"url":"http://10.0.0.7:8080","weight":2})"#),
        ("PUT", "/_lb/backends?url=http://127.0.0.1:1", #"{"weight":2}"#, 404, "url: no backend http://127.0.0.1:1 in the current configuration"),
        ("PUT", "/_lb/backends", #"{"weight":2}"#, 400, "url: missing query parameter (e.g. ?url=http://127.0.0.1:5001)"),
        ("DELETE", "/_lb/backends?url=http://127.0.0.1:1", "", 404, "url: no backend http://127.0.0.1:1 in the current configuration"),
        ("DELETE", "/_lb/backends?url=nope", "", 400, "url: 'nope' is not an http URL (expected http://host:port)"),
        ("PATCH", "/_lb/backends", "", 405, "PATCH not allowed on /_lb/backends"),
    ])
    func badInput(method: String, path: String, json: String, status: Int, message: String) async throws {
        let fleet = try EchoFleet.start(count: 1)
        let lb = try ResolvingBalancer.start(backends: [fleet.urls[0].description])
        let r = try await call(lb.port, method, path, json: json)
        #expect(r.status == status)
        #expect(r.bodyText == "{\"error\":\(JSON.quote(message)),\"status\":\(status)}")
        #expect(r.header("Content-Type") == "application/json")
        #expect(lb.balancer.upstreams.names == [fleet.urls[0].description])
        await lb.stop(); await fleet.stop()
    }

    @Test("conflicts: adding a declared backend twice (409); an unresolvable name with resolution off (400); an address of a name (404)")
    func conflicts() async throws {
        let fleet = try EchoFleet.start(count: 1)
        let resolver = ScriptedResolver()
        resolver.answer("svc.test", ["127.0.0.1"])
        let name = "http://svc.test:\(fleet.ports[0])"
        let lb = try ResolvingBalancer.start(backends: [name], resolver: resolver) { $0.resolveInterval = .zero }
        let twice = try await call(lb.port, "POST", json: #"{"url":"\#(name)"}"#)
        #expect(twice.status == 409)
        #expect(twice.bodyText.contains("url: \(name) is already a backend"))
        let unknown = try await call(lb.port, "POST", json: #"{"url":"http://nope.test:80"}"#)
        #expect(unknown.status == 400)
        #expect(unknown.bodyText.contains("url: cannot resolve nope.test: no such host (scripted) (resolution is off: --resolve-interval-ms 0)"))
        let address = try await call(lb.port, "DELETE", "/_lb/backends?url=http://127.0.0.1:\(fleet.ports[0])")
        #expect(address.status == 404)
        #expect(address.bodyText.contains("is an address of \(name)"))
        // Draining by the declared name drains its addresses; a retiring backend cannot be undrained.
        let drained = try await rawRequest(port: lb.port, method: "POST", path: "/_lb/backends/drain?url=\(name)")
        #expect(drained.status == 200)
        #expect(lb.balancer.cluster.snapshot().allSatisfy { $0.draining })
        await lb.stop(); await fleet.stop()
    }

    @Test("the backend API answers only admin clients or the admin token; others' requests are proxied")
    func authorisation() async throws {
        let fleet = try EchoFleet.start(count: 2)
        var config = LoadBalancerConfiguration()
        config.backends = [fleet.urls[0]]
        config.healthInterval = .zero
        config.adminToken = "s3cret-token"
        // A stall of the loaded test machine must not turn the proxied answer into a 504.
        config.attemptTimeout = .seconds(30)
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group)
        let remote = LBRequestContext(peer: try IPSocketAddress(host: "192.0.2.10", port: 40000), localPort: 8000, eventLoop: TestLoops.group.loops[0])
        var head = RequestHead(method: "POST", target: "/_lb/backends", headers: ["Host": "x", "Content-Type": "application/json"])
        let add = Array(#"{"url":"\#(fleet.urls[1])"}"#.utf8)
        let proxied = await balancer.responder(admin: true).handle(LBRequest(head: head, body: add), context: remote)
        #expect(proxied.head.headers.first(name: "X-Backend") != nil)
        #expect(balancer.upstreams.names == [fleet.urls[0].description])
        head.headers.add(name: "X-Admin-Token", value: "s3cret-token")
        let allowed = await balancer.responder(admin: true).handle(LBRequest(head: head, body: add), context: remote)
        #expect(allowed.status == 201)
        #expect(balancer.upstreams.names == [fleet.urls[0].description, fleet.urls[1].description])
        await fleet.stop()
    }
}
