import Foundation
import Glibc
import Synchronization

/// Where the built `lbserve` and `echo` executables live: next to the running test bundle.
enum BuiltExecutables {
    struct NotFound: Error, CustomStringConvertible {
        let searched: [String]
        var description: String {
            "cannot find the built `lbserve` and `echo` executables next to the test binary; searched: "
                + searched.joined(separator: ", ")
                + " (build them with `swift build --build-tests`)"
        }
    }

    /// The directory holding both executables, found by walking up from `/proc/self/exe`.
    static func directory() throws -> URL {
        let selfExe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: selfExe).resolvingSymlinksInPath().deletingLastPathComponent()
        var searched: [String] = []
        while true {
            searched.append(dir.path)
            let fm = FileManager.default
            if fm.isExecutableFile(atPath: dir.appendingPathComponent("lbserve").path),
               fm.isExecutableFile(atPath: dir.appendingPathComponent("echo").path) {
                return dir
            }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path || dir.path == "/" { break }
            dir = parent
        }
        throw NotFound(searched: searched)
    }

    static func url(_ name: String) throws -> URL { try directory().appendingPathComponent(name) }
}

/// Collects everything a child writes to one pipe, on a dedicated reader thread.
final class PipeCollector: Sendable {
    private let state = Mutex<(bytes: [UInt8], eof: Bool)>(([], false))

    /// Starts reading `fd` (the read end of a pipe) until EOF; the fd is closed at EOF. `trigger`
    /// runs on the reader thread, once, as soon as the output contains `trigger.text`.
    init(fd: Int32, trigger: (text: String, action: @Sendable () -> Void)? = nil) {
        let thread = Thread { [self] in
            var buf = [UInt8](repeating: 0, count: 4096)
            var pendingTrigger = trigger
            while true {
                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                let all = state.withLock { st -> [UInt8] in
                    st.bytes.append(contentsOf: buf[0..<n])
                    return pendingTrigger == nil ? [] : st.bytes
                }
                if let t = pendingTrigger, String(decoding: all, as: UTF8.self).contains(t.text) {
                    pendingTrigger = nil
                    t.action()
                }
            }
            Glibc.close(fd)
            state.withLock { $0.eof = true }
        }
        thread.start()
    }

    var text: String { String(decoding: state.withLock { $0.bytes }, as: UTF8.self) }
    var lines: [String] { text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init) }
    var reachedEOF: Bool { state.withLock { $0.eof } }
}

/// One child process (`echo` or `lbserve`) with its stdout and stderr collected.
final class ChildProcess: @unchecked Sendable {
    // Process is used from the test task and from `kill()` only; Foundation's Process is thread-safe
    // for isRunning/terminationStatus reads.
    let process: Process
    let name: String
    let stdout: PipeCollector
    let stderr: PipeCollector

