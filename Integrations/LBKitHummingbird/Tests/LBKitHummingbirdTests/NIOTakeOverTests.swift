import Foundation
import Testing

/// An app that hands Swift concurrency's global executor to SwiftNIO
/// (`NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()`)
/// and then embeds LBKit: both global-enqueue hooks take effect. LBKit's is installed on top of
/// SwiftNIO's and passes it every job that does not come from one of LBKit's loop threads; before,
/// it was not installed at all, and a task resumed by LBKit's loop was sent to a random NIO loop.
///
/// Both hooks are process-wide and installed once, so the check runs in a process of its own
/// (`NIOTakeOverCheck`, built with the tests).
@Suite("SwiftNIO's executor take-over and LBKit's loop-thread hook together", .timeLimit(.minutes(1)))
struct NIOTakeOverTests {
    @Test("NIO's take-over, then LBKit's hook: plain tasks run on NIO's loops, tasks started on LBKit's loop stay there")
    func bothHooks() throws {
        let output = try runCheck()
        #expect(output.contains("nio=true"), "SwiftNIO's take-over installed: \(output)")
        #expect(output.contains("lbkit=true"), "LBKit's hook installed on top of it: \(output)")
        #expect(output.contains("plainTaskOnNIO=true"), "jobs from other threads still reach SwiftNIO's hook: \(output)")
        #expect(output.contains("loopTaskStays=true"), "jobs from LBKit's loop threads stay on the loop: \(output)")
    }

    /// Runs the helper next to the test binary and returns what it printed; at most 30 s.
    private func runCheck() throws -> String {
        let selfExe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: selfExe).deletingLastPathComponent()
        var helper: URL?
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("NIOTakeOverCheck")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { helper = candidate; break }
            dir = dir.deletingLastPathComponent()
        }
        let executable = try #require(helper, "NIOTakeOverCheck is built next to the test binary (swift build --build-tests)")
        let process = Process()
        process.executableURL = executable
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "NIOTakeOverCheck exited with \(process.terminationStatus): \(output)")
        return output
    }
}
