// throttle-bench: microbenchmark of LBKit's ThrottleTable. Build and run in release:
//
//     swift run -c release throttle-bench
//
// Prints heap bytes per tracked key (mallinfo2, before/after inserting 100k and 1M keys) and
// nanoseconds per `check` with 1 key and with 100k active random keys, on 1 and 2 threads
// (plus a churn case where every check is a new key evicting the least recently seen one).
// Each timed case runs for ~0.5 s, so the whole run takes a few seconds.

import Glibc
import LBKit
import Synchronization

let phase = 0.5  // seconds per timed case

/// Heap bytes in use (main arena plus mmapped chunks) from glibc's `mallinfo2`, or nil.
///
/// Swift's Glibc module does not export <malloc.h>, so the function is looked up with `dlsym`.
/// `struct mallinfo2` (ten `size_t`s) is returned in memory: on x86-64 SysV the caller passes
/// the result's address as a hidden first argument, which is how it is called here. Elsewhere
/// the benchmark falls back to resident-set size.
func heapInUse() -> Int? {
    #if arch(x86_64) && os(Linux)
    guard let symbol = dlsym(nil, "mallinfo2") else { return nil }
    typealias MallInfo2 = @convention(c) (UnsafeMutableRawPointer) -> UnsafeMutableRawPointer?
    let call = unsafeBitCast(symbol, to: MallInfo2.self)
    var fields = [Int](repeating: 0, count: 10)
    fields.withUnsafeMutableBytes { raw in
        if let base = raw.baseAddress { _ = call(base) }
    }
    return fields[7] + fields[4]  // uordblks (allocated heap bytes) + hblkhd (mmapped bytes)
    #else
    return nil
    #endif
}

/// Resident-set size in bytes, from /proc/self/statm.
func residentBytes() -> Int {
    guard let file = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(file) }
    var size = 0, resident = 0
    guard withUnsafeMutablePointer(to: &size, { s in
        withUnsafeMutablePointer(to: &resident) { r in
            withVaList([s, r]) { vfscanf(file, "%ld %ld", $0) }
        }
    }) == 2 else { return 0 }
    return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// A distinct IPv4 key per index (multiplication by an odd constant is a bijection mod 2^32).
@inline(__always)
func key(_ i: Int, salt: UInt32 = 0x9E37_79B9) -> ClientAddress {
    ClientAddress(ipv4: UInt32(truncatingIfNeeded: i) &* 2_654_435_761 &+ salt)
}

// MARK: Memory

print("== memory per tracked key (heap bytes in use after - before inserting; RSS delta) ==")
for n in [100_000, 1_000_000] {
    let heapBefore = heapInUse()
    let rssBefore = residentBytes()
    let table = ThrottleTable(configuration: ThrottleConfiguration(maxKeys: n), clock: ManualClock())
    for i in 0..<n { _ = table.check(key(i)) }
    let heapAfter = heapInUse()
    let rssAfter = residentBytes()
    let count = Double(table.count)
    var line = "\(n) keys (maxKeys \(n)): count=\(table.count)"
    if let heapBefore, let heapAfter {
        line += "  mallinfo2: \(fmt(Double(heapAfter - heapBefore) / count)) B/key"
    }
    line += "  RSS: \(fmt(Double(rssAfter - rssBefore) / count)) B/key"
    line += "  approximateBytesPerKey: \(table.approximateBytesPerKey)"
    print(line)
}

// MARK: Timing

/// Runs `body(threadIndex)` on `count` pthreads at once and waits for them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Job {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }
    var threads: [pthread_t] = []
    for index in 0..<count {
        let context = Unmanaged.passRetained(Job { body(index) }).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<Job>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, context)
        guard rc == 0 else { fatalError("pthread_create failed: \(rc)") }
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
}

func fmt(_ x: Double, _ digits: Int = 1) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (x * scale).rounded() / scale
    return "\(r)"
}

