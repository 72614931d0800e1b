internal import CLBKitShim
import Glibc
import Synchronization

/// One epoll event loop on its own thread that is also a Swift `TaskExecutor`.
///
/// Connection tasks are started with `Task(executorPreference: loop)`, so their async code runs on
/// the loop thread that resumed them: readiness events, the continuation resume and the handler code
/// all happen on one thread with no hop to the global concurrent pool (see Docs/Architecture.md).
///
/// ```swift
/// let loop = try LBEventLoop(name: "lb-loop-0")
/// Task(executorPreference: loop) {
///     // runs on the loop thread
/// }
/// ```
///
/// `@unchecked Sendable`: the mutable members are either `Mutex`/`Atomic` protected (`jobs`,
/// `registry`, `timers`, `sleeping`, `running`) or touched only by the loop thread itself inside
/// `run()` (`eventBuffer`, `dataBuffer`, `jobScratch`, `dispatchScratch`, `expiredScratch`,
/// `expiredSockets`), which is the only thread
/// that calls the `@inline(never)` helpers of `run()`.
public final class LBEventLoop: TaskExecutor, @unchecked Sendable, CustomStringConvertible {
    /// A human-readable name, used for the thread name.
    public let name: String
    /// This loop's position in its group (0 for a standalone loop).
    public let index: Int

    let epollFD: Int32
    let wakeFD: Int32

    /// Queued jobs, each with the executor it runs "on": the loop itself, or the group the job
    /// was enqueued through (see ``LBEventLoopGroup/enqueue(_:)``), so that the runtime sees the
    /// task already on its preferred executor and does not enqueue it again.
    private let jobs = Mutex<[QueuedJob]>([])
    /// Set (under the `jobs` lock) when the loop has stopped taking jobs.
    private let jobsClosed = Atomic<Bool>(false)
    private let sleeping = Atomic<Bool>(false)
    private let running = Atomic<Bool>(true)
    private let registry = Mutex<SocketRegistry>(SocketRegistry())
    private let timers = Mutex<TimerHeap>(TimerHeap())
    private let threadID = Mutex<pthread_t?>(nil)
    private let finished = Mutex<Bool>(false)
    /// Read buffers lent to this loop's connections while they read (see ``ReadBufferPool``).
    package let readBuffers = ReadBufferPool()

    // Loop-thread-only scratch space. `@exclusivity(unchecked)`: only the loop's own thread
    // touches these, from `run()` and the functions it calls (never from a job it runs), so no two
    // accesses can overlap; the dynamic checks cost two runtime calls per access on every round.
    @exclusivity(unchecked) private var eventBuffer = [UInt32](repeating: 0, count: 256)
    @exclusivity(unchecked) private var dataBuffer = [UInt64](repeating: 0, count: 256)
    @exclusivity(unchecked) private var jobScratch: [QueuedJob] = []
    @exclusivity(unchecked) private var dispatchScratch: [ReadyEvent] = []
    @exclusivity(unchecked) private var resumedScratch: [(Socket, ParkedSocket)] = []
    @exclusivity(unchecked) private var expiredScratch: [TimerEntry] = []
    @exclusivity(unchecked) private var expiredSockets: [Socket] = []

    /// Creates a loop and starts its thread.
    public init(name: String = "lb-loop", index: Int = 0) throws(SocketError) {
        self.name = name
        self.index = index
        let ep = lbk_epoll_create()
        guard ep >= 0 else { throw SocketError.fromErrno("epoll_create1") }
        let wake = lbk_eventfd()
        guard wake >= 0 else {
            let code = errno
            Glibc.close(ep)
            throw SocketError.fromErrno("eventfd", code)
        }
        epollFD = ep
        wakeFD = wake
        // The wake fd uses data value 0, which no socket registration ever uses (generations start at 1).
        guard lbk_epoll_add(ep, wake, LBK_EPOLLIN | LBK_EPOLLET, 0) == 0 else {
            let code = errno
            Glibc.close(ep)
            Glibc.close(wake)
            throw SocketError.fromErrno("epoll_ctl", code)
        }
        try startThread()
    }

    public var description: String { "LBEventLoop(\(name))" }

