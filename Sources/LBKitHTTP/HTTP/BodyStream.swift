/// Where the bytes of a streamed body come from: a client connection (request bodies over the
/// buffering limit), an upstream connection (responses), or the embedder's own producer.
///
/// Single consumer: ``nextChunk()`` is called by one task at a time, in order.
package protocol BodySource: AnyObject, Sendable {
    /// The next part of the body; nil at its end.
    nonisolated(nonsending) func nextChunk() async throws(BodyStreamError) -> [UInt8]?
    /// The consumer stops reading: release what backs the stream (a connection that cannot be
    /// reused with unread body bytes is closed). Idempotent; a no-op after the end was read.
    func abandon()
    /// Whether any byte was handed out (a stream that has not started can still be sent elsewhere).
    var hasStarted: Bool { get }
}

/// A body that is not held in memory: read it part by part with ``next()``, with backpressure
/// (nothing more is read from its source until you ask).
///
/// LBKit streams a response body when it is large or of unknown length (server-sent events,
/// long polls, downloads), and a request body beyond the server's buffering limit. Small bodies
/// arrive whole in ``LBRequest/body`` / ``LBResponse/body`` instead.
///
/// ```swift
/// func total(_ stream: LBBodyStream) async throws -> Int {
///     var count = 0
///     while let chunk = try await stream.next() { count += chunk.count }
///     return count
/// }
/// let produced = LBBodyStream(length: nil) { nil }   // an empty stream from a closure
/// ```
public struct LBBodyStream: Sendable {
    package let source: any BodySource
    /// The total length when known in advance (`Content-Length`); nil when the body is chunked or
    /// runs until the connection closes.
    public let length: Int?

    package init(source: any BodySource, length: Int?) {
        self.source = source
        self.length = length
    }

    /// A stream whose parts come from `produce` (called until it returns nil), e.g. to forward a
    /// host framework's request body without collecting it first.
    public init(length: Int?, _ produce: @escaping @Sendable () async throws -> [UInt8]?) {
        self.init(source: ClosureBodySource(produce), length: length)
    }

    /// The next part of the body; nil at its end.
    nonisolated(nonsending) public func next() async throws(BodyStreamError) -> [UInt8]? { try await source.nextChunk() }

    /// Reads the rest of the body into memory; throws ``BodyStreamError`` beyond `limit` bytes.
    nonisolated(nonsending) public func collect(upTo limit: Int) async throws(BodyStreamError) -> [UInt8] {
        var all: [UInt8] = []
        while let chunk = try await next() {
            guard all.count + chunk.count <= limit else {
                abandon()
                throw BodyStreamError("body exceeds \(limit) bytes")
            }
            all.append(contentsOf: chunk)
        }
        return all
    }

    /// Stops reading (the connection behind the stream is closed when bytes remain).
    public func abandon() { source.abandon() }
}

/// A streamed body could not be read to its end (the peer closed or stalled, the framing was
/// invalid, or a limit was exceeded).
public struct BodyStreamError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// ``BodySource`` over a closure.
final class ClosureBodySource: BodySource, @unchecked Sendable {
    // @unchecked: single consumer by contract (see BodySource); `produce` is immutable and
    // `started`/`finished` are touched only by that consumer.
    private let produce: @Sendable () async throws -> [UInt8]?
    private var started = false
    private var finished = false

    init(_ produce: @escaping @Sendable () async throws -> [UInt8]?) { self.produce = produce }

    nonisolated(nonsending) func nextChunk() async throws(BodyStreamError) -> [UInt8]? {
        if finished { return nil }
        do {
            guard let chunk = try await produce() else {
                finished = true
                return nil
            }
            started = true
            return chunk
        } catch {
            finished = true
            throw BodyStreamError("body producer failed: \(error)")
        }
    }

    func abandon() { finished = true }
    var hasStarted: Bool { started }
}

/// The far side of an upgraded connection (`101 Switching Protocols`): after writing the 101
/// head, the server hands over its client socket and the tunnel relays bytes both ways until
/// either side closes or the tunnel stays idle too long.
package protocol ConnectionTunnel: Sendable {
    /// Relays between `client` (whose already-read bytes are `pending`) and the upstream side.
    nonisolated(nonsending) func run(client: Socket, pending: [UInt8], idleTimeout: Duration) async
    /// Closes the upstream side without relaying (the client went away first).
    func cancel()
}
