import Foundation
import Glibc
import Testing

/// A real `redis-server` (Debian package `redis-server`) on a free loopback port, with no
/// persistence (`--save '' --appendonly no`), started and stopped by PID by the test that owns it.
final class RedisServerProcess: @unchecked Sendable {
    // @unchecked: `child` is replaced only by restart(), called by the owning test's task.
    let port: Int
    let password: String?
    private var child: ChildProcess

    /// The redis-server executable, if installed.
    static let executable: String? = {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/opt/redis/bin"] {
            let path = dir + "/redis-server"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }()

    static var isInstalled: Bool { executable != nil }

    /// The message for skipped tests, printed so a skip is visible in the log.
    static let skipMessage = "SKIPPED: redis-server not installed (apt-get install redis-server); the Redis tests did not run"

    struct StartFailure: Error, CustomStringConvertible {
        var description: String
    }

    private init(port: Int, password: String?, child: ChildProcess) {
        self.port = port
        self.password = password
        self.child = child
    }

    /// Starts a server on a free loopback port (`requirepass` when `password` is given).
    static func start(password: String? = nil) async throws -> RedisServerProcess {
        guard let executable else { throw StartFailure(description: skipMessage) }
        var lastError = ""
        for _ in 0..<5 {
            let holder = try PortHolder()
            let port = holder.port
            holder.release()
            let child = try launch(executable, port: port, password: password)
            if await child.waitForLine(containing: "Ready to accept connections", timeout: .seconds(10)) != nil {
                return RedisServerProcess(port: port, password: password, child: child)
            }
            lastError = child.stdout.text + child.stderr.text
            child.kill()
        }
        throw StartFailure(description: "redis-server did not start: \(lastError)")
    }

    private static func launch(_ executable: String, port: Int, password: String?) throws -> ChildProcess {
        var args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--daemonize", "no", "--loglevel", "notice", "--databases", "16"]
        if let password { args += ["--requirepass", password] }
        return try ChildProcess(executable: URL(fileURLWithPath: executable), arguments: args)
    }

    var url: String { password.map { "redis://:\($0)@127.0.0.1:\(port)" } ?? "redis://127.0.0.1:\(port)" }
    var pid: Int32 { child.pid }

    /// Stops the server by PID with SIGKILL and waits for the exit. (Not SIGTERM: children of
    /// the test runner inherit its blocked-signal mask, in which SIGTERM is blocked; and with no
    /// persistence a killed Redis loses nothing a clean shutdown would keep.)
    func stop() async {
        child.kill()
        _ = await child.waitForExit(timeout: .seconds(5))
    }

    /// Starts the server again on the same port (after ``stop()``).
    func restart() async throws {
        guard let executable = Self.executable else { throw StartFailure(description: Self.skipMessage) }
        for _ in 0..<50 {
            child = try Self.launch(executable, port: port, password: password)
            if await child.waitForLine(containing: "Ready to accept connections", timeout: .seconds(10)) != nil { return }
            child.kill()
            try await Task.sleep(for: .milliseconds(100))  // the port may still be held for a moment
        }
        throw StartFailure(description: "redis-server did not restart on port \(port)")
    }

    /// SIGSTOP: the server keeps its connections but answers nothing (a hung or overloaded Redis).
    func pause() { child.send(SIGSTOP) }
    /// SIGCONT after ``pause()``.
    func resume() { child.send(SIGCONT) }

    /// SIGKILL (safe from `defer`).
    func kill() {
        child.send(SIGCONT)
        child.kill()
    }
}

/// For a test that needs redis-server: true when it is installed; otherwise prints the skip
/// message (and the CI check below fails the run when CI=true).
func redisAvailable() -> Bool {
    if RedisServerProcess.isInstalled { return true }
    print(RedisServerProcess.skipMessage)
    return false
}

@Suite("Redis server availability")
struct RedisAvailabilityTests {
    @Test("CI has redis-server (tests that need it never pass silently)")
    func installedInCI() {
        if RedisServerProcess.isInstalled { return }
        print(RedisServerProcess.skipMessage)
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            Issue.record("CI=true but redis-server is not installed: .ci/run must install the Debian package redis-server")
        }
    }
}
