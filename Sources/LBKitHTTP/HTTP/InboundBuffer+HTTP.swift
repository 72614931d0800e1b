/// HTTP parsing straight from a connection's read buffer: shared by the server (requests) and the
/// client (responses). Each consumes what it parsed and leaves the rest for the next message.
extension InboundBuffer {
    /// Parses a request head from the unread bytes; consumes it when complete, nil while incomplete.
    mutating func parseRequestHead(limits: HTTPParserLimits, scanFrom: Int) throws(HTTPParseError) -> ParsedRequestHead? {
        let parsed = try withReadableBytes { (bytes) throws(HTTPParseError) in
            try HTTPRequestHeadParser.parse(bytes, limits: limits, scanFrom: scanFrom)
        }
        if let length = parsed?.headLength { consume(length) }  // `if let parsed` copied the head
        return parsed
    }

    /// Parses a response head (to a `method` request); consumes it when complete, nil while incomplete.
    mutating func parseResponseHead(method: String, limits: HTTPParserLimits, scanFrom: Int) throws(HTTPParseError) -> ParsedResponseHead? {
        let parsed = try withReadableBytes { (bytes) throws(HTTPParseError) in
            try HTTPResponseHeadParser.parse(bytes, requestMethod: method, limits: limits, scanFrom: scanFrom)
        }
        if let parsed { consume(parsed.headLength) }
        return parsed
    }

    /// Feeds the unread bytes to `decoder`, appending body bytes to `body` and consuming what the
    /// decoder used (everything until the end of the chunked body).
    mutating func decodeChunked(_ decoder: inout ChunkedDecoder, into body: inout [UInt8]) throws(HTTPParseError) {
        let consumed = try withReadableBytes { (bytes) throws(HTTPParseError) in
            try decoder.decode(bytes, into: &body)
        }
        consume(consumed)
    }
}
