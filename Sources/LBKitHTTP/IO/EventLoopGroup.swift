import Glibc
import Synchronization

/// A fixed set of ``LBEventLoop``s, one per core by default.
///
/// ```swift
/// let group = try LBEventLoopGroup(loopCount: 2)
/// let loop = group.next()
/// ```
public final class LBEventLoopGroup: Sendable {
    /// The loops, in index order.
    public let loops: [LBEventLoop]
    private let cursor = Atomic<Int>(0)

    /// Starts `loopCount` loops (default: the number of online cores).
    public init(loopCount: Int = LBEventLoopGroup.coreCount, namePrefix: String = "lb-loop") throws(SocketError) {
        var loops: [LBEventLoop] = []
        for i in 0..<max(1, loopCount) {
            loops.append(try LBEventLoop(name: "\(namePrefix)-\(i)", index: i))
        }
        self.loops = loops
    }

    /// The number of online cores.
    public static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The next loop in rotation (for placing a new connection).
    public func next() -> LBEventLoop {
        let i = cursor.add(1, ordering: .relaxed).oldValue
        return loops[i % loops.count]
    }

    /// Stops every loop and waits for their threads to exit.
    public func shutdown() {
        for loop in loops { loop.shutdown() }
        for loop in loops { loop.waitUntilStopped() }
    }
}
