import Foundation
import Glibc
import Synchronization
import Testing
@testable import LBKitHTTP
@testable import LBKitPolicy

/// A scripted RESP server on a plain blocking socket (its own thread): for every chunk it reads,
/// it writes the byte chunks `respond` returns, 1 ms apart (so a reply can arrive split anywhere).
final class FakeRESPServer: Sendable {
    let port: Int
    private let fd: Int32

    init(respond: @escaping @Sendable ([UInt8]) -> [[UInt8]]) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok, listen(fd, 16) == 0 else { throw RedisError.connectFailed("fake server: errno \(errno)") }
        self.fd = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        Thread {
            while true {
                let client = accept(fd, nil, nil)
                // The listener is closed here, by the thread that accepts on it, never by stop():
                // a number closed under a running accept() could be reused by another test's
                // socket, whose connections this thread would then steal.
                if client < 0 { close(fd); return }
                var buf = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = buf.withUnsafeMutableBytes { read(client, $0.baseAddress, $0.count) }
                    if n <= 0 { break }
                    for chunk in respond(Array(buf[0..<n])) {
                        if chunk.isEmpty { shutdown(client, Int32(SHUT_RDWR)); break }
                        _ = chunk.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        usleep(1000)
                    }
                }
                close(client)
            }
        }.start()
    }

    var url: RedisURL { RedisURL(host: "127.0.0.1", port: port) }

    /// Stops listening (new connects are refused) and wakes the accept thread, which closes the fd.
    func stop() { shutdown(fd, Int32(SHUT_RDWR)) }
}

/// Loops of the Redis tests' own (the shared test loops carry heavy streaming tests in parallel).
enum RedisTestLoops {
    static let group: LBEventLoopGroup = {
        do { return try LBEventLoopGroup(loopCount: 2, namePrefix: "redis-loop") } catch { fatalError("cannot start loops: \(error)") }
    }()
    /// One loop: every command of a client shares one connection (for ordering tests).
    static let single: LBEventLoopGroup = {
        do { return try LBEventLoopGroup(loopCount: 1, namePrefix: "redis-test") } catch { fatalError("cannot start a loop: \(error)") }
    }()
}