    /// The loop whose thread the caller runs on, nil on any other thread.
    static var current: LBEventLoop? {
        guard let pointer = lbk_current_loop() else { return nil }
        return Unmanaged<LBEventLoop>.fromOpaque(pointer).takeUnretainedValue()
    }

    /// Whether the caller runs on this loop's thread.
    public var inEventLoop: Bool {
        threadID.withLock { tid in
            guard let tid else { return false }
            return pthread_equal(tid, pthread_self()) != 0
        }
    }

    // MARK: TaskExecutor

    /// Enqueues a job to run on the loop thread (called by the Swift runtime).
    ///
    /// After the loop stopped, a job is handed to the global concurrent executor instead: a task
    /// that prefers this loop keeps running (it would otherwise wait forever for a loop that is
    /// gone), and its sockets were closed when the loop stopped, so its waits end.
    public func enqueue(_ job: consuming ExecutorJob) {
        enqueue(UnownedJob(job), runningOn: .loop)
    }

    /// Queues `unowned` to run on this thread as if on `executor`.
    func enqueue(_ unowned: UnownedJob, runningOn executor: QueuedJob.Executor) {
        if !tryEnqueue(unowned, runningOn: executor) {
            globalConcurrentExecutor.enqueue(ExecutorJob(unowned))
        }
    }

    /// Queues `unowned`; false when the loop has stopped taking jobs.
    func tryEnqueue(_ unowned: UnownedJob, runningOn executor: QueuedJob.Executor) -> Bool {
        let accepted = jobs.withLock { queue -> Bool in
            if jobsClosed.load(ordering: .acquiring) { return false }
            queue.append(QueuedJob(job: unowned, executor: executor))
            return true
        }
        if accepted { wakeIfSleeping() }
        return accepted
    }

    /// Runs `body` on the loop thread soon (from any thread).
    public func execute(_ body: @escaping @Sendable () -> Void) {
        Task(executorPreference: self) { body() }
    }

    @inline(__always)
    private func wakeIfSleeping() {
        if sleeping.exchange(false, ordering: .acquiringAndReleasing) {
            _ = lbk_eventfd_signal(wakeFD)
        }
    }

    // MARK: Sockets

    /// Registers `socket` for edge-triggered readiness events on this loop.
    func register(_ socket: Socket) throws(SocketError) {
        let generation = registry.withLock { $0.insert(socket) }
        socket.setGeneration(generation)
        let data = (UInt64(generation) << 32) | UInt64(UInt32(bitPattern: socket.fd))
        let events = LBK_EPOLLIN | LBK_EPOLLOUT | LBK_EPOLLRDHUP | LBK_EPOLLET
        if lbk_epoll_add(epollFD, socket.fd, events, data) != 0 {
            let code = errno
            registry.withLock { $0.remove(fd: socket.fd, generation: generation) }
            throw SocketError.fromErrno("epoll_ctl", code)
        }
    }

    /// Forgets `socket`: no more events are delivered for it. Call before closing its fd.
    func deregister(_ socket: Socket) {
        _ = lbk_epoll_del(epollFD, socket.fd)
        registry.withLock { $0.remove(fd: socket.fd, generation: socket.generation) }
    }

    /// Number of registered sockets, parked ones included (for stats and tests).
    public var registeredSocketCount: Int { registry.withLock { $0.count } }

    // MARK: Parking

