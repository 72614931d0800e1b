import Glibc
import Hummingbird
import NIOCore
import NIOPosix
import Synchronization

// Bench only: see Package.swift. GET /block/* forwards with blocking system calls (the lower
// bound, see BlockingPool). usage: PORT=8493 [NIO_TAKEOVER=1] HummingbirdRawForward 127.0.0.1:5001 127.0.0.1:5002 ...

struct RawContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel
    init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        channel = source.channel
    }
}

/// Collects one HTTP/1.1 response with a Content-Length body (all the echo backend sends).
final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: touched only on the channel's event loop.
    typealias InboundIn = ByteBuffer
    var buffer: ByteBuffer?
    var promise: EventLoopPromise<(status: Int, body: ByteBuffer)>?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var held = buffer {
            buffer = nil   // unique again: the append below does not copy
            held.writeBuffer(&incoming)
            buffer = held
        } else {
            buffer = incoming
        }
        guard let promise, let buf = buffer else { return }
        guard let (status, body) = Self.complete(buf) else { return }
        buffer = nil
        self.promise = nil
        promise.succeed((status, body))
    }

    static let contentLength: [UInt8] = Array("content-length:".utf8)

    /// Status and body when `buf` holds a whole response with a Content-Length body, else nil.
    /// Head end and Content-Length scanned on the bytes (no strings).
    static func complete(_ buf: ByteBuffer) -> (Int, ByteBuffer)? {
        let scan: (headLength: Int, length: Int, status: Int)? = buf.withUnsafeReadableBytes { raw in
            let n = raw.count
            var i = 3
            while i < n {
                if raw[i] == 10 && raw[i - 1] == 13 && raw[i - 2] == 10 && raw[i - 3] == 13 { break }
                i += 1
            }
            guard i < n else { return nil }
            let headLength = i + 1
            var length = 0
            var j = 0
            // "\ncontent-length:" case-insensitively
            let key = Self.contentLength
            while j + key.count < headLength {
                if raw[j] == 10 {
                    var k = 0
                    while k < key.count && (raw[j + 1 + k] | 0x20) == key[k] { k += 1 }
                    if k == key.count {
                        var p = j + 1 + k
                        while raw[p] == 32 { p += 1 }
                        while raw[p] >= 48 && raw[p] <= 57 { length = length * 10 + Int(raw[p] - 48); p += 1 }
                        break
                    }
                }
                j += 1
            }
            let status = Int(raw[9] - 48) * 100 + Int(raw[10] - 48) * 10 + Int(raw[11] - 48)
            return (headLength, length, status)
        }
        guard let scan, buf.readableBytes >= scan.headLength + scan.length else { return nil }
        return (scan.status, buf.getSlice(at: buf.readerIndex + scan.headLength, length: scan.length) ?? ByteBuffer())
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise?.fail(error); promise = nil
        context.close(promise: nil)
    }
    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(ChannelError.ioOnClosedChannel); promise = nil
    }
}

/// An upstream channel and its collector. `@unchecked Sendable`: the channel is Sendable, and the
/// collector's state is read and written only on the channel's event loop (`forward` sets its
/// promise there, inline when already on the loop, else through `loop.execute`).
struct Upstream: @unchecked Sendable {
    let channel: any Channel
    let collector: ResponseCollector
}

/// Idle upstream connections per event loop and backend.
final class RawPool: Sendable {
    let backends: [(host: String, port: Int)]
    let idle = Mutex<[ObjectIdentifier: [Int: [Upstream]]]>([:])
    let cursor = Atomic<Int>(0)
    init(backends: [(String, Int)]) { self.backends = backends }

