import Glibc
import Synchronization

/// A fixed set of ``EventLoop``s, one per core by default.
///
/// ```swift
/// let group = try EventLoopGroup(loopCount: 2)
/// let loop = group.next()
/// ```
public final class EventLoopGroup: Sendable {
    /// The loops, in index order.
    public let loops: [EventLoop]
    private let cursor = Atomic<Int>(0)

    /// Starts `loopCount` loops (default: the number of online cores).
    public init(loopCount: Int = EventLoopGroup.coreCount, namePrefix: String = "lb-loop") throws(IOError) {
        var loops: [EventLoop] = []
        for i in 0..<max(1, loopCount) {
            loops.append(try EventLoop(name: "\(namePrefix)-\(i)", index: i))
        }
        self.loops = loops
    }

    /// The number of online cores.
    public static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The next loop in rotation (for placing a new connection).
    public func next() -> EventLoop {
        let i = cursor.add(1, ordering: .relaxed).oldValue
        return loops[i % loops.count]
    }

    /// Stops every loop and waits for their threads to exit.
    public func shutdown() {
        for loop in loops { loop.shutdown() }
        for loop in loops { loop.waitUntilStopped() }
    }
}
