/// Header rewriting for a forwarding proxy (RFC 9110 7.6.1): hop-by-hop fields are removed in
/// both directions, `X-Forwarded-For` / `X-Forwarded-Proto` are added on the way in.
enum ForwardingHeaders {
    /// Fields that describe one connection, never forwarded.
    static let hopByHop: [String] = [
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
        "Proxy-Authenticate", "Proxy-Authorization",
    ]

    /// Removes hop-by-hop fields, including those named in `Connection`, and `Content-Length`
    /// (the sender recomputes it from the body it actually sends).
    ///
    /// Per-request hot path (both directions): one pass over the fields, names classified by
    /// length before any byte comparison, and no allocation unless `Connection` names a field
    /// outside the standard hop-by-hop set.
    static func stripHopByHop(_ headers: inout HeaderFields) {
        headers = withoutHopByHop(headers)
    }

    /// `headers` without the fields ``stripHopByHop(_:)`` removes, as a new list with room for
    /// `extraCapacity` more fields: cheaper than copying the shared list and editing the copy.
    static func withoutHopByHop(_ headers: HeaderFields, extraCapacity: Int = 0) -> HeaderFields {
        var named: [String] = []
        for i in 0..<headers.count where headers.name(at: i, is: "Connection") {
            HTTPConnectionHeader.forEachToken(headers.value(at: i)) { token in
                let name = String(token)
                if !isStrippedByDefault(name) { named.append(name) }
            }
        }
        var out = HeaderFields(reservingCapacity: headers.count + extraCapacity, bytes: headers.wireByteCount + 64 * extraCapacity)
        out.appendLines(from: headers) { i in
            isStrippedByDefault(headers, at: i) || named.contains { headers.name(at: i, equals: $0) }
        }
        return out
    }

    /// Whether `name` is one of ``hopByHop`` or `Content-Length`.
    static func isStrippedByDefault(_ name: String) -> Bool {
        isStrippedByDefault(HeaderFields([(name, "")]), at: 0)
    }

    /// Whether field `i` of `headers` is one of ``hopByHop`` or `Content-Length` (its name's
    /// length picks the candidates before any byte is compared).
    @inline(__always)
    static func isStrippedByDefault(_ headers: HeaderFields, at i: Int) -> Bool {
        switch headers.nameLength(at: i) {
        case 2: headers.name(at: i, is: "TE")
        case 7: headers.name(at: i, is: "Trailer") || headers.name(at: i, is: "Upgrade")
        case 10: headers.name(at: i, is: "Connection") || headers.name(at: i, is: "Keep-Alive")
        case 14: headers.name(at: i, is: "Content-Length")
        case 16: headers.name(at: i, is: "Proxy-Connection")
        case 17: headers.name(at: i, is: "Transfer-Encoding")
        case 18: headers.name(at: i, is: "Proxy-Authenticate")
        case 19: headers.name(at: i, is: "Proxy-Authorization")
        default: false
        }
    }

    /// The head to send upstream for a client request from `client`.
    ///
    /// `X-Forwarded-For` gets the client appended. `X-Forwarded-Proto` says how the request
    /// reached us (`http`: we have no TLS listener): a client-sent value is kept only when the
    /// peer is a trusted proxy that may have terminated TLS, so a plain-HTTP client cannot claim
    /// TLS to the backends.
    static func upstreamHead(for head: RequestHead, client: ClientAddress?, peerIsTrustedProxy: Bool) -> RequestHead {
        var out = head
        // An upgrade request (WebSocket, RFC 9110 7.8) keeps its Upgrade offer: it is the one
        // hop-by-hop field a proxy passes on when it relays the upgrade.
        let upgrade = head.headers.first(name: "Upgrade")
        let asksUpgrade = upgrade != nil && head.headers["Connection"].contains { HTTPConnectionHeader.hasToken($0, "upgrade") }
        // Room for what is added below (Connection, Upgrade, X-Forwarded-For, -Proto) and for
        // the upstream client's Host and Content-Length.
        out.headers = withoutHopByHop(head.headers, extraCapacity: 4)
        if asksUpgrade, let upgrade {
            out.headers.add(name: "Connection", value: "Upgrade")
            out.headers.add(name: "Upgrade", value: upgrade)
        }
        out.headers.remove(name: "Expect")  // the balancer already answered 100-continue and holds the body
        if let client {
            let ip = client.description
            if !out.headers.contains(name: "X-Forwarded-For") {
                out.headers.add(name: "X-Forwarded-For", value: ip)
            } else {
                let existing = out.headers["X-Forwarded-For"]
                out.headers.remove(name: "X-Forwarded-For")
                out.headers.add(name: "X-Forwarded-For", value: existing.joined(separator: ", ") + ", " + ip)
            }
        }
        if !peerIsTrustedProxy || !out.headers.contains(name: "X-Forwarded-Proto") {
            out.headers.replaceOrAdd(name: "X-Forwarded-Proto", value: "http")
        }
        out.version = .http1_1
        return out
    }
}