    /// Parks an idle connection's socket: the socket object is retired (``Socket/retireForParking()``)
    /// and the loop keeps only a small entry in its fd table, so a parked connection costs no heap
    /// object at all. On the next readiness event the loop makes a new ``Socket`` for the fd and
    /// hands it to `owner` (``ParkedSocketOwner/parkedSocketReady(_:deadline:token:)``); at
    /// `deadline`, or on ``closeParked(owner:)`` or loop stop, it closes the fd and tells `owner`
    /// (``ParkedSocketOwner/parkedSocketGone(token:)``).
    ///
    /// Returns false (the socket unchanged) when the socket cannot be parked now: the caller is
    /// not on this loop's thread (only there is the readiness check free of races with event
    /// dispatch), the loop stopped, a task waits on the socket, or bytes or EOF may be readable.
    func park(_ socket: Socket, until deadline: UInt64, owner: any ParkedSocketOwner, token: UInt64) -> Bool {
        guard running.load(ordering: .acquiring), inEventLoop else { return false }
        let entry = ParkedSocket(deadline: deadline, owner: owner, token: token)
        let generation = socket.generation
        let parked = registry.withLock { reg -> Bool in
            guard reg.lookup(fd: socket.fd, generation: generation) === socket, socket.retireForParking() else { return false }
            reg.park(fd: socket.fd, generation: generation, entry)
            return true
        }
        guard parked else { return false }
        if deadline != .max { armTimer(fd: socket.fd, generation: generation, at: deadline) }
        return true
    }

    /// Closes every socket `owner` parked on this loop (graceful shutdown).
    func closeParked(owner: any ParkedSocketOwner) {
        let taken = registry.withLock { $0.removeParked { $0.owner === owner } }
        closeParkedSockets(taken)
    }

    private func closeParkedSockets(_ taken: [(Int32, ParkedSocket)]) {
        for (fd, entry) in taken {
            _ = lbk_epoll_del(epollFD, fd)
            Glibc.close(fd)
            entry.owner.parkedSocketGone(token: entry.token)
        }
    }

    // MARK: Timers

    /// Arranges for `socket.timerFired` to run on the loop at or after `deadline` (monotonic ns),
    /// if the socket is still registered then. The entry names the socket by its registration and
    /// does not retain it: a closed socket is freed at once, not when its last deadline passes.
    func armTimer(for socket: Socket, at deadline: UInt64) {
        armTimer(fd: socket.fd, generation: socket.generation, at: deadline)
    }

    private func armTimer(fd: Int32, generation: UInt32, at deadline: UInt64) {
        let entry = TimerEntry(deadline: deadline, fd: fd, generation: generation)
        let becameEarliest = timers.withLock { heap -> Bool in
            let previous = heap.peekDeadline ?? .max
            heap.push(entry)
            return deadline < previous
        }
        if becameEarliest && !inEventLoop { _ = lbk_eventfd_signal(wakeFD) }
    }

    // MARK: Lifecycle

    /// Stops the loop after its current iteration. Pending jobs are run first.
    public func shutdown() {
        running.store(false, ordering: .releasing)
        _ = lbk_eventfd_signal(wakeFD)
    }

    /// Blocks the calling thread until the loop thread has exited (after `shutdown()`).
    public func waitUntilStopped() {
        var tid: pthread_t? = threadID.withLock { $0 }
        if let t = tid {
            pthread_join(t, nil)
            tid = nil
        }
    }