private func elapsedMs(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

@Suite("Redis client against a real redis-server", .serialized, .timeLimit(.minutes(2)),
       .enabled(if: redisAvailable(), "redis-server not installed"))
struct RedisClientTests {
    func client(_ server: RedisServerProcess, path: String = "", group: LBEventLoopGroup = RedisTestLoops.group,
                configure: (inout RedisClientConfiguration) -> Void = { _ in }) throws -> RedisClient {
        var config = RedisClientConfiguration()
        config.commandTimeout = .seconds(5)   // tests of timeouts set their own
        config.connectTimeout = .seconds(5)
        configure(&config)
        return RedisClient(url: try RedisURL(parsing: server.url + path), group: group, configuration: config)
    }

    @Test("PING, SET/GET, missing keys, error replies, binary values")
    func roundTrips() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let redis = try client(server)
        defer { redis.close() }
        #expect(try await redis.send(["PING"]) == .simpleString("PONG"))
        #expect(try await redis.send(["SET", "greeting", "hello", "PX", "60000"]) == .simpleString("OK"))
        #expect(try await redis.send(["GET", "greeting"]) == .bulk("hello"))
        #expect(try await redis.send(["GET", "no-such-key"]) == .bulkString(nil))
        #expect(try await redis.send(["INCRBY", "n", "41"]) == .integer(41))
        let wrong = try await redis.send(["INCR", "greeting"])
        #expect(wrong.errorMessage?.hasPrefix("ERR value is not an integer") == true)
        #expect(try await redis.send(["NOSUCHCOMMAND"]).errorMessage?.hasPrefix("ERR unknown command") == true)
        let binary: [UInt8] = Array(0...255) + [13, 10, 13, 10]
        #expect(try await redis.send(bytes: [Array("SET".utf8), Array("bin".utf8), binary]) == .simpleString("OK"))
        #expect(try await redis.send(["GET", "bin"]) == .bulkString(binary))
        _ = try await redis.send(["RPUSH", "list", "a", "b"])
        #expect(try await redis.send(["LRANGE", "list", "0", "-1"]) == .array([.bulk("a"), .bulk("b")]))
        #expect(try await redis.send(["BLPOP", "empty-list", "0.01"]) == .array(nil))
        #expect(redis.connectionsOpened >= 1 && redis.connectionsOpened <= RedisTestLoops.group.loops.count)
    }

    @Test("EVALSHA loads the script on NOSCRIPT, once, and again after SCRIPT FLUSH")
    func evalshaFallback() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let redis = try client(server)
        defer { redis.close() }
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        #expect(try await redis.evalScript(script, keys: ["counter"], arguments: ["5"]) == .integer(5))
        #expect(redis.scriptLoads == 1)
        #expect(try await redis.evalScript(script, keys: ["counter"], arguments: ["2"]) == .integer(7))
        #expect(redis.scriptLoads == 1)
        // Our SHA-1 is the server's name for the script.
        #expect(try await redis.send(["SCRIPT", "LOAD", script.source]) == .bulk(script.sha1))
        #expect(try await redis.send(["SCRIPT", "FLUSH"]) == .simpleString("OK"))
        #expect(try await redis.evalScript(script, keys: ["counter"], arguments: ["1"]) == .integer(8))
        #expect(redis.scriptLoads == 2)
        // A script error is an error reply, not a failure.
        let broken = RedisScript("return redis.call('NOSUCH')")
        #expect(try await redis.evalScript(broken, keys: [], arguments: []).errorMessage != nil)
        let unparsable = RedisScript("this is not lua")
        #expect(try await redis.evalScript(unparsable, keys: [], arguments: []).errorMessage?.contains("Error compiling script") == true)
    }

    @Test("100 commands pipelined in one write, and 100 concurrent senders sharing connections")
    func pipelining() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let redis = try client(server)
        defer { redis.close() }
        let replies = try await redis.pipeline(Array(repeating: ["INCR", "p"], count: 100))
        #expect(replies == (1...100).map { RESPValue.integer(Int64($0)) })
        let results = try await withThrowingTaskGroup(of: RESPValue.self) { group in
            for i in 0..<100 { group.addTask { try await redis.send(["ECHO", "m\(i)"]) } }
            var all: [RESPValue] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(Set(results) == Set((0..<100).map { RESPValue.bulk("m\($0)") }))
        // One pipelined connection per event loop at most: 200 commands never needed more.
        #expect(redis.connectionsOpened <= RedisTestLoops.group.loops.count)
        #expect(try await redis.send(["GET", "p"]) == .bulk("100"))
    }

    @Test("a command times out at its deadline when the server hangs; the client recovers")
    func timeout() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let redis = try client(server, group: RedisTestLoops.single)
        defer { redis.close() }
        #expect(try await redis.send(["PING"]) == .simpleString("PONG"))
        server.pause()
        let start = ContinuousClock.now
        await #expect(throws: RedisError.timedOut) { try await redis.send(["PING"], timeout: .milliseconds(200)) }
        let waited = elapsedMs(since: start)
        #expect(waited >= 190 && waited < 1500, "waited \(waited) ms")
        // A shorter deadline behind a longer one is still honoured (the reader's wait is capped).
        let long = Task { try await redis.send(["PING"], timeout: .seconds(3)) }
        try await Task.sleep(for: .milliseconds(20))
        let shortStart = ContinuousClock.now
        await #expect(throws: RedisError.timedOut) { try await redis.send(["PING"], timeout: .milliseconds(100)) }
        #expect(elapsedMs(since: shortStart) < 1500)
        // Both were on the one connection, which the timeout closed: the long one failed too.
        await #expect(throws: RedisError.self) { try await long.value }
        #expect(elapsedMs(since: shortStart) < 1500)
        server.resume()
        #expect(try await redis.send(["PING"]) == .simpleString("PONG"))
    }

    @Test("reconnects (with back-off) after the server is restarted")
    func reconnect() async throws {
        let server = try await RedisServerProcess.start()
        defer { server.kill() }
        let redis = try client(server) { $0.reconnectDelay = .milliseconds(50); $0.maxReconnectDelay = .milliseconds(400) }
        defer { redis.close() }
        #expect(try await redis.send(["SET", "k", "1"]) == .simpleString("OK"))
        await server.stop()
        // The broken connection is noticed, then connecting fails and backs off (fast failures).
        var errors: [RedisError] = []
        for _ in 0..<5 {
            let start = ContinuousClock.now
            do {
                _ = try await redis.send(["PING"])
                Issue.record("PING succeeded with the server stopped")
            } catch {
                errors.append(error)
            }
            #expect(elapsedMs(since: start) < 1100)
        }
        #expect(errors.contains { if case .unavailable = $0 { true } else { false } }, "\(errors)")
        try await server.restart()
        let back = await eventually(timeout: .seconds(5)) { (try? await redis.send(["PING"])) == .simpleString("PONG") }
        #expect(back)
        #expect(redis.connectionsOpened >= 2 && redis.connectFailures >= 1)
        // A fresh server: no persistence, the key is gone.
        #expect(try await redis.send(["GET", "k"]) == .bulkString(nil))
    }

    @Test("AUTH with the URL's password and SELECT of its database")
    func authAndSelect() async throws {
        let server = try await RedisServerProcess.start(password: "pw-\(UInt32.random(in: 0...UInt32.max))")
        defer { server.kill() }
        let db3 = try client(server, path: "/3")
        defer { db3.close() }
        #expect(try await db3.send(["SET", "where", "three"]) == .simpleString("OK"))
        let db0 = try client(server)
        defer { db0.close() }
        #expect(try await db0.send(["GET", "where"]) == .bulkString(nil))
        #expect(try await db3.send(["GET", "where"]) == .bulk("three"))
        let noPassword = RedisClient(url: RedisURL(host: "127.0.0.1", port: server.port), group: RedisTestLoops.group)
        defer { noPassword.close() }
        #expect(try await noPassword.send(["GET", "where"]).errorMessage?.hasPrefix("NOAUTH") == true)
        let wrong = RedisClient(url: try RedisURL(parsing: "redis://:nope@127.0.0.1:\(server.port)"), group: RedisTestLoops.group)
        defer { wrong.close() }
        await #expect { try await wrong.send(["PING"]) } throws: { error in
            if case RedisError.handshakeFailed(let why) = error { return why.contains("AUTH") }
            return false
        }
    }
}

