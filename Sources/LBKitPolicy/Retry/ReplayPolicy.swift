/// Which failed attempts may be sent to another backend (RFC 9110 9.2.2).
///
/// - Never sent (connect refused/timeout, stale pooled connection): always safe to move.
/// - Sent, then a 5xx or a timeout: only idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS, TRACE),
///   requests carrying `Idempotency-Key`, or every method when the operator opted in.
///
/// ```swift
/// let policy = ReplayPolicy(retryNonIdempotent: false)
/// policy.mayReplay(method: "POST", hasIdempotencyKey: false)   // false
/// policy.mayReplay(method: "POST", hasIdempotencyKey: true)    // true
/// policy.mayReplay(method: "GET", hasIdempotencyKey: false)    // true
/// ```
public struct ReplayPolicy: Sendable {
    /// `--retry-non-idempotent`.
    public var retryNonIdempotent: Bool

    /// Creates a policy.
    public init(retryNonIdempotent: Bool) { self.retryNonIdempotent = retryNonIdempotent }

    /// Methods RFC 9110 9.2.2 defines as idempotent.
    public static let idempotentMethods: Set<String> = ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"]

    /// Whether `method` is one of ``idempotentMethods`` (a `switch`, not a set look-up: no string
    /// hashing on the per-request path).
    public static func isIdempotent(_ method: String) -> Bool {
        // By length first: comparing two different strings costs far more than comparing counts.
        switch method.utf8.count {
        case 3: method == "GET" || method == "PUT"
        case 4: method == "HEAD"
        case 5: method == "TRACE"
        case 6: method == "DELETE"
        case 7: method == "OPTIONS"
        default: false
        }
    }

    /// Whether a request that may have reached a backend can be replayed on another.
    ///
    /// `hasIdempotencyKey` is evaluated only when the method alone does not decide (a GET's
    /// fields are not scanned for the key).
    public func mayReplay(method: String, hasIdempotencyKey: @autoclosure () -> Bool) -> Bool {
        retryNonIdempotent || Self.isIdempotent(method) || hasIdempotencyKey()
    }
}
