import LBKit
import Synchronization

/// How an ``EchoBackend`` behaves: the failure modes the balancer is tested against.
public enum EchoMode: String, Sendable, CaseIterable {
    /// Answers every request.
    case echo
    /// Request 1 succeeds, request 2 gets 500 `{"error":"App failure"}`, 3 succeeds, ... (per port;
    /// `GET /health` always succeeds and is not counted).
    case alternate
    /// Every response, health checks included, is delayed by the configured delay.
    case slow
    /// Every request, health checks included, gets 503 `{"error":"Backend down"}`.
    case down
}

/// Settings of an ``EchoBackend``.
public struct EchoBackendConfiguration: Sendable {
    /// Address to bind.
    public var host: String
    /// Ports to listen on (0 picks a free port), one server per port.
    public var ports: [Int]
    /// Behaviour.
    public var mode: EchoMode
    /// Delay applied to every response in ``EchoMode/slow`` (and to any mode after
    /// `POST /_echo/delay?ms=N`).
    public var delay: Duration
    /// Largest request body the backend accepts (bodies past 1 MiB arrive streamed; `/_echo/sink`
    /// counts them without holding them).
    public var maxBodyBytes = 8 * 1024 * 1024

    /// Creates a configuration.
    public init(host: String = "127.0.0.1", ports: [Int], mode: EchoMode = .echo, delay: Duration = .seconds(10)) {
        self.host = host
        self.ports = ports
        self.mode = mode
        self.delay = delay
    }
}

/// The test backend that ships with LBKit: a JSON echo server with failure modes, usable in an
/// embedder's own tests.
///
/// - `POST`/`PUT`/`PATCH` with a JSON object -> 200, the object plus `"handled_by": <port>`,
///   header `X-Handled-By: <port>`; a body that is not a JSON object -> 400.
/// - `GET /health` -> 200 `{"status":"ok"}` (the body the contract fixes), with the process's own
///   load (``ProcessLoad``) in an `X-LB-Agent: cpu:F memory:F` header; other `GET`s -> 200
///   `{"handled_by": <port>}`.
/// - `POST /_echo/delay?ms=N` changes the port's delay at run time (refused through a proxy:
///   requests carrying `X-Forwarded-For` get 403); `&health=fast` exempts `GET /health` from it
///   (a backend slow on its real routes and fast on its health path), `&health=delayed` undoes that.
/// - `POST /_echo/load?cpu=F&memory=F` (and `agent=drain|down|ready`, `weight=N`) sets the load its
///   health answer reports (refused through a proxy too).
///
/// ```swift
/// let backend = EchoBackend(configuration: .init(ports: [0, 0], mode: .alternate), group: group)
/// let ports = try backend.start()      // e.g. [41233, 41234]
/// // ...
/// await backend.shutdown()
/// ```
public final class EchoBackend: Sendable {
    /// The configuration.
    public let configuration: EchoBackendConfiguration
    private let group: LBEventLoopGroup
    private let servers = Mutex<[HTTP1Server]>([])

    /// Creates a backend; ``start()`` binds its ports.
    public init(configuration: EchoBackendConfiguration, group: LBEventLoopGroup) {
        self.configuration = configuration
        self.group = group
    }

    /// Binds every port and starts serving; returns the bound ports in order.
    @discardableResult
    public func start() throws(HTTPServerError) -> [Int] {
        var bound: [Int] = []
        for port in configuration.ports {
            let handler = EchoHandler(mode: configuration.mode, delay: configuration.delay)
            var serverConfiguration = HTTP1ServerConfiguration(host: configuration.host, port: port)
            serverConfiguration.maxBodyBytes = configuration.maxBodyBytes
            handler.maxBodyBytes = configuration.maxBodyBytes
            let server = HTTP1Server(configuration: serverConfiguration, group: group, handler: handler)
            let address = try server.start()
            handler.setPort(address.port)
            servers.withLock { $0.append(server) }
            bound.append(address.port)
        }
        return bound
    }

    /// Stops every port gracefully.
    public func shutdown(timeout: Duration = .seconds(5)) async {
        for server in servers.withLock({ $0 }) { await server.shutdown(timeout: timeout) }
    }
}

