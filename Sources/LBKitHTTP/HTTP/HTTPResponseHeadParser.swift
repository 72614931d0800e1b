/// A parsed response head together with the framing facts a proxy needs to read the body.
///
/// ```swift
/// if let parsed = try HTTPResponseHeadParser.parse(bytes, requestMethod: "GET", limits: HTTPParserLimits()) {
///     print(parsed.head.status, parsed.framing)  // 200 contentLength(5)
/// }
/// ```
package struct ParsedResponseHead: Sendable {
    /// The status line and header fields.
    ///
    /// ```swift
    /// parsed.head.status  // 200
    /// ```
    package var head: ResponseHead

    /// The number of bytes the head occupies at the start of the buffer, including the final CRLFCRLF.
    ///
    /// ```swift
    /// let bodyStart = parsed.headLength
    /// ```
    package var headLength: Int

    /// How the body is delimited (RFC 9112 6.3): `.none` for a response to HEAD, 1xx, 204, 304
    /// (and 2xx to CONNECT); `.chunked` when the final transfer coding is chunked;
    /// `.contentLength(n)`; otherwise `.untilClose`.
    ///
    /// ```swift
    /// if parsed.framing == .untilClose { readUntilEOF() }
    /// ```
    package var framing: HTTPBodyFraming

    /// Whether the upstream connection may be reused after this response: false for
    /// `.untilClose`, `Connection: close`, HTTP/1.0 without `Connection: keep-alive`,
    /// Transfer-Encoding together with Content-Length, or Transfer-Encoding in HTTP/1.0.
    ///
    /// ```swift
    /// if parsed.keepAlive { pool.release(connection) } else { connection.close() }
    /// ```
    package var keepAlive: Bool
}

