/// 128 bytes of nothing, stored before and after the fields of an object that one event loop
/// writes on every request (a per-loop counter, a loop's connection pool), so that no other
/// allocation's fields share its cache lines: two loops writing neighbouring objects would move
/// those lines between the cores on every write ("false sharing"). 128, not 64: the hardware
/// fetches cache lines in adjacent pairs.
///
/// ```swift
/// final class LoopCounter: Sendable {
///     private let leadingPad = CacheLinePadding()
///     let value = Atomic<Int>(0)
///     private let trailingPad = CacheLinePadding()
/// }
/// ```
package struct CacheLinePadding: Sendable {
    private let words = InlineArray<16, UInt64>(repeating: 0)

    package init() {}
}
