internal import CLBKitShim
import Synchronization

/// Jobs the Swift runtime sends to its global executor from a loop's thread, kept on that loop
/// (see ``LBEventLoopGroup/keepGlobalJobsOnLoopThreads()``), and the queue entry that says what
/// a job runs on.
extension LBEventLoop {
    private static let keepsGlobalJobs = Atomic<Bool>(false)

    /// Whether jobs the Swift runtime sends to its global executor from a loop's thread run on
    /// that loop (see ``keepGlobalJobsOnLoopThreads()``).
    package static var keepsGlobalJobsOnLoopThreads: Bool { keepsGlobalJobs.load(ordering: .relaxed) }

    /// See ``LBEventLoopGroup/keepGlobalJobsOnLoopThreads()``. The runtime's hook
    /// (`swift_task_enqueueGlobal_hook`, the one SwiftNIO's executor take-over uses) is set by
    /// compare-and-exchange in the C shim; it sends a job to the loop of the calling thread, and
    /// when the thread is not a loop's or the loop has stopped, to the hook that was installed
    /// before it (SwiftNIO's take-over, say), or to the global executor when there was none. Such a
    /// job runs on no particular executor (`swift_job_run` with the generic executor), as on
    /// the global pool, so the runtime sees no executor change and adds no hop.
    @discardableResult
    package static func keepGlobalJobsOnLoopThreads() -> Bool {
        let installed = lbk_install_loop_thread_enqueue_hook { loopPointer, jobPointer in
            guard let loopPointer, let jobPointer else { return 0 }
            let loop = Unmanaged<LBEventLoop>.fromOpaque(loopPointer).takeUnretainedValue()
            return loop.tryEnqueue(unsafeBitCast(jobPointer, to: UnownedJob.self), runningOn: .global) ? 1 : 0
        } >= 1
        if installed { keepsGlobalJobs.store(true, ordering: .relaxed) }
        return installed
    }
}

/// A job in an ``LBEventLoop``'s queue and the executor it runs on.
struct QueuedJob {
    /// What a job runs on, which is what the runtime then believes is current.
    enum Executor {
        /// The loop, as the task executor of a task that prefers it.
        case loop
        /// Another task executor this thread serves (the loop's group).
        case taskExecutor(UnownedTaskExecutor)
        /// The global executor, for a job sent there from this loop's thread
        /// (``LBEventLoop/keepGlobalJobsOnLoopThreads()``).
        case global
    }
    var job: UnownedJob
    var executor: Executor
}