@Suite("Redis client against scripted servers", .timeLimit(.minutes(1)))
struct RedisClientProtocolTests {
    @Test("a reply written one byte at a time parses like one read")
    func byteByByte() async throws {
        let reply = Array("*3\r\n$5\r\nhello\r\n:-7\r\n*2\r\n+OK\r\n$-1\r\n".utf8)
        let server = try FakeRESPServer { _ in reply.map { [$0] } }
        defer { server.stop() }
        let redis = RedisClient(url: server.url, group: RedisTestLoops.group)
        defer { redis.close() }
        let value = try await redis.send(["ANYTHING"], timeout: .seconds(5))
        #expect(value == .array([.bulk("hello"), .integer(-7), .array([.simpleString("OK"), .bulkString(nil)])]))
    }

    @Test("bad replies close the connection with a protocol error", arguments: [
        "%1\r\n+a\r\n+b\r\n", ":01\r\n", "+OK\n", "$3\r\nabcXY", "hello\r\n",
    ])
    func badReplies(text: String) async throws {
        let server = try FakeRESPServer { _ in [Array(text.utf8)] }
        defer { server.stop() }
        let redis = RedisClient(url: server.url, group: RedisTestLoops.group)
        defer { redis.close() }
        await #expect { try await redis.send(["PING"], timeout: .seconds(5)) } throws: { error in
            if case RedisError.protocolError = error { return true }
            return false
        }
    }

    @Test("an unsolicited reply and a close in mid-reply fail the commands waiting")
    func unsolicitedAndClose() async throws {
        let extra = try FakeRESPServer { _ in [Array("+OK\r\n+SURPRISE\r\n".utf8)] }
        defer { extra.stop() }
        let a = RedisClient(url: extra.url, group: RedisTestLoops.group)
        defer { a.close() }
        // The first reply is delivered; the surprise one closes the connection.
        #expect(try await a.send(["PING"], timeout: .seconds(5)) == .simpleString("OK"))
        let closed = await eventually(timeout: .seconds(2)) { !a.isConnected }
        #expect(closed)

        let cut = try FakeRESPServer { _ in [Array("$10\r\nabc".utf8), []] }
        defer { cut.stop() }
        let b = RedisClient(url: cut.url, group: RedisTestLoops.group)
        defer { b.close() }
        await #expect { try await b.send(["GET", "x"], timeout: .seconds(5)) } throws: { error in
            if case RedisError.connectionClosed(let why) = error { return why.contains("before replying") }
            return false
        }
    }

    @Test("connect refused fails fast, then backs off without connecting")
    func refused() async throws {
        let holder = try PortHolder()
        var config = RedisClientConfiguration()
        config.reconnectDelay = .seconds(5)
        let redis = RedisClient(url: RedisURL(host: "127.0.0.1", port: holder.port), group: RedisTestLoops.group, configuration: config)
        defer { redis.close() }
        await #expect { try await redis.send(["PING"]) } throws: { error in
            if case RedisError.connectFailed = error { return true }
            return false
        }
        await #expect { try await redis.send(["PING"]) } throws: { error in
            if case RedisError.unavailable = error { return true }
            return false
        }
        #expect(redis.connectFailures == 1)
        redis.close()
        await #expect(throws: RedisError.shutdown) { try await redis.send(["PING"]) }
    }
}