/// The request handler behind one echo port.
public final class EchoHandler: HTTPHandler {
    /// The behaviour.
    public let mode: EchoMode
    private let port = Atomic<Int>(0)
    private let delayNanoseconds: Atomic<Int64>
    private let counter = Atomic<Int>(0)
    /// `GET /health` answers without the delay (`/_echo/delay?...&health=fast`).
    private let fastHealth = Atomic<Bool>(false)
    private let bodyLimit = Atomic<Int>(8 * 1024 * 1024)
    private let loadOverride = Mutex(EchoLoadOverride())

    /// Largest JSON body collected for echoing.
    public var maxBodyBytes: Int {
        get { bodyLimit.load(ordering: .relaxed) }
        set { bodyLimit.store(newValue, ordering: .relaxed) }
    }

    /// Creates a handler; in ``EchoMode/slow`` every response waits `delay`.
    public init(mode: EchoMode, delay: Duration) {
        self.mode = mode
        delayNanoseconds = Atomic(mode == .slow ? max(0, delay.nanosecondsClamped) : 0)
    }

    /// Sets the port reported in `handled_by`.
    public func setPort(_ value: Int) { port.store(value, ordering: .relaxed) }

    /// The current response delay.
    public var delay: Duration { .nanoseconds(delayNanoseconds.load(ordering: .relaxed)) }

