// The upstream client's value types: its configuration, the request it sends, the response it
// returns and its error. Plain data with no I/O, kept apart from the exchange (HTTPClient.swift)
// that uses them; moved as is.

import LBKitPolicy
internal import CLBKitShim
import Synchronization

/// Settings of an ``UpstreamClient``.
public struct UpstreamClientConfiguration: Sendable {
    /// How long a TCP connect may take.
    public var connectTimeout: Duration = .seconds(1)
    /// Idle keep-alive connections kept per endpoint per event loop.
    public var maxIdlePerLoop = 128
    /// An idle pooled connection older than this is closed instead of reused.
    public var idleTimeout: Duration = .seconds(30)
    /// A request that must not be replayed (``UpstreamRequest/mayReplay`` false) only reuses a
    /// connection idle for less than this: the longer a connection sat idle, the likelier the
    /// backend is closing it just as we write, and such a request cannot be retried. Backends'
    /// keep-alive timeouts are commonly 2 to 75 s; one second stays clear of all of them.
    public var nonReplayableMaxIdle: Duration = .seconds(1)
    /// Response bodies up to this size are read whole (the connection goes straight back to the
    /// pool); larger ones, chunked ones not yet complete, and read-until-close ones are streamed
    /// (``UpstreamResponse/bodyStream``) with backpressure, so memory never grows with body size.
    public var maxBufferedResponseBytes = 64 * 1024
    /// How long a streamed body may stall (no new byte) before it fails. A stall timeout: a slow
    /// download that keeps progressing is never cut off.
    public var bodyStallTimeout: Duration = .seconds(30)
    /// Largest body ``UpstreamClient/execute(_:to:on:timeout:)`` collects for its caller (the
    /// balancer streams instead and has no such limit).
    public var maxCollectedResponseBytes = 64 * 1024 * 1024
    /// Parser limits for response heads.
    public var limits = HTTPParserLimits()

    /// Creates a configuration with defaults.
    public init() {}
}

/// A request to send upstream: head plus the whole body. The client sets `Content-Length`.
///
/// ```swift
/// let probe = UpstreamRequest(head: RequestHead(method: "GET", target: "/health"))
/// let order = UpstreamRequest(head: RequestHead(method: "POST", target: "/orders"),
///                             body: Array(#"{"item":7}"#.utf8))   // mayReplay == false
/// ```
public struct UpstreamRequest: Sendable {
    /// Method, target, version (sent as HTTP/1.1) and header fields.
    public var head: RequestHead
    /// The body bytes.
    public var body: [UInt8]
    /// A body to stream instead of ``body`` (sent with its `Content-Length` when known,
    /// chunked otherwise). A streamed body can be sent once only: such a request never replays.
    public var bodyStream: LBBodyStream?
    /// Whether the client may send this request a second time after a pooled connection broke
    /// (RFC 9110 9.2.2). Defaults to true for idempotent methods only.
    public var mayReplay: Bool

    /// Creates a request; `mayReplay` defaults to whether the method is idempotent.
    public init(head: RequestHead, body: [UInt8] = [], mayReplay: Bool? = nil) {
        self.head = head
        self.body = body
        self.bodyStream = nil
        self.mayReplay = mayReplay ?? ReplayPolicy.isIdempotent(head.method)
    }

    /// Creates a request whose body is streamed (never replayed).
    public init(head: RequestHead, bodyStream: LBBodyStream) {
        self.head = head
        self.body = []
        self.bodyStream = bodyStream
        self.mayReplay = false
    }

    /// Whether the request asks to switch protocols (`Connection: upgrade` and `Upgrade`).
    public var asksUpgrade: Bool {
        let headers = head.headers
        var upgrade = false, connectionUpgrade = false
        for i in 0..<headers.count {
            switch headers.nameLength(at: i) {
            case 7: if headers.name(at: i, is: "Upgrade") { upgrade = true }
            case 10: if headers.name(at: i, is: "Connection") && headers.value(at: i, hasToken: "upgrade") { connectionUpgrade = true }
            default: break
            }
        }
        return upgrade && connectionUpgrade
    }
}

/// Why an upstream exchange failed, and whether the request may have reached the backend.
public struct UpstreamError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Sendable, Equatable {
        /// TCP connect was refused.
        case connectRefused
        /// TCP connect did not complete in time.
        case connectTimeout
        /// TCP connect failed otherwise.
        case connectFailed(String)
        /// The connection broke (reset or closed) before a complete response.
        case connectionReset
        /// The response did not arrive before the deadline.
        case timedOut
        /// The response was not valid HTTP/1.x.
        case malformedResponse(String)
        /// The request's streamed body failed (the client sending it went away or stalled).
        case requestBodyFailed(String)
        /// The exchange was given up through its ``ExchangeAbortHandle``.
        case aborted
    }

    /// What went wrong.
    public var kind: Kind
    /// False when the request provably never reached the backend (connect failures, a stale pooled
    /// connection): such a request is always safe to send elsewhere.
    public var requestSent: Bool

    /// Creates an error.
    public init(kind: Kind, requestSent: Bool) {
        self.kind = kind
        self.requestSent = requestSent
    }

    public var description: String {
        switch kind {
        case .connectRefused: "connection refused"
        case .connectTimeout: "connect timed out"
        case .connectFailed(let why): "connect failed: \(why)"
        case .connectionReset: "connection reset before a complete response"
        case .timedOut: "response timed out"
        case .malformedResponse(let why): "malformed response: \(why)"
        case .requestBodyFailed(let why): "request body failed: \(why)"
        case .aborted: "aborted"
        }
    }
}

/// A response read from upstream, with the whole body (de-chunked).
public struct UpstreamResponse: Sendable {
    /// Status line and header fields as received.
    public var head: ResponseHead
    /// The body, when streamed (then ``body`` is empty): read it to its end or abandon it, which
    /// returns or closes the connection.
    public var bodyStream: LBBodyStream?
    /// Transfer codings other than chunked applied to the body (e.g. `gzip`), in order.
    public var transferCodings: [String] = []
    /// After `101 Switching Protocols`: the upgraded connection.
    package var tunnel: UpstreamTunnel?
    /// The body bytes when whole.
    public var body: [UInt8]
    /// Whether the connection was reused from the pool.
    public var reusedConnection: Bool

    /// Creates a response with a whole body.
    public init(head: ResponseHead, body: [UInt8], reusedConnection: Bool) {
        self.head = head
        self.body = body
        self.reusedConnection = reusedConnection
    }
}
