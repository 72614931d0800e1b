import Glibc
import Synchronization
internal import CLBKitShim

/// A fixed set of ``LBEventLoop``s, one per core by default.
///
/// ```swift
/// let group = try LBEventLoopGroup(loopCount: 2)
/// let loop = group.next()
/// ```
public final class LBEventLoopGroup: TaskExecutor, Sendable {
    /// The loops, in index order.
    public let loops: [LBEventLoop]
    /// The loops' addresses, parallel to `loops` (for ``currentLoopIndex``).
    private let loopAddresses: [UInt]
    private let cursor = Atomic<Int>(0)

    /// Starts `loopCount` loops (default: the number of online cores).
    public init(loopCount: Int = LBEventLoopGroup.coreCount, namePrefix: String = "lb-loop") throws(SocketError) {
        var loops: [LBEventLoop] = []
        for i in 0..<max(1, loopCount) {
            loops.append(try LBEventLoop(name: "\(namePrefix)-\(i)", index: i))
        }
        self.loops = loops
        loopAddresses = loops.map { UInt(bitPattern: Unmanaged.passUnretained($0).toOpaque()) }
    }

    /// The number of online cores.
    public static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The next loop in rotation (for placing a new connection).
    public func next() -> LBEventLoop {
        let i = cursor.add(1, ordering: .relaxed).oldValue
        return loops[i % loops.count]
    }

    /// The loop of this group whose thread the caller runs on, nil on any other thread.
    ///
    /// ```swift
    /// let loop = group.currentLoop ?? group.next()   // stay on the caller's loop when there is one
    /// ```
    public var currentLoop: LBEventLoop? {
        guard let loop = LBEventLoop.current, loop.index < loops.count, loops[loop.index] === loop else { return nil }
        return loop
    }

    /// ``currentLoop``'s index in ``loops``, found without retaining or releasing the loop: the
    /// balancer asks on every request, for its per-loop counters, and a reference count written
    /// by every loop is a cache line moved between the cores each time.
    @inline(__always)
    package var currentLoopIndex: Int? {
        guard let pointer = lbk_current_loop() else { return nil }
        let index = Unmanaged<LBEventLoop>.fromOpaque(pointer)._withUnsafeGuaranteedRef { $0.index }
        guard index < loopAddresses.count, loopAddresses[index] == UInt(bitPattern: pointer) else { return nil }
        return index
    }

    /// Runs a job of a task that prefers this group: on the caller's loop when the caller runs on
    /// one of the group's loops (a task resumed by its own socket's readiness stays on that loop
    /// with no thread hop), otherwise on the next loop in turn.
    ///
    /// With the group as task executor preference, a whole server's request handling can run on
    /// LBKit's loops: the handler, the upstream exchange and the resumption after the backend's
    /// answer then share a thread, as in lbserve, instead of crossing from the global concurrent
    /// pool to a loop and back on every request.
    ///
    /// ```swift
    /// try await withTaskExecutorPreference(balancer.group) {
    ///     try await app.runService()   // connection tasks are children: they inherit the preference
    /// }
    /// ```
    public func enqueue(_ job: consuming ExecutorJob) {
        let loop = currentLoop ?? next()
        loop.enqueue(UnownedJob(job), runningOn: .taskExecutor(asUnownedTaskExecutor()))
    }

    /// From now on, for the whole process, a job that the Swift runtime sends to its global
    /// executor from the thread of any ``LBEventLoop`` runs on that loop. Returns false when the
    /// runtime has no such hook. A ``LoadBalancer`` calls it when its configuration's
    /// `keepsResumedTasksOnLoops` is true (the default), lbserve's among them.
    ///
    /// Another global-executor hook installed before it (SwiftNIO's executor take-over,
    /// `NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()`)
    /// keeps working: LBKit's hook passes it every job that comes from a thread that is no loop's.
    /// Install that one first, at the top of `main`: it only installs itself where no hook is.
    ///
    /// Why: ``HTTP1Server`` then runs a connection whose handler chain is all LBKit's (the
    /// balancer, its throttle and admin endpoints) in a task with no executor preference. Such
    /// a task resumed by its socket's loop stays on that loop just as a task that prefers the
    /// loop does, without the runtime looking the preference up under the task's status lock at
    /// every `await` (eight look-ups per proxied request, about 1,200 instructions in all,
    /// Docs/Performance.md step 25).
    ///
    /// What it changes: any job sent to the global executor from a loop's thread runs on that
    /// loop: a task started there without a preference (`Task {}`, `Task.detached`, even one that
    /// prefers `globalConcurrentExecutor`, which enqueues through the same path) and the rest of
    /// a task the loop resumes, until it next waits. None of that may block: blocking work
    /// started from code on a loop belongs on a Dispatch queue or a thread of its own. Jobs sent
    /// from any other thread still go to the global executor.
    ///
    /// ```swift
    /// LBEventLoopGroup.keepGlobalJobsOnLoopThreads()   // once, before starting servers
    /// let group = try LBEventLoopGroup()
    /// ```
    @discardableResult
    public static func keepGlobalJobsOnLoopThreads() -> Bool {
        LBEventLoop.keepGlobalJobsOnLoopThreads()
    }

    /// Stops every loop and waits for their threads to exit.
    public func shutdown() {
        for loop in loops { loop.shutdown() }
        for loop in loops { loop.waitUntilStopped() }
    }
}
