import AsyncHTTPClient
import Dispatch
import Foundation
import LBKit
import LBKitTesting
import Logging
import NIOCore
import Synchronization
import Vapor

/// Echo backends on ephemeral loopback ports, one ``EchoBackend`` per port so each can be
/// stopped on its own.
final class EchoFleet: Sendable {
    let group: LBEventLoopGroup
    let backends: [EchoBackend]
    let ports: [Int]
    private let stopped = Mutex<Set<Int>>([])

    init(count: Int, mode: EchoMode = .echo, delay: Duration = .seconds(10)) throws {
        group = try LBEventLoopGroup(loopCount: 1, namePrefix: "echo")
        var backends: [EchoBackend] = []
        var ports: [Int] = []
        for _ in 0..<count {
            let backend = EchoBackend(configuration: EchoBackendConfiguration(host: "127.0.0.1", ports: [0], mode: mode, delay: delay),
                                      group: group)
            ports.append(contentsOf: try backend.start())
            backends.append(backend)
        }
        self.backends = backends
        self.ports = ports
    }

    var urls: [BackendURL] {
        get throws { try ports.map { try BackendURL(parsing: "http://127.0.0.1:\($0)") } }
    }

    /// Stops backend `index` (idempotent).
    func stop(_ index: Int) async {
        let first = stopped.withLock { $0.insert(index).inserted }
        if first { await backends[index].shutdown(timeout: .seconds(2)) }
    }

    /// Stops every backend and the loops.
    func shutdown() async {
        for i in backends.indices { await stop(i) }
        let group = self.group
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                group.shutdown()
                c.resume()
            }
        }
    }
}

/// A balancer configuration for tests: one loop, short timeouts, no active health checks
/// unless asked.
func testConfiguration(_ backends: [BackendURL], healthInterval: Duration = .zero) -> LoadBalancerConfiguration {
    var config = LoadBalancerConfiguration()
    config.backends = backends
    config.loopCount = 1
    config.healthInterval = healthInterval
    config.attemptTimeout = .seconds(2)
    config.connectTimeout = .milliseconds(500)
    return config
}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out: \(what)" }
}

/// Runs `body`, failing with ``TimedOut`` after `limit` (the body is then cancelled and left
/// behind): bounded even when `body` ignores cancellation.
func withTimeout<T: Sendable>(_ limit: Duration, _ what: String = "operation",
                              _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let once = ResumeOnce<T>()
    return try await withCheckedThrowingContinuation { continuation in
        once.set(continuation)
        let work = Task {
            do { once.resume(with: .success(try await body())) } catch { once.resume(with: .failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            if once.resume(with: .failure(TimedOut(what: what))) { work.cancel() }
        }
    }
}

/// Resumes a continuation at most once, from whichever side gets there first.
final class ResumeOnce<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, result: Result<T, any Error>?)>((nil, nil))

    func set(_ continuation: CheckedContinuation<T, any Error>) {
        let early = state.withLock { s -> Result<T, any Error>? in
            if let result = s.result { return result }
            s.continuation = continuation
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    /// True when this call was the first to finish.
    @discardableResult
    func resume(with result: Result<T, any Error>) -> Bool {
        let (first, continuation) = state.withLock { s -> (Bool, CheckedContinuation<T, any Error>?) in
            guard s.result == nil else { return (false, nil) }
            s.result = result
            let c = s.continuation
            s.continuation = nil
            return (true, c)
        }
        continuation?.resume(with: result)
        return first
    }
}

/// Runs `body` on a Dispatch thread (for Vapor's synchronous, `noasync` API).
func onPlainThread(_ body: @escaping @Sendable () throws -> Void) async throws {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
        DispatchQueue.global().async {
            do {
                try body()
                c.resume()
            } catch {
                c.resume(throwing: error)
            }
        }
    }
}

/// Polls `condition` every 5 ms for at most `limit`.
func eventually(_ what: String, within limit: Duration = .seconds(5), _ condition: @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + limit
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

struct HandledBy: Decodable {
    let handled_by: Int
}

func handledBy(_ body: ByteBuffer) throws -> Int {
    try JSONDecoder().decode(HandledBy.self, from: Data(body.readableBytesView)).handled_by
}

/// A Vapor application served for real on an ephemeral loopback port, booted through the async
/// lifecycle path (`asyncBoot`), with an AsyncHTTPClient to talk to it.
final class LiveApp: Sendable {
    let app: Application
    let server: HTTPServer
    let port: Int
    let client: HTTPClient

    static func start(_ configure: (Application) async throws -> Void) async throws -> LiveApp {
        let app = try await Application.make(.testing)
        app.logger.logLevel = .warning
        do {
            try await configure(app)
            try await app.asyncBoot()
            let server = app.http.server.shared
            try await app.server.start(address: .hostname("127.0.0.1", port: 0))
            guard let port = server.localAddress?.port else { throw TimedOut(what: "no local port") }
            return LiveApp(app: app, server: server, port: port)
        } catch {
            try? await app.asyncShutdown()
            throw error
        }
    }

    private init(app: Application, server: HTTPServer, port: Int) {
        self.app = app
        self.server = server
        self.port = port
        client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
    }

    /// Sends one request (bounded by 10 s) and collects the response.
    func send(_ method: NIOHTTP1.HTTPMethod = .GET, _ path: String, headers: HTTPHeaders = [:],
              body: [UInt8]? = nil) async throws -> (status: Int, headers: HTTPHeaders, body: ByteBuffer) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        request.headers = headers
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await client.execute(request, timeout: .seconds(10))
        let collected = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), response.headers, collected)
    }

    /// Vapor's order: lifecycle handlers (the balancer) first, then the HTTP server.
    func shutdown() async throws {
        try await withTimeout(.seconds(15), "live app shutdown") { [app, server, client] in
            if !app.didShutdown { try await app.asyncShutdown() }
            await server.shutdown()
            try await client.shutdown()
        }
    }
}

/// A swift-log handler that keeps what it is given.
struct CapturingLogHandler: LogHandler {
    struct Entry: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
        var source: String
    }

    final class Store: Sendable {
        let entries = Mutex<[Entry]>([])
        var all: [Entry] { entries.withLock { $0 } }
    }

    let store: Store
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: Logging.LogEvent) {
        store.entries.withLock {
            $0.append(Entry(level: event.level, message: event.message.description, metadata: event.metadata ?? [:], source: event.source))
        }
    }
}