    func take(loop: any EventLoop, backend: Int) -> Upstream? {
        idle.withLock { $0[ObjectIdentifier(loop), default: [:]][backend, default: []].popLast() }
    }
    func put(_ u: Upstream, loop: any EventLoop, backend: Int) {
        idle.withLock { $0[ObjectIdentifier(loop), default: [:]][backend, default: []].append(u) }
    }
    func connect(loop: any EventLoop, backend: Int) async throws -> Upstream {
        let collector = ResponseCollector()
        let (host, port) = backends[backend]
        let channel = try await ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(collector) } }
            .connect(host: host, port: port).get()
        return Upstream(channel: channel, collector: collector)
    }

    func forward(path: String, loop: any EventLoop) async throws -> (Int, ByteBuffer) {
        let backend = cursor.add(1, ordering: .relaxed).oldValue % backends.count
        let upstream: Upstream
        if let u = take(loop: loop, backend: backend), u.channel.isActive { upstream = u } else { upstream = try await connect(loop: loop, backend: backend) }
        var head = upstream.channel.allocator.buffer(capacity: 128)
        head.writeString("GET \(path) HTTP/1.1\r\nHost: \(backends[backend].host):\(backends[backend].port)\r\n\r\n")
        let bytes = head
        let promise = loop.makePromise(of: (status: Int, body: ByteBuffer).self)
        if loop.inEventLoop {
            upstream.collector.promise = promise
            upstream.channel.writeAndFlush(bytes, promise: nil)
        } else {
            loop.execute {
                upstream.collector.promise = promise
                upstream.channel.writeAndFlush(bytes, promise: nil)
            }
        }
        let answer = try await promise.futureResult.get()
        put(upstream, loop: loop, backend: backend)
        return (answer.status, answer.body)
    }
}

/// The absolute lower bound, not a design: the handler's own thread does the exchange with blocking
/// system calls on a kept-alive socket (the backend's answer wakes that thread directly, as
/// lbserve's loop is woken), so a forwarded request costs the trivial route plus one write, one
/// read and the wait. Blocking a thread of the concurrency pool is wrong in a real server.
final class BlockingPool: Sendable {
    let backends: [(host: String, port: Int)]
    let idle = Mutex<[Int: [Int32]]>([:])
    let cursor = Atomic<Int>(0)
    init(backends: [(String, Int)]) { self.backends = backends }

    struct Failed: Error {}

    private func connect(_ backend: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failed() }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(backends[backend].port).bigEndian)
        inet_pton(AF_INET, backends[backend].host, &address.sin_addr)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw Failed() }
        return fd
    }

    func forward(path: String) throws -> (Int, ByteBuffer) {
        let backend = cursor.add(1, ordering: .relaxed).oldValue % backends.count
        let fd = try idle.withLock { $0[backend, default: []].popLast() } ?? connect(backend)
        let head = Array("GET \(path) HTTP/1.1\r\nHost: \(backends[backend].host):\(backends[backend].port)\r\n\r\n".utf8)
        guard head.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == head.count else { close(fd); throw Failed() }
        var buffer = ByteBuffer()
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { close(fd); throw Failed() }
            buffer.writeBytes(chunk[0..<n])
            if let (status, body) = ResponseCollector.complete(buffer) {
                idle.withLock { $0[backend, default: []].append(fd) }
                return (status, body)
            }
        }
    }
}

if Environment().get("NIO_TAKEOVER") == "1" {
    let ok = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    print("NIO take-over installed: \(ok)")
}
let backends: [(String, Int)] = CommandLine.arguments.dropFirst().map { arg in
    let parts = arg.split(separator: ":")
    return (String(parts[0]), Int(parts[1]) ?? 80)
}
let pool = RawPool(backends: backends)
let blocking = BlockingPool(backends: backends)
let port = Environment().get("PORT").flatMap { Int($0) } ?? 8493
let router = Router(context: RawContext.self)
router.get("/hello") { _, _ in "hello from hummingbird\n" }
router.get("/raw/**") { request, context -> Response in
    let path = String(request.uri.path.dropFirst(4))
    let (status, body) = try await pool.forward(path: path.isEmpty ? "/" : path, loop: context.channel.eventLoop)
    return Response(status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
}
router.get("/block/**") { request, _ -> Response in
    let path = String(request.uri.path.dropFirst(6))
    let (status, body) = try blocking.forward(path: path.isEmpty ? "/" : path)
    return Response(status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
}
let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
try await app.runService()
