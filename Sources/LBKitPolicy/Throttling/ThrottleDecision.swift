/// The outcome of ``ThrottleTable/check(_:)`` for one request, with what to tell the client.
///
/// Header choice: ``responseHeaders()`` emits the three-field form of the IETF
/// *RateLimit header fields* draft (draft-ietf-httpapi-ratelimit-headers-03 and earlier):
/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`, each a plain integer. That is
/// what most servers, gateways and client libraries emit and parse today (Envoy, Kong, Traefik
/// plugins, GitHub-style `X-RateLimit-*` consumers); the newer structured pair
/// (`RateLimit: "default";r=..;t=..` with `RateLimit-Policy`) is still a moving draft with few
/// consumers. Throttled responses also carry `Retry-After` (RFC 9110 §10.2.3) in whole seconds.
///
/// ```swift
/// let decision = table.check(client)
/// if decision.isAllowed {
///     forward(request)
/// } else {
///     // [("Retry-After", "1"), ("RateLimit-Limit", "20"), ("RateLimit-Remaining", "0"), ...]
///     respond(status: 429, headers: decision.responseHeaders())
/// }
/// ```
public enum ThrottleDecision: Sendable, Equatable, CustomStringConvertible {
    /// The request may proceed. `limit` is the burst size currently in force (lower while the
    /// client is in the penalty box), `remaining` how many more requests would be admitted right
    /// now, `resetAfter` how long until the full `limit` is available again.
    case allowed(limit: Int, remaining: Int, resetAfter: Duration)

    /// The request must be refused (429). It would be admitted after `retryAfter`; the full
    /// `limit` is available again after `resetAfter`.
    case throttled(retryAfter: Duration, limit: Int, resetAfter: Duration)

    /// Whether the request may proceed.
    public var isAllowed: Bool {
        if case .allowed = self { return true }
        return false
    }

    /// How long the client must wait before its next request can succeed (nil when allowed).
    public var retryAfter: Duration? {
        if case .throttled(let retryAfter, _, _) = self { return retryAfter }
        return nil
    }

    /// The burst size in force for this client.
    public var limit: Int {
        switch self {
        case .allowed(let limit, _, _), .throttled(_, let limit, _): limit
        }
    }

    /// Requests that would be admitted right now (0 when throttled).
    public var remaining: Int {
        if case .allowed(_, let remaining, _) = self { return remaining }
        return 0
    }

    /// Time until the full ``limit`` is available again.
    public var resetAfter: Duration {
        switch self {
        case .allowed(_, _, let reset), .throttled(_, _, let reset): reset
        }
    }

    /// The `Retry-After` value in whole seconds (rounded up, at least 1), nil when allowed.
    public var retryAfterSeconds: Int? {
        retryAfter.map { max(1, Self.secondsRoundedUp($0)) }
    }

    /// Response header fields for this decision, in this order:
    /// `Retry-After` (throttled only), `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`.
    ///
    /// All values are non-negative integers; durations are seconds rounded up, so a client that
    /// waits the advertised time is never refused for being a few milliseconds early.
    public func responseHeaders() -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(4)
        if let seconds = retryAfterSeconds {
            headers.append((name: "Retry-After", value: String(seconds)))
        }
        headers.append((name: "RateLimit-Limit", value: String(limit)))
        headers.append((name: "RateLimit-Remaining", value: String(remaining)))
        headers.append((name: "RateLimit-Reset", value: String(Self.secondsRoundedUp(resetAfter))))
        return headers
    }

    /// `allowed(limit: 20, remaining: 19, resetAfter: 0.1 seconds)`-style text for logs.
    public var description: String {
        switch self {
        case .allowed(let limit, let remaining, let reset):
            "allowed(limit: \(limit), remaining: \(remaining), resetAfter: \(reset))"
        case .throttled(let retry, let limit, let reset):
            "throttled(retryAfter: \(retry), limit: \(limit), resetAfter: \(reset))"
        }
    }

    /// Whole seconds, rounded up; 0 for zero or negative durations.
    static func secondsRoundedUp(_ duration: Duration) -> Int {
        let ns = duration.nanosecondsClamped
        guard ns > 0 else { return 0 }
        return Int(ns / 1_000_000_000 + (ns % 1_000_000_000 == 0 ? 0 : 1))
    }
}

/// What ``ThrottleTable/checkCharging(_:now:)`` did to a client's state: the decision, and what a
/// shared store must tell the other instances about it.
public struct ThrottleCharge: Sendable, Equatable {
    /// The decision for this request.
    public var decision: ThrottleDecision
    /// Nanoseconds the request added to the client's theoretical arrival time: the emission
    /// interval in force (longer while penalised) when allowed, 0 when refused.
    public var charged: UInt64
    /// Whether this request put the client in the penalty box.
    public var penaltyStarted: Bool

    /// Creates a charge.
    public init(decision: ThrottleDecision, charged: UInt64, penaltyStarted: Bool) {
        self.decision = decision
        self.charged = charged
        self.penaltyStarted = penaltyStarted
    }
}
