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
        let named = namedByConnection(headers)
        var out = HeaderFields(reservingCapacity: headers.count + extraCapacity, bytes: headers.wireByteCount + 64 * extraCapacity)
        out.appendLines(from: headers) { i in isHopByHop(headers, at: i, named: named) }
        return out
    }

    /// Removes what ``withoutHopByHop(_:extraCapacity:)`` leaves out, in place: a backend's
    /// parsed response head, owned by the balancer alone, loses its hop-by-hop fields without
    /// being copied into a new list. With `keepingFirstContentLength`, the first
    /// `Content-Length` stays (a HEAD or 304 answer: RFC 9110 8.6, the length the GET would have).
    static func removeHopByHop(_ headers: inout HeaderFields, keepingFirstContentLength: Bool = false) {
        headers.removeHopByHop(keepingFirstContentLength: keepingFirstContentLength, named: namedByConnection(headers))
    }

    /// The field names a `Connection` field lists beyond the standard hop-by-hop set (RFC 9110
    /// 7.6.1): usually none (`keep-alive`, `close` and `upgrade` are not field names to strip
    /// beyond the set), so usually no allocation.
    static func namedByConnection(_ headers: HeaderFields) -> [String] {
        var named: [String] = []
        // The length first, inline: most fields are not 10 bytes long (a call per field cost
        // ~30 instructions).
        for i in 0..<headers.count where headers.nameLength(at: i) == 10 && headers.name(at: i, is: "Connection") {
            // The usual values name no field: no list walk for them.
            if headers.value(at: i, equalsFoldingCase: "keep-alive") || headers.value(at: i, equalsFoldingCase: "close") { continue }
            headers.forEachToken(inValueAt: i) { token in
                if !isStrippedByDefault(token) { named.append(String(decoding: token, as: UTF8.self)) }
            }
        }
        return named
    }

    /// Whether field `i` goes: one of ``hopByHop``, `Content-Length`, or named in `named`.
    @inline(__always)
    static func isHopByHop(_ headers: HeaderFields, at i: Int, named: [String]) -> Bool {
        isStrippedByDefault(headers, at: i) || (!named.isEmpty && named.contains { headers.name(at: i, equals: $0) })
    }

    /// Whether `name` is one of ``hopByHop`` or `Content-Length`.
    static func isStrippedByDefault(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { isStrippedByDefault(UnsafeRawBufferPointer($0)) }
    }

    /// Whether the bytes `name` spell one of ``hopByHop`` or `Content-Length`.
    static func isStrippedByDefault(_ name: UnsafeRawBufferPointer) -> Bool {
        HeaderFields.isHopByHopByDefault(name, at: 0, count: name.count)
    }

    /// Whether field `i` of `headers` is one of ``hopByHop`` or `Content-Length`.
    @inline(__always)
    static func isStrippedByDefault(_ headers: HeaderFields, at i: Int) -> Bool {
        headers.isHopByHopByDefault(at: i)
    }

    /// The head to send upstream for a client request from `client`.
    ///
    /// `X-Forwarded-For` gets the client appended. `X-Forwarded-Proto` says how the request
    /// reached us (`http`: we have no TLS listener): a client-sent value is kept only when the
    /// peer is a trusted proxy that may have terminated TLS, so a plain-HTTP client cannot claim
    /// TLS to the backends.
    static func upstreamHead(for head: RequestHead, client: ClientAddress?, peerIsTrustedProxy: Bool) -> RequestHead {
        var asksUpgrade = false
        return upstreamHead(for: head, client: client, peerIsTrustedProxy: peerIsTrustedProxy, asksUpgrade: &asksUpgrade)
    }

    /// ``upstreamHead(for:client:peerIsTrustedProxy:)``, also telling whether the head asks to
    /// upgrade (`Connection: upgrade` with an `Upgrade` offer, kept for the backend): found on
    /// the way, so the balancer need not scan the new head again.
    static func upstreamHead(for head: RequestHead, client: ClientAddress?, peerIsTrustedProxy: Bool,
                             asksUpgrade: inout Bool) -> RequestHead {
        let h = head.headers
        // One pass for what decides the rewrite.
        var upgrade: Int? = nil
        var connectionUpgrade = false, hasForwardedFor = false, hasForwardedProto = false
        for i in 0..<h.count {
            switch h.nameLength(at: i) {
            case 7: if upgrade == nil && h.name(at: i, is: "Upgrade") { upgrade = i }
            case 10: if h.name(at: i, is: "Connection") && h.value(at: i, hasToken: "upgrade") { connectionUpgrade = true }
            case 15: if h.name(at: i, is: "X-Forwarded-For") { hasForwardedFor = true }
            case 17: if h.name(at: i, is: "X-Forwarded-Proto") { hasForwardedProto = true }
            default: break
            }
        }
        let named = namedByConnection(h)
        // A `Connection` field naming X-Forwarded-* (hostile or odd) takes the general path.
        if !named.isEmpty && (hasForwardedFor || hasForwardedProto) {
            let general = upstreamHeadGeneral(for: head, client: client, peerIsTrustedProxy: peerIsTrustedProxy)
            asksUpgrade = UpstreamRequest(head: general).asksUpgrade
            return general
        }
        asksUpgrade = connectionUpgrade && upgrade != nil
        let keepProto = peerIsTrustedProxy && hasForwardedProto
        let priorForwardedFor = client != nil && hasForwardedFor ? h["X-Forwarded-For"] : []
        // Room for what is added below (Connection, Upgrade, X-Forwarded-For, -Proto) and for
        // the upstream client's Host and Content-Length.
        var headers = HeaderFields(reservingCapacity: h.count + 4, bytes: h.wireByteCount + 160)
        headers.appendLines(from: h) { i in
            switch h.nameLength(at: i) {
            // The balancer already answered 100-continue and holds the body.
            case 6: if h.name(at: i, is: "Expect") { return true }
            // Replaced below by one field that appends the client.
            case 15: if client != nil && hasForwardedFor && h.name(at: i, is: "X-Forwarded-For") { return true }
            case 17: if !keepProto && h.name(at: i, is: "X-Forwarded-Proto") { return true }
            default: break
            }
            return isHopByHop(h, at: i, named: named)
        }
        // An upgrade request (WebSocket, RFC 9110 7.8) keeps its Upgrade offer: it is the one
        // hop-by-hop field a proxy passes on when it relays the upgrade.
        if connectionUpgrade, let upgrade {
            headers.appendLine(name: "Connection", value: "Upgrade")
            headers.appendLine(from: h, at: upgrade)
        }
        if let client {
            if priorForwardedFor.isEmpty, let v4 = client.ipv4 {
                headers.appendForwardedFor(ipv4: v4)
            } else {
                let ip = client.description
                headers.add(name: "X-Forwarded-For", value: priorForwardedFor.isEmpty ? ip : priorForwardedFor.joined(separator: ", ") + ", " + ip)
            }
        }
        if !keepProto { headers.appendLine(name: "X-Forwarded-Proto", value: "http") }
        // Built whole rather than copied from `head` and edited: a copy would retain, and the
        // replaced field list release, every stored reference once more.
        return RequestHead(method: head.method, target: head.target, version: .http1_1, headers: headers)
    }

    /// ``upstreamHead(for:client:peerIsTrustedProxy:)`` by edits of the stripped list, for heads
    /// whose `Connection` field names other fields while X-Forwarded-* fields are present.
    static func upstreamHeadGeneral(for head: RequestHead, client: ClientAddress?, peerIsTrustedProxy: Bool) -> RequestHead {
        var out = head
        let upgrade = head.headers.first(name: "Upgrade")
        let asksUpgrade = upgrade != nil && head.headers["Connection"].contains { HTTPConnectionHeader.hasToken($0, "upgrade") }
        out.headers = withoutHopByHop(head.headers, extraCapacity: 4)
        if asksUpgrade, let upgrade {
            out.headers.add(name: "Connection", value: "Upgrade")
            out.headers.add(name: "Upgrade", value: upgrade)
        }
        out.headers.remove(name: "Expect")
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

extension HeaderFields {
    /// Appends `X-Forwarded-For: a.b.c.d` for an IPv4 client (the common case), written as
    /// decimal digits straight into the field list: no `String` for the address.
    mutating func appendForwardedFor(ipv4: UInt32) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 15) { text in
            var n = 0
            for shift in stride(from: 24 as UInt32, through: 0, by: -8) {
                if n > 0 { text[n] = UInt8(ascii: "."); n += 1 }
                let octet = UInt8(truncatingIfNeeded: ipv4 >> shift)
                if octet >= 100 { text[n] = 0x30 + octet / 100; n += 1 }
                if octet >= 10 { text[n] = 0x30 + (octet / 10) % 10; n += 1 }
                text[n] = 0x30 + octet % 10; n += 1
            }
            appendLine(name: "X-Forwarded-For", value: UnsafeRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(text)[0..<n]))
        }
    }
}