/// A strict HTTP/1.x response head parser (RFC 9112), used on the upstream side of the proxy.
///
/// Applies the same field rules as ``HTTPRequestHeadParser`` (except the Host requirement).
/// Leading empty lines are not skipped on responses.
///
/// ```swift
/// let response = Array("HTTP/1.1 204 No Content\r\n\r\n".utf8)
/// let parsed = try response.withUnsafeBytes {
///     try HTTPResponseHeadParser.parse($0, requestMethod: "GET", limits: HTTPParserLimits())
/// }
/// // parsed?.head.status == 204, parsed?.framing == HTTPBodyFraming.none
/// ```
package enum HTTPResponseHeadParser {
    /// Parses the response head at the start of `bytes`. `requestMethod` is the method of the
    /// request this response answers (it decides whether a body follows). Returns nil when the head
    /// is not complete yet (and `bytes.count` is within `limits.maxHeadBytes`); throws when
    /// malformed or too large. `scanFrom` works as in ``HTTPRequestHeadParser/parse(_:limits:scanFrom:)``.
    ///
    /// ```swift
    /// let parsed = try buffer.withUnsafeBytes {
    ///     try HTTPResponseHeadParser.parse($0, requestMethod: "HEAD", limits: limits)
    /// }
    /// // a response to HEAD never has a body: parsed?.framing == HTTPBodyFraming.none
    /// ```
    package static func parse(
        _ bytes: UnsafeRawBufferPointer, requestMethod: String, limits: HTTPParserLimits, scanFrom: Int = 0
    ) throws(HTTPParseError) -> ParsedResponseHead? {
        let p = bytes
        let count = p.count
        if count == 0 { return nil }
        let first = p[0]
        if first == HTTP1Scan.lf { throw .malformed("bare LF") }
        if first == HTTP1Scan.cr {
            if count == 1 { return nil }
            throw p[1] == HTTP1Scan.lf ? .malformed("empty line before status line") : .malformed("bare CR")
        }

        // One pass on the first look, the two-pass verdict on errors: as in
        // `HTTPRequestHeadParser.parse`.
        if scanFrom == 0 {
            do throws(HTTPParseError) {
                let bound = min(count, limits.maxHeadBytes)
                if let parsed = try parseHead(p, bound: bound, requestMethod: requestMethod, limits: limits) { return parsed }
                if count > limits.maxHeadBytes { throw .headTooLarge }
                return nil
            } catch {
                guard let headEnd = try HTTP1Scan.findHeadEnd(p, start: 0, scanFrom: 0, limits: limits) else { return nil }
                return try parseHead(p, bound: headEnd, requestMethod: requestMethod, limits: limits)
            }
        }
        guard let headEnd = try HTTP1Scan.findHeadEnd(p, start: 0, scanFrom: scanFrom, limits: limits) else {
            return nil
        }
        return try parseHead(p, bound: headEnd, requestMethod: requestMethod, limits: limits)
    }

    /// Parses the head whose end lies at or before `bound`: nil when no end is found by then.
    @inline(__always)
    private static func parseHead(
        _ p: UnsafeRawBufferPointer, bound headEnd: Int, requestMethod: String, limits: HTTPParserLimits
    ) throws(HTTPParseError) -> ParsedResponseHead? {
        // Status line: HTTP-version SP 3DIGIT [SP reason-phrase] CRLF.
        guard let lineLF = HTTP1Scan.findLF(p, from: 0, to: headEnd) else { return nil }
        guard lineLF > 0, p[lineLF - 1] == HTTP1Scan.cr else { throw .malformed("bare LF") }
        let lineEnd = lineLF - 1
        guard lineEnd >= 8 else { throw .malformed("invalid status line") }
        let version = try HTTP1Scan.parseVersion(p, 0, 8)
        guard lineEnd >= 12, p[8] == HTTP1Scan.sp,
              HTTP1Scan.isDigit(p[9]), HTTP1Scan.isDigit(p[10]), HTTP1Scan.isDigit(p[11])
        else { throw .malformed("invalid status line") }
        let status = Int(p[9] &- 0x30) * 100 + Int(p[10] &- 0x30) * 10 + Int(p[11] &- 0x30)
        guard (100...599).contains(status) else { throw .malformed("invalid status code") }
        var reasonStart = 12
        if lineEnd > 12 {
            guard p[12] == HTTP1Scan.sp else { throw .malformed("invalid status line") }
            reasonStart = 13
            guard isValidReason(p, reasonStart, lineEnd) else { throw .malformed("invalid reason phrase") }
        }

        var summary = HTTP1FieldSummary()
        // Room for the fields a proxy adds after editing the list in place (its backend header).
        var fields = HeaderFields(reservingCapacity: HTTP1Scan.initialFieldCapacity, bytes: headEnd - lineLF + 64)
        guard let headLength = try HTTP1Scan.parseFields(
            p, from: lineLF + 1, headEnd: headEnd, limits: limits, fields: &fields, summary: &summary) else { return nil }

        var keepAlive = version.minor == 1
            ? !summary.connectionClose
            : summary.connectionKeepAlive && !summary.connectionClose
        if summary.hasTransferEncoding {
            // RFC 9112 6.1 / 6.3: TE with CL, or TE in HTTP/1.0, means faulty framing: close afterwards.
            if summary.contentLength != nil || version.minor == 0 { keepAlive = false }
        }

        let framing: HTTPBodyFraming
        if requestMethod.isMethod("HEAD") || status < 200 || status == 204 || status == 304
            || (status < 300 && requestMethod.isMethod("CONNECT")) {
            framing = .none
        } else if summary.hasTransferEncoding {
            if summary.teChunkedCount > 1 { throw .malformed("chunked applied more than once") }
            if summary.teLastIsChunked {
                // Codings before chunked (e.g. `gzip, chunked`) belong to the body: the client
                // de-chunks and passes them on by name (RFC 9112 6.1), it does not decode them.
                framing = .chunked
            } else {
                framing = .untilClose
                keepAlive = false
            }
        } else if let length = summary.contentLength {
            framing = .contentLength(length)
        } else {
            framing = .untilClose
            keepAlive = false
        }

        let reason = lineEnd - reasonStart == 2 && HTTP1Scan.bytesEqual(p, reasonStart, lineEnd, "OK")
            ? "OK" : HTTP1Scan.makeString(p, reasonStart, lineEnd)
        let head = ResponseHead(status: status, reason: reason, version: version, headers: fields)
        return ParsedResponseHead(head: head, headLength: headLength, framing: framing, keepAlive: keepAlive)
    }

    /// reason-phrase = *( HTAB / SP / VCHAR / obs-text ); obs-text need not be UTF-8.
    private static func isValidReason(_ p: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> Bool {
        var i = s
        while i < e {
            let c = p[i]
            if (c < 0x20 && c != HTTP1Scan.htab) || c == 0x7F { return false }
            i += 1
        }
        return true
    }
}