/// Times `threads` threads each calling `step(threadIndex, iteration)` for ~`phase` seconds.
/// Returns (ns per check per thread, million checks per second in total).
func measure(threads: Int, _ step: @escaping @Sendable (Int, UInt64) -> Bool) -> (Double, Double) {
    let ready = Atomic<Int>(0)
    let results = Mutex<[(checks: Int, ns: UInt64)]>([])
    onThreads(threads) { index in
        ready.add(1, ordering: .relaxed)
        while ready.load(ordering: .relaxed) < threads {}
        let clock = SystemClock()
        let start = clock.now()
        let deadline = start + .milliseconds(Int64(phase * 1000))
        var checks = 0
        var allowed = 0
        var seed = UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15
        while clock.now() < deadline {
            for _ in 0..<1024 {
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17  // xorshift64
                if step(index, seed) { allowed += 1 }
            }
            checks += 1024
        }
        let ns = (clock.now() - start).nanosecondsClamped
        precondition(allowed >= 0)
        results.withLock { $0.append((checks, UInt64(ns))) }
    }
    let all = results.withLock { $0 }
    let perThreadNs = all.map { Double($0.ns) / Double($0.checks) }.reduce(0, +) / Double(all.count)
    let totalChecks = all.map(\.checks).reduce(0, +)
    let seconds = Double(all.map(\.ns).max() ?? 1) / 1e9
    return (perThreadNs, Double(totalChecks) / seconds / 1e6)
}

func report(_ name: String, threads: Int, _ result: (Double, Double)) {
    print("\(name), \(threads) thread\(threads == 1 ? "" : "s"): \(fmt(result.0)) ns/check per thread, "
        + "\(fmt(result.1, 2)) M checks/s total")
}

print("== time per check (SystemClock read included) ==")
// Every check adds 1 s to a key's TAT and the burst is huge, so no key ever decays (all 100k
// stay live) and every check takes the common "allowed" path.
let config = ThrottleConfiguration(rate: 1, burst: 1_000_000)

for threads in [1, 2] {
    let one = ThrottleTable(configuration: config, clock: SystemClock())
    let single = key(7)
    report("1 key", threads: threads, measure(threads: threads) { _, _ in one.check(single).isAllowed })
}
do {
    let one = ThrottleTable(configuration: config, clock: SystemClock())
    let single = key(7)
    let now = SystemClock().now()
    report("1 key, caller-supplied now (no clock read)", threads: 1, measure(threads: 1) { _, _ in
        one.check(single, now: now).isAllowed
    })
}

let keyCount = 100_000
let keys = (0..<keyCount).map { key($0) }
for threads in [1, 2] {
    let table = ThrottleTable(configuration: config, clock: SystemClock())
    for k in keys { _ = table.check(k) }
    report("100k keys (random)", threads: threads, measure(threads: threads) { _, r in
        table.check(keys[Int(truncatingIfNeeded: r % UInt64(keyCount))]).isAllowed
    })
    precondition(table.count == keyCount, "keys were reclaimed or evicted: \(table.count)")
}

do {
    let table = ThrottleTable(configuration: config, clock: SystemClock())
    for k in keys { _ = table.check(k) }
    let now = SystemClock().now()
    report("100k keys (random), caller-supplied now", threads: 1, measure(threads: 1) { _, r in
        table.check(keys[Int(truncatingIfNeeded: r % UInt64(keyCount))], now: now).isAllowed
    })
    report("  (bench overhead: random key load only)", threads: 1, measure(threads: 1) { _, r in
        keys[Int(truncatingIfNeeded: r % UInt64(keyCount))].low & 1 == 0
    })
}

do {
    let table = ThrottleTable(configuration: config, clock: SystemClock())
    for k in keys { _ = table.check(k) }
    let counter = Atomic<Int>(0)
    report("new key every check (evicting, table full at 100k)", threads: 1, measure(threads: 1) { _, _ in
        table.check(key(counter.add(1, ordering: .relaxed).newValue, salt: 0x1234_5678)).isAllowed
    })
    precondition(table.count == keyCount, "count \(table.count)")
}
