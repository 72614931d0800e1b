import Synchronization
/// A growable byte buffer for reading from a socket: bytes are appended at `writerIndex`
/// and consumed from `readerIndex`. Owned by one connection task; never shared.
///
/// ```swift
/// var buffer = InboundBuffer(capacity: 16 * 1024)
/// let n = try await socket.read(into: &buffer, deadline: .distantFuture)
/// buffer.withReadableBytes { bytes in /* parse */ }
/// buffer.consume(n)
/// ```
package struct InboundBuffer: Sendable {
    @usableFromInline var storage: [UInt8]
    /// Index of the first unread byte.
    package private(set) var readerIndex: Int = 0
    /// Index one past the last written byte.
    package private(set) var writerIndex: Int = 0

    /// Creates a buffer with `capacity` bytes of initial space (0: no storage at all until the
    /// first write, so an empty buffer costs no allocation).
    package init(capacity: Int = 16 * 1024) {
        // Not zero-filled (16 KiB of stores per new buffer): no byte is read before a read(2) or
        // a copy wrote it, since every reader stays inside `readerIndex..<writerIndex`.
        storage = capacity > 0 ? [UInt8](unsafeUninitializedCapacity: capacity) { _, count in count = capacity } : []
    }

    /// The bytes of storage held (read or not).
    package var capacity: Int { storage.count }

    /// The number of unread bytes.
    @inlinable package var readableCount: Int { writerIndex - readerIndex }

    /// Whether there are no unread bytes.
    @inlinable package var isEmpty: Bool { writerIndex == readerIndex }

    /// Calls `body` with the unread bytes.
    @inlinable
    package func withReadableBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let r = readerIndex, w = writerIndex
        // withUnsafeBufferPointer throws typed errors (withUnsafeBytes does not): no Result to
        // carry the answer out, whose generic copy and destroy cost ~300 instructions per parse.
        return try storage.withUnsafeBufferPointer { (buffer) throws(E) -> R in
            try body(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buffer[r..<w])))
        }
    }

    /// Marks `count` unread bytes as consumed.
    package mutating func consume(_ count: Int) {
        readerIndex = min(readerIndex + count, writerIndex)
        if readerIndex == writerIndex {
            readerIndex = 0
            writerIndex = 0
        }
    }

    /// Removes and returns up to `count` unread bytes.
    package mutating func take(_ count: Int) -> [UInt8] {
        let n = min(count, readableCount)
        let out = Array(storage[readerIndex..<(readerIndex + n)])
        consume(n)
        return out
    }

    /// Makes room for at least `minimum` bytes after `writerIndex` (compacting or growing) and
    /// calls `body` with that space; `body` returns how many bytes it wrote.
    package mutating func writeWithUnsafeMutableBytes(
        minimumWritable minimum: Int,
        _ body: (UnsafeMutableRawBufferPointer) -> Int
    ) -> Int {
        if storage.count - writerIndex < minimum {
            if readerIndex > 0 {
                let count = readableCount
                storage.withUnsafeMutableBytes { raw in
                    guard let base = raw.baseAddress else { return }
                    base.copyMemory(from: base + readerIndex, byteCount: count)
                }
                readerIndex = 0
                writerIndex = count
            }
            if storage.count - writerIndex < minimum {
                let newSize = max(storage.count * 2, writerIndex + minimum)
                storage.append(contentsOf: repeatElement(0, count: newSize - storage.count))
            }
        }
        let w = writerIndex
        let written = storage.withUnsafeMutableBytes { raw in
            body(UnsafeMutableRawBufferPointer(rebasing: raw[w...]))
        }
        if written > 0 { writerIndex += written }
        return written
    }

    /// Appends bytes (used by tests and by callers that already hold data).
    package mutating func append(_ bytes: some Collection<UInt8>) {
        let count = bytes.count
        _ = writeWithUnsafeMutableBytes(minimumWritable: count) { space in
            _ = space.initializeMemory(as: UInt8.self, from: bytes)
            return count
        }
    }
}

/// A few spare read buffers per event loop, lent to connections only while they read.
///
/// A connection needs a read buffer while bytes of a request or response are arriving, not
/// while its handler runs or while it sits idle (in the server) or pooled (upstream). Lending
/// the buffer for just that span means thousands of connections share a few buffers, nothing
/// is zero-filled or allocated per request in the steady state, and the memory of a burst is not
/// left behind in idle connections. Thread-safe (a lock around a short array), though used
/// from the loop's own thread.
package final class ReadBufferPool: Sendable {
    /// The size of every pooled buffer (grown buffers are not kept).
    package static let bufferSize = 16 * 1024
    /// At most this many spare buffers are kept.
    package let limit: Int
    private let spare = Mutex<[InboundBuffer]>([])
    private let created = Atomic<Int>(0)

    /// Creates a pool keeping at most `limit` spare buffers.
    package init(limit: Int = 8) {
        self.limit = limit
    }

    /// Number of spare buffers now (for tests).
    package var spareCount: Int { spare.withLock { $0.count } }

    /// Number of buffers this pool had to create because no spare was left (for tests: in a
    /// steady state it stops growing).
    package var createdCount: Int { created.load(ordering: .relaxed) }

    /// Gives `buffer` storage to read into when it has none (a spare one, or a new one).
    @inline(__always)
    package func lend(to buffer: inout InboundBuffer) {
        if buffer.capacity == 0 { buffer = take() }
    }

    /// A spare buffer, or a new one.
    package func take() -> InboundBuffer {
        if let buffer = spare.withLock({ $0.popLast() }) { return buffer }
        created.add(1, ordering: .relaxed)
        return InboundBuffer(capacity: Self.bufferSize)
    }

    /// Takes back the storage of `buffer` when it holds no unread byte; `buffer` is left
    /// empty with no storage. A buffer with unread bytes (a partial message) is left as it is.
    package func reclaim(_ buffer: inout InboundBuffer) {
        guard buffer.isEmpty, buffer.capacity > 0 else { return }
        let storage = buffer
        buffer = InboundBuffer(capacity: 0)
        guard storage.capacity == Self.bufferSize else { return }
        spare.withLock { if $0.count < limit { $0.append(storage) } }
    }
}
