import Foundation
import Glibc
import Synchronization
import CLBKitShim
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting

/// Issue 14 item 4: idle keep-alive connections hold no buffers, task or socket object (they
/// are parked in their loop), read buffers are lent only while reading, closed sockets are freed
/// at once, and the upstream pools shrink after a burst. The RSS figures themselves are checked
/// by Scripts/memory-check.sh (CI stage `memory`).
@Suite("Idle connection memory", .timeLimit(.minutes(1)))
struct IdleMemoryTests {
    /// Polls `condition` every 5 ms for up to `seconds` (on a plain thread, inside `offload`).
    static func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if condition() { return true }
            usleep(5000)
        }
        return condition()
    }

    @Test("a keep-alive connection quiet for a second is parked, then its next request is answered on the same connection")
    func parkedConnectionResumes() async throws {
        try await withConformanceServer { s in
            let server = s.server, port = s.port
            let (first, parked, second, third, parkedAgain, open) = try await offload {
                () -> (RawHTTPClient.Response, Bool, RawHTTPClient.Response, RawHTTPClient.Response, Bool, Int) in
                let client = try RawHTTPClient(port: port)
                try client.send(RawHTTPClient.format(method: "GET", path: "/one"))
                let first = try client.readResponse()
                let parked = Self.waitUntil { server.parkedConnectionCount == 1 }
                // A request split over two sends: the first bytes wake it, the rest is read by its new task.
                try client.send("POST /two HTTP/1.1\r\nHost: x\r\nContent-")
                usleep(50_000)
                try client.send("Length: 5\r\n\r\nhello")
                let second = try client.readResponse()
                try client.send(RawHTTPClient.format(method: "GET", path: "/three"))
                let third = try client.readResponse()
                let parkedAgain = Self.waitUntil { server.parkedConnectionCount == 1 }
                return (first, parked, second, third, parkedAgain, server.connectionCount)
            }
            #expect(first.bodyText == "GET /one")
            #expect(parked, "the idle connection was never parked")
            #expect(second.status == 200)
            #expect(second.bodyText == "POST /two hello")
            #expect(third.bodyText == "GET /three")
            #expect(parkedAgain)
            #expect(s.calls.value == 3)
            #expect(open == 1, "a parked connection still counts as open")
        }
    }

    @Test("requests answered before a park count toward maxRequestsPerConnection")
    func servedCountSurvivesPark() async throws {
        try await withConformanceServer(configure: { $0.maxRequestsPerConnection = 2 }) { s in
            let server = s.server, port = s.port
            let (parked, second, rest) = try await offload { () -> (Bool, RawHTTPClient.Response, [UInt8]) in
                let client = try RawHTTPClient(port: port, timeoutMs: 5000)
                try client.send(RawHTTPClient.format(method: "GET", path: "/one"))
                _ = try client.readResponse()
                let parked = Self.waitUntil { server.parkedConnectionCount == 1 }
                try client.send(RawHTTPClient.format(method: "GET", path: "/two"))
                let second = try client.readResponse()
                return (parked, second, try client.readToEnd())
            }
            #expect(parked)
            #expect(second.status == 200)
            #expect(second.header("Connection")?.lowercased() == "close")
            #expect(rest.isEmpty)
        }
    }

    @Test("a parked connection is closed at its idle deadline, and one the client closes is forgotten")
    func parkedConnectionsEnd() async throws {
        try await withConformanceServer(configure: { $0.idleTimeout = .milliseconds(1500) }) { s in
            let server = s.server, port = s.port
            let (parked, rest) = try await offload { () -> (Bool, [UInt8]) in
                let client = try RawHTTPClient(port: port, timeoutMs: 8000)
                try client.send(RawHTTPClient.format(method: "GET", path: "/one"))
                _ = try client.readResponse()
                let parked = Self.waitUntil { server.parkedConnectionCount == 1 }
                return (parked, try client.readToEnd())   // throws .timeout if never closed
            }
            #expect(parked)
            #expect(rest.isEmpty, "an idle close sends nothing")
            #expect(await eventually(timeout: .seconds(5)) { server.connectionCount == 0 && server.parkedConnectionCount == 0 })

            let parkedThenClosed = try await offload { () -> Bool in
                let client = try RawHTTPClient(port: port)
                try client.send(RawHTTPClient.format(method: "GET", path: "/two"))
                _ = try client.readResponse()
                return Self.waitUntil { server.parkedConnectionCount == 1 }
                // `client` closes here, while parked.
            }
            #expect(parkedThenClosed)
            #expect(await eventually(timeout: .seconds(5)) { server.connectionCount == 0 && server.parkedConnectionCount == 0 },
                    "open \(server.connectionCount), parked \(server.parkedConnectionCount)")
        }
    }

    @Test("graceful shutdown closes parked connections at once")
    func shutdownClosesParked() async throws {
        let s = try ConformanceServer.start()
        let server = s.server, port = s.port
        async let idle = offload { () -> [UInt8] in
            let client = try RawHTTPClient(port: port, timeoutMs: 20_000)
            try client.send(RawHTTPClient.format(method: "GET", path: "/one"))
            _ = try client.readResponse()
            return try client.readToEnd()
        }
        #expect(await eventually(timeout: .seconds(10)) { server.parkedConnectionCount == 1 })
        let start = ContinuousClock.now
        await server.shutdown(timeout: .seconds(20))
        let took = ContinuousClock.now - start
        let rest = try await idle
        #expect(rest.isEmpty)
        #expect(server.connectionCount == 0)
        // Without closing parked connections, shutdown would wait its whole 20 s timeout.
        #expect(took < .seconds(10), "shutdown took \(took)")
    }

    @Test("a closed socket is freed at once, not kept by its pending deadline")
    func timerDoesNotRetainClosedSocket() async throws {
        let loop = TestLoops.group.loops[0]
        weak var weakSocket: Socket?
        let listener = try Socket.listen(on: try IPSocketAddress(host: "127.0.0.1", port: 0), loop: loop)
        defer { listener.close() }
        let address = try #require(listener.localAddress)
        do {
            // Every deadline of this socket is a minute away (the connect's too: an earlier entry
            // would let go of the socket when it fires).
            let socket = try await Socket.connect(to: address, loop: loop, deadline: lbk_monotonic_ns() + 60_000_000_000)
            weakSocket = socket
            // A read that finds nothing waits with a 60 s deadline: the loop arms a timer for it.
            let reader = Task(executorPreference: loop) { () -> SocketError? in
                var buffer = InboundBuffer(capacity: 0)
                do throws(SocketError) {
                    _ = try await socket.read(into: &buffer, deadline: lbk_monotonic_ns() + 60_000_000_000)
                    return nil
                } catch {
                    return error
                }
            }
            try await Task.sleep(for: .milliseconds(50))
            socket.close()
            #expect(await reader.value == SocketError.closed)
        }
        #expect(await eventually(timeout: .seconds(5)) { weakSocket == nil }, "the loop's timer heap still holds the closed socket")
    }

    @Test("the fd table and the timer heap give their room back once a burst of connections is gone")
    func tablesShrinkAfterBurst() throws {
        let loop = TestLoops.group.loops[0]
        var registry = SocketRegistry()
        // Socket objects with made-up fd numbers: the table never touches the fd, and a socket
        // with a generation does not close its fd in deinit.
        var sockets: [Socket] = []
        for fd in 0..<5000 {
            let socket = Socket(fd: Int32(fd), loop: loop)
            socket.setGeneration(registry.insert(socket))
            sockets.append(socket)
        }
        let grown = registry.slotCount
        #expect(grown >= 5000)
        // Everything but fds 3 and 700 closes, highest fd first and lowest first, as a burst ends.
        for socket in sockets where socket.fd != 3 && socket.fd != 700 {
            registry.remove(fd: socket.fd, generation: socket.generation)
        }
        #expect(registry.count == 2)
        #expect(registry.slotCount <= SocketRegistry.shrinkFloor, "table kept \(registry.slotCount) of \(grown) slots")
        #expect(registry.lookup(fd: 3, generation: sockets[3].generation) === sockets[3])
        #expect(registry.lookup(fd: 700, generation: sockets[700].generation) === sockets[700])
        #expect(registry.lookup(fd: 4000, generation: sockets[4000].generation) == nil)
        // It grows again for a high fd.
        let late = Socket(fd: 9000, loop: loop)
        late.setGeneration(registry.insert(late))
        #expect(registry.lookup(fd: 9000, generation: late.generation) === late)
        // A table whose highest fd stays open keeps its size (nothing to cut), and stays correct.
        registry.remove(fd: 3, generation: sockets[3].generation)
        #expect(registry.slotCount > 9000)
        #expect(registry.lookup(fd: 700, generation: sockets[700].generation) === sockets[700])

        var heap = TimerHeap()
        var rng = SystemRandomNumberGenerator()
        for i in 0..<5000 { heap.push(TimerEntry(deadline: UInt64.random(in: 0..<1_000_000, using: &rng), fd: Int32(i), generation: 1)) }
        #expect(heap.capacity >= 5000)
        var last: UInt64 = 0, ordered = true
        while let entry = heap.pop() {
            if entry.deadline < last { ordered = false }
            last = entry.deadline
        }
        #expect(ordered, "the heap popped out of order after shrinking")
        #expect(heap.capacity <= 1024, "timer heap kept room for \(heap.capacity) entries")
    }

    @Test("read buffers are lent while reading and taken back only when empty")
    func readBufferPool() {
        let pool = ReadBufferPool(limit: 2)
        var a = InboundBuffer(capacity: 0)
        #expect(a.capacity == 0)
        pool.lend(to: &a)
        #expect(a.capacity == ReadBufferPool.bufferSize)
        a.append(Array("partial".utf8))
        pool.reclaim(&a)
        #expect(a.readableCount == 7, "a buffer holding a partial message is kept")
        #expect(pool.spareCount == 0)
        a.consume(7)
        pool.reclaim(&a)
        #expect(a.capacity == 0)
        #expect(pool.spareCount == 1)
        var b = InboundBuffer(capacity: 0)
        pool.lend(to: &b)
        #expect(pool.spareCount == 0, "lending reuses the spare")
        // Grown buffers are not kept; at most `limit` spares.
        var grown = InboundBuffer(capacity: 0)
        grown.append([UInt8](repeating: 1, count: 2 * ReadBufferPool.bufferSize))
        grown.consume(grown.readableCount)
        pool.reclaim(&grown)
        #expect(pool.spareCount == 0)
        for _ in 0..<4 {
            var c = pool.take()
            pool.reclaim(&c)
            var d = pool.take()
            var e = pool.take()
            pool.reclaim(&d)
            pool.reclaim(&e)
        }
        #expect(pool.spareCount == 2)
    }

    /// `count` GET exchanges to `endpoint` at once; their statuses.
    static func exchanges(_ count: Int, client: UpstreamClient, endpoint: UpstreamEndpoint, loop: LBEventLoop) async throws -> [Int] {
        try await withThrowingTaskGroup(of: Int.self) { tasks in
            for _ in 0..<count {
                tasks.addTask {
                    let r = try await client.execute(UpstreamRequest(head: RequestHead(method: "GET", target: "/", headers: ["Host": "t"])),
                                                     to: endpoint, on: loop, timeout: .seconds(10))
                    return r.head.status
                }
            }
            var statuses: [Int] = []
            for try await status in tasks { statuses.append(status) }
            return statuses
        }
    }

    @Test("an upstream exchange waiting for its answer holds no read buffer")
    func waitingExchangesHoldNoReadBuffer() async throws {
        let fleet = try EchoFleet.start(count: 1, mode: .slow, delay: .milliseconds(150))
        let group = try LBEventLoopGroup(loopCount: 1, namePrefix: "buffer-test")
        defer { group.shutdown() }
        let loop = group.loops[0]
        let endpoint = UpstreamEndpoint(address: try IPSocketAddress(host: "127.0.0.1", port: fleet.ports[0]), group: group)
        let client = UpstreamClient()
        // Three rounds of 24 exchanges at once, three times the pool's spares: had each kept a
        // buffer through its wait (as it did), every round would create 16 more.
        for _ in 0..<3 {
            #expect(try await Self.exchanges(24, client: client, endpoint: endpoint, loop: loop) == Array(repeating: 200, count: 24))
        }
        #expect(loop.readBuffers.createdCount <= loop.readBuffers.limit,
                "created \(loop.readBuffers.createdCount) read buffers for 72 exchanges")
        endpoint.closeIdleConnections()
        await fleet.stop()
    }

    @Test("idle pooled upstream connections beyond the floor are closed once unused")
    func surplusPooledConnectionsClosed() async throws {
        let fleet = try EchoFleet.start(count: 1, mode: .slow, delay: .milliseconds(200))
        let group = TestLoops.group
        let endpoint = UpstreamEndpoint(address: try IPSocketAddress(host: "127.0.0.1", port: fleet.ports[0]), group: group)
        let client = UpstreamClient()
        let loop = group.loops[0]
        // Six requests at once need six connections; each goes back to the pool afterwards.
        #expect(try await Self.exchanges(6, client: client, endpoint: endpoint, loop: loop) == Array(repeating: 200, count: 6))
        #expect(endpoint.idleConnectionCount == 6)
        endpoint.closeSurplusIdleConnections(unusedFor: .seconds(60), keep: 2)
        #expect(endpoint.idleConnectionCount == 6, "recently used connections stay")
        endpoint.closeSurplusIdleConnections(unusedFor: .zero, keep: 2)
        #expect(endpoint.idleConnectionCount == 2)
        endpoint.closeIdleConnections()
        await fleet.stop()
    }
}