    private func startThread() throws(SocketError) {
        let box = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let loop = Unmanaged<LBEventLoop>.fromOpaque(arg).takeRetainedValue()
            loop.threadMain()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<LBEventLoop>.fromOpaque(box).release()
            throw SocketError.fromErrno("pthread_create", rc)
        }
        threadID.withLock { $0 = tid }
    }

    private func threadMain() {
        threadID.withLock { $0 = pthread_self() }
        lbk_set_current_loop(Unmanaged.passUnretained(self).toOpaque())
        let shortName = String(name.prefix(15))
        _ = lbk_set_thread_name(shortName)
        run()
        // This thread is no loop's any more: the global-enqueue hook must not find a loop that
        // may be freed once this function returns (see LoopThreadJobs.swift).
        lbk_set_current_loop(nil)
        finished.withLock { $0 = true }
    }

    private func run() {
        while running.load(ordering: .acquiring) {
            drainJobs()
            let timeout = nextTimeout()
            let n = waitForEvents(timeout: timeout)
            if n > 0 { dispatchEvents(count: n) }
            fireTimers()
        }
        drainJobs()
        // Stopped: later jobs go to the global executor, and every socket still registered is
        // closed so that whatever waits on it resumes (with `closed`) instead of hanging.
        jobs.withLock { _ in jobsClosed.store(true, ordering: .releasing) }
        drainJobs()
        for socket in registry.withLock({ $0.allSockets }) { socket.close() }
        closeParkedSockets(registry.withLock { $0.removeParked { _ in true } })
    }

    /// Runs every queued job; jobs enqueued while running are picked up by the next pass.
    /// Kept out of `run()` on purpose: an inner drain loop in the event-loop body made the
    /// Swift 6.3.1 optimizer hang (LICM), see Docs/Architecture.md.
    @inline(never)
    private func drainJobs() {
        var rounds = 0
        while rounds < 64 {
            jobs.withLock { queue in swap(&queue, &jobScratch) }
            if jobScratch.isEmpty { return }
            let executor = asUnownedTaskExecutor()
            // Each job reads the clock once for its first several reads (see lbk_monotonic_ns).
            lbk_job_clock_begin()
            defer { lbk_job_clock_end() }
            for queued in jobScratch {
                lbk_job_clock_next()
                switch queued.executor {
                case .loop: queued.job.runSynchronously(on: executor)
                case .taskExecutor(let other): queued.job.runSynchronously(on: other)
                case .global: lbk_run_job_on_global_executor(unsafeBitCast(queued.job, to: UnsafeMutableRawPointer.self))
                }
            }
            Self.empty(&jobScratch)
            rounds += 1
        }
    }

    /// The epoll timeout in ms: 0 when jobs are pending, else until the next timer, else -1.
    @inline(never)
    private func nextTimeout() -> Int32 {
        let next = timers.withLock { $0.peekDeadline }
        var timeout: Int32 = -1
        if let next {
            let now = lbk_monotonic_ns()
            if next <= now { return 0 }
            let ms = (next - now + 999_999) / 1_000_000
            timeout = Int32(clamping: ms)
        }
        sleeping.store(true, ordering: .releasing)
        let pending = jobs.withLock { !$0.isEmpty }
        if pending || !running.load(ordering: .acquiring) {
            sleeping.store(false, ordering: .releasing)
            return 0
        }
        return timeout
    }

    @inline(never)
    private func waitForEvents(timeout: Int32) -> Int {
        let n = eventBuffer.withUnsafeMutableBufferPointer { ev in
            dataBuffer.withUnsafeMutableBufferPointer { data in
                lbk_epoll_wait(epollFD, ev.baseAddress, data.baseAddress, Int32(ev.count), timeout)
            }
        }
        sleeping.store(false, ordering: .releasing)
        return Int(max(n, 0))
    }

    @inline(never)
    private func dispatchEvents(count: Int) {
        registry.withLock { reg in
            for i in 0..<count {
                let data = dataBuffer[i]
                if data == 0 { continue }
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
                let generation = UInt32(truncatingIfNeeded: data >> 32)
                if let socket = reg.lookup(fd: fd, generation: generation) {
                    dispatchScratch.append(ReadyEvent(socket: socket, events: eventBuffer[i]))
                } else if reg.isParked(fd: fd, generation: generation) {
                    // A parked connection woke up: a new socket object takes over its registration.
                    let socket = Socket(fd: fd, loop: self)
                    socket.setGeneration(generation)
                    if let entry = reg.unpark(fd: fd, generation: generation, as: socket) {
                        dispatchScratch.append(ReadyEvent(socket: socket, events: eventBuffer[i]))
                        resumedScratch.append((socket, entry))
                    }
                }
            }
        }
        for i in 0..<count where dataBuffer[i] == 0 {
            _ = lbk_eventfd_drain(wakeFD)
            break
        }
        for ready in dispatchScratch { ready.socket.handleEvents(ready.events) }
        dispatchScratch.removeAll(keepingCapacity: true)
        if !resumedScratch.isEmpty {
            for (socket, entry) in resumedScratch {
                entry.owner.parkedSocketReady(socket, deadline: entry.deadline, token: entry.token)
            }
            resumedScratch.removeAll(keepingCapacity: true)
        }
    }

    @inline(never)
    private func fireTimers() {
        let now = lbk_monotonic_ns()
        let live = registryCountUnlocked
        timers.withLock { heap in
            while let top = heap.peekDeadline, top <= now, let entry = heap.pop() {
                expiredScratch.append(entry)
            }
            // Closed sockets leave entries behind; rebuild when they dominate.
            if heap.count > 4096 && heap.count > 4 * max(live, 1) {
                registry.withLock { reg in heap.removeAll { !reg.isRegistered(fd: $0.fd, generation: $0.generation) } }
            }
        }
        if expiredScratch.isEmpty { return }
        var expiredParked: [(Int32, ParkedSocket)] = []
        registry.withLock { reg in
            for entry in expiredScratch {
                if let socket = reg.lookup(fd: entry.fd, generation: entry.generation) {
                    expiredSockets.append(socket)
                } else if let parked = reg.removeParked(fd: entry.fd, generation: entry.generation, dueBy: now) {
                    expiredParked.append((entry.fd, parked))
                }
            }
        }
        Self.empty(&expiredScratch)
        for socket in expiredSockets { socket.timerFired(now: now) }
        Self.empty(&expiredSockets)
        if !expiredParked.isEmpty { closeParkedSockets(expiredParked) }
    }

    private var registryCountUnlocked: Int { registry.withLock { $0.count } }

    /// Empties a scratch array, keeping its room unless a burst made it large (more than 4,096
    /// elements, e.g. a job per connection for thousands of new connections at once): that room
    /// is given back, at the cost of one allocation per 4,096 elements of the next such burst.
    @inline(__always)
    private static func empty<Element>(_ scratch: inout [Element]) {
        if scratch.capacity > 4096 {
            scratch = []
        } else {
            scratch.removeAll(keepingCapacity: true)
        }
    }

    /// Slots in the fd table and room in the timer heap (tests).
    var tableSizes: (slots: Int, timerRoom: Int) {
        (registry.withLock { $0.slotCount }, timers.withLock { $0.capacity })
    }

    deinit {
        Glibc.close(epollFD)
        Glibc.close(wakeFD)
    }
}

