/// An incremental, strict decoder for the chunked transfer coding (RFC 9112 7.1).
///
/// Feed it bytes as they arrive, split anywhere (even one byte at a time). Chunk extensions are
/// validated and ignored; trailer fields are validated like header fields and discarded.
///
/// ```swift
/// var decoder = ChunkedDecoder()
/// var body: [UInt8] = []
/// let wire = Array("5\r\nhello\r\n0\r\n\r\n".utf8)
/// let used = try wire.withUnsafeBytes { try decoder.decode($0, into: &body) }
/// // used == wire.count, body == Array("hello".utf8), decoder.isComplete == true
/// ```
package struct ChunkedDecoder: Sendable {
    private enum State: Sendable {
        case size, ext, sizeLF, data, dataCR, dataLF
        case trailerLineStart, trailerLine, trailerLF, finalLF, complete
    }

    private let limits: HTTPParserLimits
    private var state: State = .size
    private var size: UInt64 = 0
    private var sizeDigits = 0
    private var lineBytes = 0
    private var remaining = 0
    private var trailerBytes = 0
    private var trailerCount = 0
    private var trailerLine: [UInt8] = []

    /// Creates a decoder positioned at the first chunk-size line.
    ///
    /// ```swift
    /// var limits = HTTPParserLimits()
    /// limits.maxTrailerBytes = 1024
    /// var decoder = ChunkedDecoder(limits: limits)
    /// ```
    package init(limits: HTTPParserLimits = HTTPParserLimits()) {
        self.limits = limits
    }

    /// Whether the last chunk and the trailer section (with its final CRLF) have been consumed.
    ///
    /// ```swift
    /// if decoder.isComplete { finishResponse() }
    /// ```
    package var isComplete: Bool { state == .complete }

    /// Consumes bytes from `input`, appending decoded body bytes to `body`. Returns how many input
    /// bytes were consumed. Incremental: may be called with arbitrarily split input (even 1 byte at
    /// a time). Once ``isComplete`` it consumes nothing more: remaining bytes belong to the next
    /// message.
    ///
    /// ```swift
    /// let used = try buffer.withUnsafeBytes { try decoder.decode($0, into: &body) }
    /// buffer.removeFirst(used)
    /// ```
    package mutating func decode(_ input: UnsafeRawBufferPointer, into body: inout [UInt8]) throws(HTTPParseError) -> Int {
        let n = input.count
        var i = 0
        while i < n {
            switch state {
            case .complete:
                return i

            case .size:
                let c = input[i]
                if let digit = Self.hexValue(c) {
                    if sizeDigits == 16 { throw .malformed("chunk size too long") }
                    size = size << 4 | UInt64(digit)
                    sizeDigits += 1
                    try countLineByte()
                } else {
                    if sizeDigits == 0 { throw .malformed("invalid chunk size") }
                    if c == HTTP1Scan.cr {
                        state = .sizeLF
                    } else if c == 0x3B {  // ';'
                        try countLineByte()
                        state = .ext
                    } else if c == HTTP1Scan.lf {
                        throw .malformed("bare LF")
                    } else {
                        throw .malformed("invalid chunk size")
                    }
                }
                i += 1

            case .ext:
                let c = input[i]
                if c == HTTP1Scan.cr {
                    state = .sizeLF
                } else if c == HTTP1Scan.lf {
                    throw .malformed("bare LF")
                } else if (c < 0x20 && c != HTTP1Scan.htab) || c == 0x7F {
                    throw .malformed("invalid character in chunk extension")
                } else {
                    try countLineByte()
                }
                i += 1

            case .sizeLF:
                guard input[i] == HTTP1Scan.lf else { throw .malformed("bare CR") }
                i += 1
                guard size <= UInt64(Int.max) else { throw .malformed("chunk size too large") }
                if size == 0 {
                    state = .trailerLineStart
                } else {
                    remaining = Int(size)
                    state = .data
                }
                size = 0
                sizeDigits = 0
                lineBytes = 0

            case .data:
                let take = min(remaining, n - i)
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[i..<(i + take)]))
                i += take
                remaining -= take
                if remaining == 0 { state = .dataCR }

            case .dataCR:
                guard input[i] == HTTP1Scan.cr else { throw .malformed("chunk data not followed by CRLF") }
                i += 1
                state = .dataLF

            case .dataLF:
                guard input[i] == HTTP1Scan.lf else { throw .malformed("chunk data not followed by CRLF") }
                i += 1
                state = .size

            case .trailerLineStart:
                let c = input[i]
                try countTrailerByte()
                if c == HTTP1Scan.cr {
                    state = .finalLF
                } else if c == HTTP1Scan.lf {
                    throw .malformed("bare LF")
                } else if HTTP1Scan.isOWS(c) {
                    throw .malformed("obsolete line folding")
                } else {
                    trailerLine.removeAll(keepingCapacity: true)
                    trailerLine.append(c)
                    state = .trailerLine
                }
                i += 1

            case .trailerLine:
                // Take the rest of the line in one step.
                var j = i
                while j < n {
                    let c = input[j]
                    if c == HTTP1Scan.cr || c == HTTP1Scan.lf { break }
                    j += 1
                }
                if j > i {
                    trailerBytes += j - i
                    if trailerBytes > limits.maxTrailerBytes { throw .headTooLarge }
                    trailerLine.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[i..<j]))
                    i = j
                }
                if i < n {
                    if input[i] == HTTP1Scan.lf { throw .malformed("bare LF") }
                    try countTrailerByte()
                    state = .trailerLF
                    i += 1
                }

            case .trailerLF:
                guard input[i] == HTTP1Scan.lf else { throw .malformed("bare CR") }
                try countTrailerByte()
                i += 1
                trailerCount += 1
                if trailerCount > limits.maxHeaderCount { throw .headTooLarge }
                let line = trailerLine
                let result = line.withUnsafeBytes { p in
                    Result { () throws(HTTPParseError) in _ = try HTTP1Scan.splitFieldLine(p, 0, p.count) }
                }
                try result.get()
                state = .trailerLineStart

            case .finalLF:
                guard input[i] == HTTP1Scan.lf else { throw .malformed("bare CR") }
                try countTrailerByte()
                i += 1
                state = .complete
                trailerLine = []
                return i
            }
        }
        return i
    }

    @inline(__always)
    private mutating func countLineByte() throws(HTTPParseError) {
        lineBytes += 1
        if lineBytes > limits.maxChunkLineBytes { throw .malformed("chunk-size line too long") }
    }

    @inline(__always)
    private mutating func countTrailerByte() throws(HTTPParseError) {
        trailerBytes += 1
        if trailerBytes > limits.maxTrailerBytes { throw .headTooLarge }
    }

    @inline(__always)
    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c &- 0x30
        case 0x41...0x46: c &- 0x41 &+ 10
        case 0x61...0x66: c &- 0x61 &+ 10
        default: nil
        }
    }
}
