/// A parsed request head together with the framing facts a server needs to read the body.
///
/// ```swift
/// if let parsed = try HTTPRequestHeadParser.parse(bytes, limits: HTTPParserLimits()) {
///     print(parsed.head.method, parsed.head.target)  // GET /index.html
///     buffer.removeFirst(parsed.headLength)           // the body (if any) starts here
/// }
/// ```
package struct ParsedRequestHead: Sendable {
    /// The request line and header fields.
    ///
    /// ```swift
    /// parsed.head.headers.first(name: "host")  // "example.com"
    /// ```
    package var head: RequestHead

    /// The number of bytes the head occupies at the start of the buffer, including any skipped
    /// leading empty lines and the final CRLFCRLF.
    ///
    /// ```swift
    /// let bodyStart = parsed.headLength
    /// ```
    package var headLength: Int

    /// How the body is delimited: `.none`, `.contentLength(n)` or `.chunked` (never `.untilClose`).
    ///
    /// ```swift
    /// if case .contentLength(let n) = parsed.framing { remaining = n }
    /// ```
    package var framing: HTTPBodyFraming

    /// Whether the connection may carry another request: HTTP/1.1 unless `Connection: close`;
    /// HTTP/1.0 only with `Connection: keep-alive` (and no `close`).
    ///
    /// ```swift
    /// if !parsed.keepAlive { closeAfterResponse = true }
    /// ```
    package var keepAlive: Bool

    /// Whether the client waits for an interim `100 Continue`: an HTTP/1.1 request carrying
    /// `Expect: 100-continue` (case-insensitive). An HTTP/1.0 client's expectation is ignored
    /// (RFC 9110 10.1.1: it cannot understand a 1xx response); the field stays in the headers.
    ///
    /// ```swift
    /// if parsed.expectsContinue { send("HTTP/1.1 100 Continue\r\n\r\n") }
    /// ```
    package var expectsContinue: Bool
}