    /// Handles one request as described on ``EchoBackend``.
    public func handle(_ request: LBRequest, context: LBRequestContext) async -> LBResponse {
        let port = self.port.load(ordering: .relaxed)
        let portHeader: HeaderFields = ["X-Handled-By": String(port)]
        let path = request.head.path

        if path == "/_echo/delay" {
            return setDelay(request, portHeader: portHeader)
        }
        if path == "/_echo/load" { return setLoad(request, portHeader: portHeader) }
        if path == "/_echo/sink" { return await sink(request, portHeader: portHeader) }
        if path == "/_echo/bytes" { return bytes(request, portHeader: portHeader) }
        if path == "/_echo/stream" { return stream(request, portHeader: portHeader) }
        let wait = delayNanoseconds.load(ordering: .relaxed)
        let isHealth = request.method == "GET" && path == "/health"
        if wait > 0 && !(isHealth && fastHealth.load(ordering: .relaxed)) { try? await Task.sleep(for: .nanoseconds(wait)) }
        if mode == .down {
            return .jsonError(status: 503, message: "Backend down", headers: portHeader)
        }
        if isHealth { return health(portHeader: portHeader) }
        if mode == .alternate {
            let n = counter.add(1, ordering: .relaxed).newValue
            if n % 2 == 0 {
                return .json(status: 500, #"{"error":"App failure"}"#, headers: portHeader)
            }
        }
        switch request.method {
        case "POST", "PUT", "PATCH":
            let body: [UInt8]
            do {
                body = try await request.collectBody(upTo: maxBodyBytes)
            } catch {
                return .jsonError(status: 413, message: "\(error)", headers: portHeader)
            }
            guard JSONValidator.isObject(body) else {
                return .jsonError(status: 400, message: "body must be a JSON object", headers: portHeader)
            }
            return LBResponse(status: 200, headers: jsonHeaders(portHeader), body: Self.addHandledBy(body, port: port))
        case "HEAD":
            // The GET answer's fields, its Content-Length included, and no body (RFC 9110 9.3.2).
            var headers = jsonHeaders(portHeader)
            headers.add(name: "Content-Length", value: String("{\"handled_by\":\(port)}".utf8.count))
            return LBResponse(status: 200, headers: headers)
        default:
            return .json(status: 200, "{\"handled_by\":\(port)}", headers: portHeader)
        }
    }

    /// `POST /_echo/sink`: reads the body (whole or streamed) and answers how many bytes came,
    /// holding at most one part in memory.
    private func sink(_ request: LBRequest, portHeader: HeaderFields) async -> LBResponse {
        var count = request.body.count
        if let stream = request.bodyStream {
            do {
                while let chunk = try await stream.next() { count += chunk.count }
            } catch {
                return .jsonError(status: 400, message: "\(error)", headers: portHeader)
            }
        }
        return .json(status: 200, "{\"bytes\":\(count),\"handled_by\":\(port.load(ordering: .relaxed))}", headers: portHeader)
    }

    /// `GET /_echo/bytes?n=N`: a body of N bytes (`a`), streamed with its Content-Length.
    private func bytes(_ request: LBRequest, portHeader: HeaderFields) -> LBResponse {
        let total = Self.queryInt(request, "n") ?? 0
        guard total >= 0 else { return .jsonError(status: 400, message: "n must be >= 0", headers: portHeader) }
        let sent = Atomic<Int>(0)
        let part = [UInt8](repeating: UInt8(ascii: "a"), count: 64 * 1024)
        var headers = portHeader
        headers.add(name: "Content-Type", value: "application/octet-stream")
        return LBResponse(head: ResponseHead(status: 200, headers: headers), bodyStream: LBBodyStream(length: total) {
            let done = sent.load(ordering: .relaxed)
            if done >= total { return nil }
            let n = min(part.count, total - done)
            sent.store(done + n, ordering: .relaxed)
            return n == part.count ? part : Array(part[..<n])
        })
    }

    /// `GET /_echo/stream?chunks=K&interval_ms=M`: server-sent events, one `data: i` event every
    /// M ms, K in all, with no length (so chunked): a streaming test source.
    private func stream(_ request: LBRequest, portHeader: HeaderFields) -> LBResponse {
        let chunks = max(0, min(Self.queryInt(request, "chunks") ?? 3, 100_000))
        let interval = max(0, min(Self.queryInt(request, "interval_ms") ?? 100, 60_000))
        let next = Atomic<Int>(0)
        var headers = portHeader
        headers.add(name: "Content-Type", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-cache")
        return LBResponse(head: ResponseHead(status: 200, headers: headers), bodyStream: LBBodyStream(length: nil) {
            let i = next.add(1, ordering: .relaxed).oldValue
            if i >= chunks { return nil }
            if i > 0 { try await Task.sleep(for: .milliseconds(interval)) }
            return Array("data: \(i)\n\n".utf8)
        })
    }

    private static func queryInt(_ request: LBRequest, _ name: String) -> Int? {
        for pair in (request.head.query ?? "").split(separator: "&") where pair.hasPrefix(name + "=") {
            return Int(pair.dropFirst(name.count + 1))
        }
        return nil
    }

    private func jsonHeaders(_ base: HeaderFields) -> HeaderFields {
        var h = base
        h.add(name: "Content-Type", value: "application/json")
        return h
    }

    private func setDelay(_ request: LBRequest, portHeader: HeaderFields) -> LBResponse {
        guard request.method == "POST" else {
            return .jsonError(status: 405, message: "use POST /_echo/delay?ms=N", headers: portHeader)
        }
        guard !request.headers.contains(name: "X-Forwarded-For") else {
            return .jsonError(status: 403, message: "/_echo/delay is only reachable on the backend's own port", headers: portHeader)
        }
        var ms: Int?
        for pair in (request.head.query ?? "").split(separator: "&") where pair.hasPrefix("ms=") {
            ms = Int(pair.dropFirst(3))
        }
        guard let ms, ms >= 0, ms <= 3_600_000 else {
            return .jsonError(status: 400, message: "ms must be an integer between 0 and 3600000", headers: portHeader)
        }
        var healthFast: Bool?
        for pair in (request.head.query ?? "").split(separator: "&") where pair.hasPrefix("health=") {
            switch pair.dropFirst(7) {
            case "fast": healthFast = true
            case "delayed": healthFast = false
            default: return .jsonError(status: 400, message: "health must be fast or delayed", headers: portHeader)
            }
        }
        if let healthFast { fastHealth.store(healthFast, ordering: .relaxed) }
        delayNanoseconds.store(Int64(ms) * 1_000_000, ordering: .relaxed)
        let health = fastHealth.load(ordering: .relaxed) ? "fast" : "delayed"
        return .json(status: 200, "{\"delay_ms\":\(ms),\"health\":\"\(health)\",\"port\":\(port.load(ordering: .relaxed))}",
                     headers: portHeader)
    }

    /// The load this port reports now: the override where set, else the process's measurement.
    public var reportedLoad: (cpu: Double, memory: Double, agentWords: [String]) {
        let o = loadOverride.withLock { $0 }
        let measured = (o.cpu != nil && o.memory != nil) ? (cpu: 0.0, memory: 0.0) : ProcessLoad.shared.read()
        return (o.cpu ?? measured.cpu, o.memory ?? measured.memory, o.agentWords)
    }

    /// `GET /health`: `{"status":"ok"}` and `X-LB-Agent: cpu:0.0130 memory:0.0040` (plus any
    /// agent words set). The load rides in the header so the body stays the contract's exact
    /// `{"status":"ok"}` for clients that compare it.
    private func health(portHeader: HeaderFields) -> LBResponse {
        let load = reportedLoad
        var headers = portHeader
        let words = ["cpu:\(Self.decimal(load.cpu))", "memory:\(Self.decimal(load.memory))"] + load.agentWords
        headers.add(name: BackendLoadReport.agentHeaderName, value: words.joined(separator: " "))
        return .json(status: 200, #"{"status":"ok"}"#, headers: headers)
    }

    /// `0.0123` with at most four decimals (JSON number).
    static func decimal(_ value: Double) -> String {
        let tenThousandths = Int64((min(max(value, 0), 1000) * 10_000).rounded())
        let fraction = String(tenThousandths % 10_000)
        return "\(tenThousandths / 10_000)." + String(repeating: "0", count: 4 - fraction.count) + fraction
    }

    /// `POST /_echo/load?cpu=0.95&memory=0.2&agent=drain&weight=50`: what the health answer reports
    /// from now on (parameters left out keep the measured value; no parameter at all clears every
    /// override). Refused through a proxy, like `/_echo/delay`.
    private func setLoad(_ request: LBRequest, portHeader: HeaderFields) -> LBResponse {
        guard request.method == "POST" else {
            return .jsonError(status: 405, message: "use POST /_echo/load?cpu=F&memory=F", headers: portHeader)
        }
        guard !request.headers.contains(name: "X-Forwarded-For") else {
            return .jsonError(status: 403, message: "/_echo/load is only reachable on the backend's own port", headers: portHeader)
        }
        var next = EchoLoadOverride()
        for pair in (request.head.query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            let name = parts.first.map(String.init) ?? ""
            let value = parts.count == 2 ? String(parts[1]) : ""
            switch name {
            case "cpu", "memory":
                guard value.utf8.allSatisfy({ (48...57).contains($0) || $0 == UInt8(ascii: ".") }), let d = Double(value), d >= 0, d <= 1 else {
                    return .jsonError(status: 400, message: "\(name) must be a fraction from 0 to 1", headers: portHeader)
                }
                if name == "cpu" { next.cpu = d } else { next.memory = d }
            case "agent":
                guard ["ready", "drain", "down", "up"].contains(value) else {
                    return .jsonError(status: 400, message: "agent must be one of ready, drain, down, up", headers: portHeader)
                }
                next.agentWords.append(value)
            case "weight":
                guard let n = Int(value), (0...100).contains(n) else {
                    return .jsonError(status: 400, message: "weight must be an integer percentage from 0 to 100", headers: portHeader)
                }
                next.agentWords.append("weight:\(n)%")
            default:
                return .jsonError(status: 400, message: "unknown parameter '\(name)' (cpu, memory, agent, weight)", headers: portHeader)
            }
        }
        loadOverride.withLock { $0 = next }
        let load = reportedLoad
        return .json(status: 200, "{\"cpu\":\(Self.decimal(load.cpu)),\"memory\":\(Self.decimal(load.memory)),\"agent\":\(JSON.quote(load.agentWords.joined(separator: " "))),\"port\":\(port.load(ordering: .relaxed))}",
                     headers: portHeader)
    }

    /// `{"msg":"demo"}` -> `{"msg":"demo","handled_by":5001}`. `object` must be a valid JSON object.
    static func addHandledBy(_ object: [UInt8], port: Int) -> [UInt8] {
        guard let close = object.lastIndex(of: UInt8(ascii: "}")) else { return object }
        var out = Array(object[..<close])
        while let last = out.last, last == 0x20 || last == 0x09 || last == 0x0A || last == 0x0D { out.removeLast() }
        let isEmpty = out.last == UInt8(ascii: "{")
        out.append(contentsOf: Array((isEmpty ? "" : ",").utf8))
        out.append(contentsOf: Array("\"handled_by\":\(port)}".utf8))
        return out
    }
}
