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

    /// Creates a buffer with `capacity` bytes of initial space.
    package init(capacity: Int = 16 * 1024) {
        storage = [UInt8](repeating: 0, count: max(capacity, 64))
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
        // Bridge typed throws through withUnsafeBytes (which rethrows untyped).
        let result: Result<R, E> = storage.withUnsafeBytes { raw in
            do throws(E) {
                return .success(try body(UnsafeRawBufferPointer(rebasing: raw[r..<w])))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
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
