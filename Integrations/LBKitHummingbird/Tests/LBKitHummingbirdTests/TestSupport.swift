import Dispatch
import Foundation
import Hummingbird
import LBKit
import LBKitHummingbird
import LBKitTesting
import Logging
import NIOCore
import ServiceLifecycle
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every wait in these tests is bounded: past `limit` the operation is cancelled and the test fails.
struct TimedOut: Error, CustomStringConvertible {
    let what: String
    let limit: Duration
    var description: String { "\(what) did not finish within \(limit)" }
}

func withDeadline<T: Sendable>(_ limit: Duration, _ what: String,
                               _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw TimedOut(what: what, limit: limit)
        }
        return value
    }
}

/// A quiet logger for the applications under test.
let quietLogger: Logger = {
    var logger = Logger(label: "lbkit-hummingbird-tests")
    logger.logLevel = .error
    return logger
}()

/// Echo backends on ephemeral loopback ports, one `EchoBackend` per port so each can be stopped alone.
final class EchoBackends: Sendable {
    let group: LBEventLoopGroup
    let backends: [EchoBackend]
    let ports: [Int]

    init(count: Int, mode: EchoMode = .echo, delay: Duration = .seconds(10)) throws {
        group = try LBEventLoopGroup(loopCount: 1, namePrefix: "echo")
        var backends: [EchoBackend] = []
        var ports: [Int] = []
        for _ in 0..<count {
            let backend = EchoBackend(configuration: EchoBackendConfiguration(ports: [0], mode: mode, delay: delay), group: group)
            ports.append(contentsOf: try backend.start())
            backends.append(backend)
        }
        self.backends = backends
        self.ports = ports
    }

    var urls: [String] { ports.map { "http://127.0.0.1:\($0)" } }

    func stop(_ index: Int) async throws {
        let backend = backends[index]
        try await withDeadline(.seconds(5), "echo backend shutdown") { await backend.shutdown(timeout: .seconds(2)) }
    }

    func shutdown() async throws {
        for index in backends.indices { try await stop(index) }
        let group = self.group
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                group.shutdown()
                c.resume()
            }
        }
    }
}

/// A balancer configuration for `urls` with fast, test-friendly timeouts.
func testConfiguration(_ urls: [String], _ configure: (inout LoadBalancerConfiguration) -> Void = { _ in }) throws -> LoadBalancerConfiguration {
    var config = LoadBalancerConfiguration()
    config.backends = try urls.map { try BackendURL(parsing: $0) }
    config.loopCount = 1
    config.attemptTimeout = .seconds(2)
    config.connectTimeout = .milliseconds(500)
    config.healthInterval = .milliseconds(500)
    configure(&config)
    return config
}

/// Runs `app` in a `ServiceGroup` on 127.0.0.1 (ephemeral port), calls `body` with the port, then
/// shuts the group down gracefully; every step bounded.
func withRunningApp(router: Router<BalancerRequestContext>, services: [any Service] = [],
                    _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
    let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
    var app = Application(
        router: router,
        configuration: .init(address: .hostname("127.0.0.1", port: 0)),
        onServerRunning: { channel in
            portSink.yield(channel.localAddress?.port ?? 0)
            portSink.finish()
        },
        logger: quietLogger)
    app.addServices(services)
    let group = ServiceGroup(configuration: .init(services: [app], logger: quietLogger))
    let running = Task { try await group.run() }
    do {
        let port = try await withDeadline(.seconds(10), "server start") {
            var iterator = ports.makeAsyncIterator()
            return await iterator.next() ?? 0
        }
        try await body(port)
    } catch {
        await group.triggerGracefulShutdown()
        _ = try? await withDeadline(.seconds(5), "service group after failure") { try await running.value }
        running.cancel()
        throw error
    }
    await group.triggerGracefulShutdown()
    do {
        try await withDeadline(.seconds(5), "service group shutdown") { try await running.value }
    } catch {
        running.cancel()
        throw error
    }
}

/// A blocking HTTP/1.1 exchange over a plain socket bound to a chosen loopback source address, so
/// tests can be different clients (127.0.0.2, 127.0.0.3, ...) to the same server. Bounded by
/// SO_RCVTIMEO/SO_SNDTIMEO.
enum RawHTTP {
    struct Reply: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        /// Whether the server closed the connection after the response.
        var closed: Bool

        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }

        var text: String { String(decoding: body, as: UTF8.self) }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Sends `head` (request line and fields, without the blank line) and `body` from `source`.
    /// With `awaitClose` false, returns as soon as the response is complete (`closed` then only
    /// says whether the server had already closed).
    static func exchange(port: Int, from source: String = "127.0.0.1", head: String, body: [UInt8] = [],
                         awaitClose: Bool = true, timeoutSeconds: Int = 5) async throws -> Reply {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result {
                    try blockingExchange(port: port, source: source, request: Array((head + "\r\n\r\n").utf8) + body,
                                         awaitClose: awaitClose, timeoutSeconds: timeoutSeconds)
                })
            }
        }
    }

    /// `METHOD path` with Host, Connection: close and, for a body, Content-Length.
    static func request(_ method: String, _ path: String, port: Int, from source: String = "127.0.0.1",
                        headers: [(String, String)] = [], body: String? = nil) async throws -> Reply {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close"
        for (name, value) in headers { head += "\r\n\(name): \(value)" }
        if let body { head += "\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)" }
        return try await exchange(port: port, from: source, head: head, body: Array((body ?? "").utf8))
    }

    private static func blockingExchange(port: Int, source: String, request: [UInt8], awaitClose: Bool,
                                         timeoutSeconds: Int) throws -> Reply {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))

        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        guard inet_pton(AF_INET, source, &local.sin_addr) == 1 else { throw Failure(description: "bad source \(source)") }
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw Failure(description: "bind \(source): errno \(errno)") }

        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = in_port_t(UInt16(port).bigEndian)
        _ = inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure(description: "connect 127.0.0.1:\(port): errno \(errno)") }

        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, request.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: errno \(errno)") }
            sent += n
        }

        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var closed = false
        while true {
            if let reply = parse(received), reply.complete { return Reply(status: reply.status, headers: reply.headers, body: reply.body, closed: closed || (awaitClose && waitForClose(fd))) }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n > 0 {
                received.append(contentsOf: buffer[0..<n])
            } else if n == 0 {
                closed = true
                guard let reply = parse(received) else { throw Failure(description: "connection closed before a complete response") }
                return Reply(status: reply.status, headers: reply.headers, body: reply.body, closed: true)
            } else {
                throw Failure(description: "recv: errno \(errno) after \(received.count) bytes")
            }
        }
    }

    /// After a complete response: true when the server closes the connection within the timeout.
    private static func waitForClose(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }

    private static func parse(_ bytes: [UInt8]) -> (status: Int, headers: [(String, String)], body: [UInt8], complete: Bool)? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard bytes.count >= 4, let end = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<($0 + 4)]) == separator }) else {
            return nil
        }
        let lines = String(decoding: bytes[0..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { return nil }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        let body = Array(bytes[(end + 4)...])
        let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) }
        if let length {
            return (status, headers, Array(body.prefix(length)), body.count >= length)
        }
        return (status, headers, body, false)
    }
}

/// The `handled_by` port in an echo backend's JSON answer.
func handledBy(_ body: [UInt8]) -> Int? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
    return object["handled_by"] as? Int
}

func jsonObject(_ body: [UInt8]) -> [String: Any]? {
    try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
}

extension ByteBuffer {
    var bytes: [UInt8] { Array(readableBytesView) }
}