/// A socket and the readiness events epoll reported for it, kept while the round's events are
/// delivered. A struct, not a tuple: emptying an array of tuples destroys each element through
/// the runtime's generic tuple witness (about 60 instructions per round).
struct ReadyEvent {
    let socket: Socket
    let events: UInt32
}

/// A deadline of a registered socket, named by its registration (fd and generation) so that the
/// heap holds no reference to it.
struct TimerEntry {
    var deadline: UInt64
    var fd: Int32
    var generation: UInt32
}

/// A binary min-heap of socket deadlines.
struct TimerHeap {
    private var entries: [TimerEntry] = []

    var count: Int { entries.count }
    var peekDeadline: UInt64? { entries.first?.deadline }

    mutating func push(_ entry: TimerEntry) {
        entries.append(entry)
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if entries[parent].deadline <= entries[child].deadline { break }
            entries.swapAt(parent, child)
            child = parent
        }
    }

    /// Entries the heap has room for, for tests of ``shrinkIfSparse()``.
    var capacity: Int { entries.capacity }

    mutating func pop() -> TimerEntry? {
        guard !entries.isEmpty else { return nil }
        entries.swapAt(0, entries.count - 1)
        let top = entries.removeLast()
        defer { shrinkIfSparse() }
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < entries.count && entries[left].deadline < entries[smallest].deadline { smallest = left }
            if right < entries.count && entries[right].deadline < entries[smallest].deadline { smallest = right }
            if smallest == parent { break }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }

    mutating func removeAll(where predicate: (TimerEntry) -> Bool) {
        let kept = entries.filter { !predicate($0) }
        entries = []
        entries.reserveCapacity(kept.count)
        for e in kept { push(e) }
    }

    /// After a burst the heap's array keeps its largest size; past 1,024 entries of room it is
    /// copied into a tight one once three quarters of it are unused (amortised O(1): the copy
    /// holds a quarter of the room, and at least as many pops preceded it).
    private mutating func shrinkIfSparse() {
        let room = entries.capacity
        guard room > 1024, entries.count < room / 4 else { return }
        // Not `Array(entries[...])`: a slice of the whole array gives its buffer back as it is.
        var tight: [TimerEntry] = []
        tight.reserveCapacity(entries.count)
        tight.append(contentsOf: entries)
        entries = tight
    }
}
