import LBKit
import NIOCore
import NIOPosix

// Test helper (run by LBKitHummingbirdTests' NIOTakeOverTests in a process of its own, because both
// global-executor hooks are process-wide and can be installed once): SwiftNIO's executor take-over
// first, as an app does at the top of main, then LBKit's hook for jobs from its loop threads.
// Prints one line of `name=value` pairs that the test reads.

let nio = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
let lbkit = LBEventLoopGroup.keepGlobalJobsOnLoopThreads()
let group = try LBEventLoopGroup(loopCount: 1, namePrefix: "check-loop")

// A task started from a thread that is no loop's (this one): SwiftNIO's hook still runs it.
let plainTaskOnNIO = await Task.detached { MultiThreadedEventLoopGroup.currentEventLoop != nil }.value
// A task started on LBKit's loop, with no executor preference: stays on that loop, and so does the
// rest of it after a wait that the loop's own thread resumes.
let loopTaskStays = await withCheckedContinuation { (done: CheckedContinuation<Bool, Never>) in
    group.loops[0].execute {
        Task {
            let atStart = group.currentLoop != nil
            await withCheckedContinuation { (resumed: CheckedContinuation<Void, Never>) in
                group.loops[0].execute { resumed.resume() }
            }
            done.resume(returning: atStart && group.currentLoop != nil)
        }
    }
}
group.shutdown()
print("nio=\(nio) lbkit=\(lbkit) plainTaskOnNIO=\(plainTaskOnNIO) loopTaskStays=\(loopTaskStays)")