    /// Launches `executable`; with `signalOnOutput`, sends that signal the instant stdout contains
    /// the text (from the reader thread, no polling delay).
    init(executable: URL, arguments: [String], environment: [String: String] = [:],
         signalOnOutput: (text: String, signal: Int32)? = nil) throws {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        process.standardInput = FileHandle.nullDevice
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Our copies of the write ends: close them so the readers see EOF when the child exits.
        try? out.fileHandleForWriting.close()
        try? err.fileHandleForWriting.close()
        self.process = process
        self.name = executable.lastPathComponent
        // The collectors own the read ends from here on (dup so FileHandle deinit cannot close ours).
        let pid = process.processIdentifier
        let trigger = signalOnOutput.map { s in (text: s.text, action: { @Sendable in _ = Glibc.kill(pid, s.signal) }) }
        stdout = PipeCollector(fd: dup(out.fileHandleForReading.fileDescriptor), trigger: trigger)
        stderr = PipeCollector(fd: dup(err.fileHandleForReading.fileDescriptor))
        try? out.fileHandleForReading.close()
        try? err.fileHandleForReading.close()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// Sends `signal` to the child (if still running).
    func send(_ signal: Int32) {
        if process.isRunning { Glibc.kill(pid, signal) }
    }

    /// Waits up to `timeout` for the child to exit; returns (reason, status) or nil if still running.
    func waitForExit(timeout: Duration = .seconds(5)) async -> (reason: Process.TerminationReason, status: Int32)? {
        let exited = await eventually(timeout: timeout) { !self.process.isRunning }
        guard exited else { return nil }
        // The exit can be seen before the last output is read from the pipes: callers read
        // stdout and stderr right after this returns.
        _ = await eventually(timeout: timeout) { self.stdout.reachedEOF && self.stderr.reachedEOF }
        return (process.terminationReason, process.terminationStatus)
    }

    /// Waits until stdout has a line containing `text`; returns it.
    func waitForLine(containing text: String, timeout: Duration = .seconds(10)) async -> String? {
        var found: String?
        _ = await eventually(timeout: timeout) {
            found = self.stdout.lines.first { $0.contains(text) }
            return found != nil || (!self.process.isRunning && self.stdout.reachedEOF)
        }
        return found ?? stdout.lines.first { $0.contains(text) }
    }

    /// Waits until stdout has `count` lines containing `text`.
    func waitForLines(containing text: String, count: Int, timeout: Duration = .seconds(10)) async -> [String] {
        var found: [String] = []
        _ = await eventually(timeout: timeout) {
            found = self.stdout.lines.filter { $0.contains(text) }
            return found.count >= count || (!self.process.isRunning && self.stdout.reachedEOF)
        }
        return found
    }

    /// SIGKILL (if running) and a bounded blocking wait for the exit; safe to call from `defer`.
    func kill() {
        guard process.isRunning else { return }
        Glibc.kill(pid, SIGKILL)
        for _ in 0..<500 where process.isRunning { usleep(10_000) }
    }
}

/// Every child a test started; `killAll()` (from `defer`) guarantees none outlives the test.
final class ProcessHarness: Sendable {
    private let children = Mutex<[ChildProcess]>([])

    /// Starts `name` (`echo` or `lbserve`) from the build directory with `arguments` (and
    /// `environment` added to this process' environment).
    func start(_ name: String, _ arguments: [String], environment: [String: String] = [:],
               signalOnOutput: (text: String, signal: Int32)? = nil) throws -> ChildProcess {
        let child = try ChildProcess(executable: try BuiltExecutables.url(name), arguments: arguments,
                                     environment: environment, signalOnOutput: signalOnOutput)
        children.withLock { $0.append(child) }
        return child
    }

    /// Starts `echo --port 0` (`ports` times) with `extra` flags and waits for its port lines.
    func startEcho(ports: Int = 1, _ extra: [String] = []) async throws -> (ChildProcess, [Int]) {
        let args = Array(repeating: ["--port", "0"], count: ports).flatMap { $0 } + extra
        let child = try start("echo", args)
        let lines = await child.waitForLines(containing: "Backend running on port ", count: ports)
        let parsed = lines.compactMap { ProcessHarness.port(in: $0, after: "Backend running on port ") }
        guard parsed.count == ports else {
            throw HarnessError("echo \(args.joined(separator: " ")) did not print \(ports) port line(s); stdout: \(child.stdout.text.debugDescription) stderr: \(child.stderr.text.debugDescription)")
        }
        return (child, parsed)
    }

    /// Starts `lbserve` with `arguments` and waits for `Router running on port N`.
    func startLBServe(_ arguments: [String]) async throws -> (ChildProcess, Int) {
        let child = try start("lbserve", arguments)
        guard let line = await child.waitForLine(containing: "Router running on port "),
              let port = ProcessHarness.port(in: line, after: "Router running on port ")
        else {
            throw HarnessError("lbserve did not print its port; stdout: \(child.stdout.text.debugDescription) stderr: \(child.stderr.text.debugDescription)")
        }
        return (child, port)
    }

    static func port(in line: String, after prefix: String) -> Int? {
        guard let r = line.range(of: prefix) else { return nil }
        return Int(line[r.upperBound...].prefix { $0.isNumber })
    }

    /// SIGKILLs every child still running (bounded wait each).
    func killAll() {
        for child in children.withLock({ $0 }) { child.kill() }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A plain listening TCP socket on 127.0.0.1 with an ephemeral port (to occupy a port).
final class OccupiedPort {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && listen(fd, 16) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else {
            let e = errno
            close(fd)
            throw HarnessError("cannot open a listener: errno \(e)")
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    deinit { close(fd) }
}
