/// Where the balancer keeps state that every request writes: one slot per event loop of its
/// group, each on cache lines of its own, then one slot shared by callers on no loop of the
/// group (an embedding server's threads). A value written by every loop moves its cache line
/// between the cores on every write (`Docs/Performance.md` step 50); per-loop slots are summed
/// when read instead. ``ProxyCounters`` and ``AttemptCounter`` keep their slots this way.
///
/// ```swift
/// let slots = (0..<LoopSlots.count(forLoops: 2)).map { _ in ProxyCounterShard() }   // 3 slots
/// LoopSlots.index(of: 1, among: slots.count)     // 1: loop 1's own
/// LoopSlots.index(of: nil, among: slots.count)   // 2: the shared one
/// ```
enum LoopSlots {
    /// Slots for a group of `loopCount` loops: one each, then the shared one.
    static func count(forLoops loopCount: Int) -> Int { max(loopCount, 0) + 1 }

    /// The slot of loop `loopIndex` (`group.currentLoopIndex`); the shared last slot for nil or
    /// an index beyond the loops.
    @inline(__always)
    static func index(of loopIndex: Int?, among slotCount: Int) -> Int {
        let shared = slotCount - 1
        guard let loopIndex, loopIndex >= 0, loopIndex < shared else { return shared }
        return loopIndex
    }
}
