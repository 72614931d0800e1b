import Foundation
import Glibc
import Synchronization
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// Event loops shared by the in-process end-to-end tests (threads are cheap but not free).
enum TestLoops {
    static let group: LBEventLoopGroup = {
        do { return try LBEventLoopGroup(loopCount: 2, namePrefix: "test-loop") } catch { fatalError("cannot start test event loops: \(error)") }
    }()
}

/// Collects log lines (e.g. `[HEALTH] ...`) for assertions.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])
    var sink: LogSink { { [self] event in lines.withLock { $0.append(event.line) } } }
    var accessSink: @Sendable (AccessLogRecord) -> Void { { [self] record in lines.withLock { $0.append(AccessLogFormat.line(record)) } } }
    var all: [String] { lines.withLock { $0 } }
    func count(containing text: String) -> Int { all.filter { $0.contains(text) }.count }
}

/// Echo backends on ephemeral ports, one ``EchoBackend`` each so a test can stop one.
struct EchoFleet {
    let backends: [EchoBackend]
    let ports: [Int]

    static func start(count: Int, mode: EchoMode = .echo, delay: Duration = .seconds(10)) throws -> EchoFleet {
        var backends: [EchoBackend] = []
        var ports: [Int] = []
        for _ in 0..<count {
            let b = EchoBackend(configuration: EchoBackendConfiguration(host: "127.0.0.1", ports: [0], mode: mode, delay: delay),
                                group: TestLoops.group)
            ports.append(contentsOf: try b.start())
            backends.append(b)
        }
        return EchoFleet(backends: backends, ports: ports)
    }

    var urls: [BackendURL] { ports.compactMap { try? BackendURL(parsing: "http://127.0.0.1:\($0)") } }

    func stop() async {
        for b in backends { await b.shutdown(timeout: .milliseconds(200)) }
    }
}

/// An in-process balancer (``LoadBalancer`` behind an ``HTTP1Server``) on an ephemeral port.
struct TestBalancer {
    let balancer: LoadBalancer
    let server: HTTP1Server
    let port: Int
    let healthTask: Task<Void, Never>

    static func start(backends: [BackendURL], log: LogCapture = LogCapture(),
                      clock: any MonotonicClock = SystemClock(),
                      configure: (inout LoadBalancerConfiguration) -> Void = { _ in }) throws -> TestBalancer {
        var config = LoadBalancerConfiguration()
        config.host = "127.0.0.1"
        config.port = 0
        config.backends = backends
        config.healthInterval = .zero
        // In-process backends share their threads with the whole parallel suite, so a stall of
        // tens of milliseconds is the test machine, not the backend: hang detection is off here
        // unless a test turns it on (HangDetectionTests and Scripts/fault-scenario.sh cover it).
        config.hangDetection = HangDetection(factor: 0)
        configure(&config)
        let balancer = try LoadBalancer(configuration: config, group: TestLoops.group, clock: clock, log: log.sink)
        var serverConfig = HTTP1ServerConfiguration(host: "127.0.0.1", port: 0)
        serverConfig.maxBodyBytes = config.maxBodyBytes
        let server = HTTP1Server(configuration: serverConfig, group: TestLoops.group, handler: balancer.responder(admin: true))
        let address = try server.start()
        let health = Task { await balancer.runHealthChecks() }
        return TestBalancer(balancer: balancer, server: server, port: address.port, healthTask: health)
    }

    func stop() async {
        healthTask.cancel()
        await server.shutdown(timeout: .milliseconds(500))
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(5), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let clock = ContinuousClock()
    let end = clock.now + timeout
    while clock.now < end {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}

/// Runs a blocking raw-socket request off the cooperative pool.
func rawRequest(port: Int, method: String = "GET", path: String = "/", headers: [(String, String)] = [],
                body: [UInt8] = [], timeoutMs: Int = 5000, source: String? = nil) async throws -> RawHTTPClient.Response {
    try await offload {
        try RawHTTPClient.request(port: port, method: method, path: path, headers: headers, body: body, timeoutMs: timeoutMs, source: source)
    }
}

/// Runs blocking test I/O on a dedicated thread so it never starves the Swift cooperative pool.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// The `handled_by` port in an echo JSON response.
func handledBy(_ response: RawHTTPClient.Response) -> Int? {
    let text = response.bodyText
    guard let r = text.range(of: "\"handled_by\":") else { return nil }
    return Int(text[r.upperBound...].prefix { $0.isNumber })
}

/// Runs `promtool check metrics` on `metrics` (exposition text) off the cooperative pool:
/// its exit status and what it printed.
func promtoolCheckMetrics(_ metrics: [UInt8]) async throws -> (Int32, String) {
    try await offload { () -> (Int32, String) in
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/promtool")
        p.arguments = ["check", "metrics"]
        let input = Pipe(), out = Pipe()
        p.standardInput = input
        p.standardOutput = out
        p.standardError = out
        try p.run()
        input.fileHandleForWriting.write(Data(metrics))
        try input.fileHandleForWriting.close()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }
}

extension BackendURL {
    /// `http://127.0.0.1:<port>`, for tests that need a backend address nothing listens on.
    static func loopback(_ port: Int) throws -> BackendURL { try BackendURL(parsing: "http://127.0.0.1:\(port)") }
}