/// A strict, allocation-light HTTP/1.x request head parser (RFC 9112 / RFC 9110).
///
/// It rejects every ambiguity that could let a front end and a back end disagree on message
/// boundaries (request smuggling): bare CR or LF, obs-fold, whitespace before the colon,
/// Content-Length together with Transfer-Encoding, conflicting Content-Length values,
/// Transfer-Encoding whose final coding is not `chunked`, and so on.
///
/// ```swift
/// let request = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
/// let parsed = try request.withUnsafeBytes {
///     try HTTPRequestHeadParser.parse($0, limits: HTTPParserLimits())
/// }
/// // parsed?.head.method == "GET", parsed?.framing == HTTPBodyFraming.none
/// ```
package enum HTTPRequestHeadParser {
    /// Parses the request head at the start of `bytes`. Returns nil when the head is not complete
    /// yet (and `bytes.count` is still within `limits.maxHeadBytes`); throws when malformed or too
    /// large. Up to 8 empty lines (CRLF) before the request line are skipped (RFC 9112 2.2).
    ///
    /// `scanFrom` lets a caller that already scanned a prefix (on an earlier partial read) resume
    /// the search for the end of the head without rescanning: pass the previous `bytes.count`
    /// (the parser backs up 3 bytes itself).
    ///
    /// ```swift
    /// var scanned = 0
    /// while true {
    ///     let parsed = try buffer.withUnsafeBytes {
    ///         try HTTPRequestHeadParser.parse($0, limits: limits, scanFrom: scanned)
    ///     }
    ///     if let parsed { handle(parsed); break }
    ///     scanned = buffer.count
    ///     buffer += try read()
    /// }
    /// ```
    package static func parse(
        _ bytes: UnsafeRawBufferPointer, limits: HTTPParserLimits, scanFrom: Int = 0
    ) throws(HTTPParseError) -> ParsedRequestHead? {
        let p = bytes
        let count = p.count

        // Skip a few leading empty lines (RFC 9112 2.2). Only bytes within the head limit are
        // looked at, so the verdict never depends on how much past the limit has arrived
        // (found by fuzzing: with a limit under 18 bytes one read gave 400, two reads 431).
        var start = 0
        var emptyLines = 0
        let visible = min(count, limits.maxHeadBytes)
        while start < visible {
            let b = p[start]
            if b == HTTP1Scan.cr {
                if start + 1 >= visible {
                    if count > limits.maxHeadBytes { throw .headTooLarge }
                    return nil
                }
                guard p[start + 1] == HTTP1Scan.lf else { throw .malformed("bare CR") }
                start += 2
                emptyLines += 1
                if emptyLines > HTTP1Scan.maxLeadingEmptyLines {
                    throw .malformed("too many empty lines before request line")
                }
            } else if b == HTTP1Scan.lf {
                throw .malformed("bare LF")
            } else {
                break
            }
        }
        if start >= visible {
            if count > limits.maxHeadBytes { throw .headTooLarge }
            return nil
        }

        // On the first look at these bytes (`scanFrom` 0) the head is parsed line by line as its
        // lines are found, with no separate search for its end: a head nearly always arrives
        // whole, and one pass over it is cheaper than two. When that finds no end, the caller
        // waits for more and later looks use `findHeadEnd` from where it stopped (so a head
        // trickling in is not parsed again and again). When it finds an error, the verdict is
        // the one the two-pass parse gives, whatever the split of the bytes into reads.
        if scanFrom == 0 {
            do throws(HTTPParseError) {
                if let parsed = try parseHead(p, start: start, bound: visible, limits: limits) { return parsed }
                if count > limits.maxHeadBytes { throw .headTooLarge }
                return nil
            } catch {
                guard let headEnd = try HTTP1Scan.findHeadEnd(p, start: start, scanFrom: 0, limits: limits) else { return nil }
                return try parseHead(p, start: start, bound: headEnd, limits: limits)
            }
        }
        guard let headEnd = try HTTP1Scan.findHeadEnd(p, start: start, scanFrom: scanFrom, limits: limits) else {
            return nil
        }
        return try parseHead(p, start: start, bound: headEnd, limits: limits)
    }

    /// Parses the head starting at `start` (past leading empty lines) whose end lies at or before
    /// `bound`: nil when no end is found by then.
    @inline(__always)
    private static func parseHead(
        _ p: UnsafeRawBufferPointer, start: Int, bound headEnd: Int, limits: HTTPParserLimits
    ) throws(HTTPParseError) -> ParsedRequestHead? {
        // Request line: method SP request-target SP HTTP-version CRLF.
        guard let lineLF = HTTP1Scan.findLF(p, from: start, to: headEnd) else { return nil }
        guard p[lineLF - 1] == HTTP1Scan.cr else { throw .malformed("bare LF") }
        let lineEnd = lineLF - 1

        var i = start
        while i < lineEnd && HTTP1Scan.isToken(p[i]) { i += 1 }
        if i == start { throw .malformed("invalid method") }
        guard i < lineEnd, p[i] == HTTP1Scan.sp else {
            throw i < lineEnd ? .malformed("invalid character in method") : .malformed("invalid request line")
        }
        let methodEnd = i
        let targetStart = i + 1
        let targetEnd = HTTP1Scan.firstNonVisible(p, from: targetStart, to: lineEnd)
        if targetEnd == targetStart { throw .malformed("invalid request target") }
        guard targetEnd < lineEnd else { throw .malformed("invalid request line") }
        guard p[targetEnd] == HTTP1Scan.sp else { throw .malformed("invalid character in request target") }
        let version = try HTTP1Scan.parseVersion(p, targetEnd + 1, lineEnd)

        // Header fields.
        var summary = HTTP1FieldSummary()
        var fields = HeaderFields(reservingCapacity: HTTP1Scan.initialFieldCapacity, bytes: headEnd - lineLF + 16)
        guard let headLength = try HTTP1Scan.parseFields(
            p, from: lineLF + 1, headEnd: headEnd, limits: limits, fields: &fields, summary: &summary) else { return nil }

        if summary.hostCount == 0 && version.minor == 1 { throw .malformed("missing Host") }
        if summary.hostCount > 1 { throw .malformed("multiple Host") }
        if summary.hostCount == 1 && !HTTP1Syntax.isValidHost(p, summary.hostValue.lowerBound, summary.hostValue.upperBound) {
            throw .malformed("invalid Host")
        }

        let framing: HTTPBodyFraming
        if summary.hasTransferEncoding {
            if summary.contentLength != nil {
                throw .malformed("Content-Length and Transfer-Encoding together")
            }
            if version.minor == 0 { throw .malformed("Transfer-Encoding in HTTP/1.0 request") }
            if summary.teChunkedCount > 1 { throw .malformed("chunked applied more than once") }
            if !summary.teLastIsChunked { throw .malformed("final transfer coding is not chunked") }
            if summary.teCodingCount > 1 {
                throw .unsupportedTransferCoding(HTTP1Scan.joinedValues(fields, "transfer-encoding"))
            }
            framing = .chunked
        } else if let length = summary.contentLength {
            framing = .contentLength(length)
        } else {
            framing = .none
        }

        let keepAlive = version.minor == 1
            ? !summary.connectionClose
            : summary.connectionKeepAlive && !summary.connectionClose

        let method: String
        switch methodEnd - start {
        case 3 where HTTP1Scan.bytesEqual(p, start, methodEnd, "GET"): method = "GET"
        case 4 where HTTP1Scan.bytesEqual(p, start, methodEnd, "POST"): method = "POST"
        default: method = HTTP1Scan.makeString(p, start, methodEnd)
        }
        let target = String(decoding: UnsafeRawBufferPointer(rebasing: p[targetStart..<targetEnd]), as: UTF8.self)
        let head = RequestHead(method: method, target: target, version: version, headers: fields)
        return ParsedRequestHead(
            head: head, headLength: headLength, framing: framing,
            keepAlive: keepAlive, expectsContinue: summary.expectContinue && version.minor == 1)
    }
}
