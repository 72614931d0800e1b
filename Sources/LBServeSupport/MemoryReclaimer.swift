internal import CLBKitShim
import Glibc

/// Returns freed memory to the kernel after bursts, for a long-running server process.
///
/// glibc keeps freed heap memory for reuse, so after a burst (thousands of connections, many
/// buffered uploads) the process's RSS stays at its peak. lbserve fixes the mmap threshold (large
/// buffers are then mapped and unmapped, never stranded in the heap) and trims the heap every
/// `interval` from a background thread. Process-wide knobs: the server decides, not the library.
///
/// ```swift
/// MemoryReclaimer.start(interval: .seconds(2))
/// ```
public enum MemoryReclaimer {
    /// Starts the background trimming thread (call once, at start-up).
    public static func start(interval: Duration = .seconds(2)) {
        _ = lbk_set_mmap_threshold(128 * 1024)
        let micros = UInt32(clamping: max(100_000, interval.nanosecondsClamped / 1000))
        var tid = pthread_t()
        let box = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        box.initialize(to: micros)
        _ = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let pointer = arg.assumingMemoryBound(to: UInt32.self)
            let period = pointer.pointee
            pointer.deallocate()
            _ = lbk_set_thread_name("lb-mem-trim")
            while true {
                usleep(period)
                _ = lbk_malloc_trim()
            }
        }, box)
    }
}
