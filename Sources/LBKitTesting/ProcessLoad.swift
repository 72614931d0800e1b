import Glibc
import LBKit
import Synchronization

/// The load of this process as an ``EchoBackend`` reports it on its health path: CPU time used
/// since the previous reading, as a share of the machine's cores, and resident memory as a share
/// of physical memory. Linux only (`getrusage`, `/proc/self/statm`).
///
/// ```swift
/// let (cpu, memory) = ProcessLoad.shared.read()   // e.g. (0.013, 0.004)
/// ```
public final class ProcessLoad: Sendable {
    /// One meter for the process (every echo port reports the same process).
    public static let shared = ProcessLoad()

    private struct Sample {
        var cpuNanoseconds: Int64
        var wallNanoseconds: Int64
        var cpu: Double
    }

    private let last: Mutex<Sample?> = Mutex(nil)

    private init() {}

    /// The current CPU and memory fractions. CPU covers the time since the previous reading (at
    /// least 100 ms of it: readings closer together repeat the last figure); the first reading
    /// covers the process's whole life.
    public func read() -> (cpu: Double, memory: Double) {
        let cpuNow = Self.processCPUNanoseconds()
        let wallNow = Self.monotonicNanoseconds()
        let cores = Double(max(1, LBEventLoopGroup.coreCount))
        let cpu = last.withLock { sample -> Double in
            guard let previous = sample else {
                let started = Self.processStartWallNanoseconds(now: wallNow)
                let figure = wallNow > started ? Double(cpuNow) / Double(wallNow - started) / cores : 0
                sample = Sample(cpuNanoseconds: cpuNow, wallNanoseconds: wallNow, cpu: min(max(figure, 0), 1))
                return sample?.cpu ?? 0
            }
            let wall = wallNow - previous.wallNanoseconds
            guard wall >= 100_000_000 else { return previous.cpu }
            let figure = min(max(Double(cpuNow - previous.cpuNanoseconds) / Double(wall) / cores, 0), 1)
            sample = Sample(cpuNanoseconds: cpuNow, wallNanoseconds: wallNow, cpu: figure)
            return figure
        }
        return (cpu, Self.memoryFraction())
    }

    private static func processCPUNanoseconds() -> Int64 {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        func ns(_ t: timeval) -> Int64 { Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_usec) * 1_000 }
        return ns(usage.ru_utime) + ns(usage.ru_stime)
    }

    private static func monotonicNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// When the process started, on the monotonic clock: now minus its age from `/proc/self/stat`
    /// (field 22, clock ticks since boot) and the system uptime. Falls back to `now - 1 s`.
    private static func processStartWallNanoseconds(now: Int64) -> Int64 {
        guard let stat = readSmallFile("/proc/self/stat"), let uptime = readSmallFile("/proc/uptime"),
              let close = stat.lastIndex(of: ")") else { return now - 1_000_000_000 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After "pid (comm)", field 3 is at index 0, so field 22 (starttime) is at index 19.
        guard fields.count > 19, let ticks = Double(fields[19]), let up = Double(uptime.split(separator: " ").first ?? "") else {
            return now - 1_000_000_000
        }
        let hz = Double(max(sysconf(Int32(_SC_CLK_TCK)), 1))
        let age = max(up - ticks / hz, 0.001)
        return now - Int64(age * 1e9)
    }

    private static func memoryFraction() -> Double {
        guard let statm = readSmallFile("/proc/self/statm") else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let residentPages = Double(fields[1]) else { return 0 }
        let physicalPages = Double(sysconf(Int32(_SC_PHYS_PAGES)))
        guard physicalPages > 0 else { return 0 }
        return min(max(residentPages / physicalPages, 0), 1)
    }

    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n], as: UTF8.self).trimmingNewline
    }
}

extension String {
    fileprivate var trimmingNewline: String {
        var s = self
        while s.last == "\n" { s.removeLast() }
        return s
    }
}

/// What an echo port reports on its health path in place of its measured load, set at run time
/// with `POST /_echo/load?cpu=0.95&memory=0.2&agent=drain&weight=50` (tests use it to make a
/// backend look overloaded). `POST /_echo/load` with no parameter goes back to the measured load.
public struct EchoLoadOverride: Sendable, Equatable {
    /// Reported CPU fraction (nil: measured).
    public var cpu: Double?
    /// Reported memory fraction (nil: measured).
    public var memory: Double?
    /// Words for the `X-LB-Agent` header (`drain`, `down`, `ready`, `weight:50%`), if any.
    public var agentWords: [String] = []

    /// No override.
    public init() {}
}
