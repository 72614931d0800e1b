/// Why a RESP2 reply was rejected. After any of these the connection is out of step with the
/// server and must be closed.
package enum RESPParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The first byte of a value is not one of `+ - : $ *` (RESP3 types are refused too).
    case badTypeByte(UInt8)
    /// An integer reply, bulk length or array count that is not a canonical base-10 integer
    /// (`-?[1-9][0-9]*` or `0`, fitting in 64 bits; `-1` only as a null length).
    case badInteger(String)
    /// A line not ended by CR LF (a bare LF, a CR followed by something else), or a bulk
    /// string whose payload is not followed by CR LF.
    case missingCRLF
    /// A line longer than ``RESPParser/Limits/maxLineBytes``.
    case lineTooLong(limit: Int)
    /// A bulk string longer than ``RESPParser/Limits/maxBulkBytes``.
    case bulkTooLong(length: Int, limit: Int)
    /// An array with more than ``RESPParser/Limits/maxArrayCount`` elements.
    case arrayTooLong(count: Int, limit: Int)
    /// Arrays nested deeper than ``RESPParser/Limits/maxDepth``.
    case tooDeep(limit: Int)
    /// One reply with more than ``RESPParser/Limits/maxReplyElements`` values in all.
    case tooManyElements(limit: Int)

    package var description: String {
        switch self {
        case .badTypeByte(let b): "unexpected RESP type byte 0x\(String(b, radix: 16, uppercase: true))"
        case .badInteger(let text): "not a RESP integer: '\(text)'"
        case .missingCRLF: "missing CRLF"
        case .lineTooLong(let limit): "line longer than \(limit) bytes"
        case .bulkTooLong(let length, let limit): "bulk string of \(length) bytes (limit \(limit))"
        case .arrayTooLong(let count, let limit): "array of \(count) elements (limit \(limit))"
        case .tooDeep(let limit): "arrays nested deeper than \(limit)"
        case .tooManyElements(let limit): "reply with more than \(limit) values"
        }
    }
}

/// A strict, incremental RESP2 reply parser over an ``InboundBuffer``.
///
/// Feed it whatever arrived and call ``next(from:)`` until it returns nil; it consumes complete
/// lines and bulk payloads as soon as they are in the buffer and keeps partially received
/// arrays in its own state, so it resumes at any split point (a reply split over many reads
/// parses exactly like the same bytes in one read) and never rescans bytes it has consumed.
///
/// ```swift
/// var parser = RESPParser()
/// var buffer = InboundBuffer()
/// buffer.append(Array("*2\r\n:1\r\n$3\r\nf".utf8))
/// try parser.next(from: &buffer)            // nil: incomplete
/// buffer.append(Array("oo\r\n".utf8))
/// try parser.next(from: &buffer)            // .array([.integer(1), .bulkString("foo")])
/// ```
///
/// Strictness: type bytes other than `+ - : $ *` are refused; integers, lengths and counts are
/// canonical decimals (no `+`, no leading zeros, no `-0`, 64-bit range; `-1` only as the null
/// length or count); every line ends in CR LF (a bare LF or a lone CR is refused) and so does
/// every bulk payload; lengths, counts, nesting and the values of one reply are bounded by
/// ``Limits``. After an error the parser keeps throwing it: the connection must be closed.
package struct RESPParser: Sendable {
    /// Bounds on what one reply may contain.
    package struct Limits: Sendable, Equatable {
        /// Longest line (type byte, content; without CR LF): simple strings, errors, headers.
        package var maxLineBytes = 64 * 1024
        /// Largest bulk string payload.
        package var maxBulkBytes = 64 * 1024 * 1024
        /// Most elements of one array.
        package var maxArrayCount = 1 << 20
        /// Deepest nesting of arrays with elements (an empty or null array opens no level).
        package var maxDepth = 32
        /// Most values (at every level) in one reply.
        package var maxReplyElements = 1 << 22

        package init() {}
    }

    private struct Frame: Sendable {
        var remaining: Int
        var items: [RESPValue]
    }

    package let limits: Limits
    private var stack: [Frame] = []
    /// The payload length of the bulk string whose header was consumed, or -1.
    private var bulkLength = -1
    /// Bytes of the current line already scanned without finding its CR.
    private var scanned = 0
    /// Values in the reply being parsed.
    private var elements = 0
    private var failure: RESPParseError?

    package init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Whether a reply has been partly consumed (more bytes are needed to finish it).
    package var isMidReply: Bool { !stack.isEmpty || bulkLength >= 0 || scanned > 0 }

    /// The next complete reply, consuming its bytes; nil when the buffer holds no complete reply
    /// yet (the bytes of a partial reply are consumed as far as possible and remembered).
    package mutating func next(from buffer: inout InboundBuffer) throws(RESPParseError) -> RESPValue? {
        if let failure { throw failure }
        do throws(RESPParseError) {
            while true {
                guard let value = try step(&buffer) else { return nil }
                if let reply = complete(value) { return reply }
            }
        } catch {
            failure = error
            throw error
        }
    }

    /// Parses one value (nil when it needs more bytes); an array header with elements pushes a
    /// frame and parses on.
    private mutating func step(_ buffer: inout InboundBuffer) throws(RESPParseError) -> RESPValue? {
        while true {
            if bulkLength >= 0 {
                let n = bulkLength
                guard buffer.readableCount >= n + 2 else { return nil }
                let terminated = buffer.withReadableBytes { $0[n] == 13 && $0[n + 1] == 10 }
                guard terminated else { throw .missingCRLF }
                let payload = buffer.take(n)
                buffer.consume(2)
                bulkLength = -1
                return .bulkString(payload)
            }
            guard let (type, content) = try line(&buffer) else { return nil }
            try countElement()
            switch type {
            case UInt8(ascii: "+"): return .simpleString(String(decoding: content, as: UTF8.self))
            case UInt8(ascii: "-"): return .error(String(decoding: content, as: UTF8.self))
            case UInt8(ascii: ":"): return .integer(try Self.integer(content))
            case UInt8(ascii: "$"):
                let length = try Self.length(content)
                if length < 0 { return .bulkString(nil) }
                guard length <= limits.maxBulkBytes else { throw .bulkTooLong(length: length, limit: limits.maxBulkBytes) }
                bulkLength = length
            case UInt8(ascii: "*"):
                let count = try Self.length(content)
                if count < 0 { return .array(nil) }
                if count == 0 { return .array([]) }
                guard count <= limits.maxArrayCount else { throw .arrayTooLong(count: count, limit: limits.maxArrayCount) }
                guard stack.count < limits.maxDepth else { throw .tooDeep(limit: limits.maxDepth) }
                var items: [RESPValue] = []
                items.reserveCapacity(min(count, 1024))
                stack.append(Frame(remaining: count, items: items))
            default:
                throw .badTypeByte(type)  // unreachable: line() checks the type byte
            }
        }
    }

    /// Adds a finished value to the innermost open array; returns the whole reply once the
    /// outermost value is complete.
    private mutating func complete(_ value: RESPValue) -> RESPValue? {
        var v = value
        while !stack.isEmpty {
            let last = stack.count - 1
            stack[last].items.append(v)
            stack[last].remaining -= 1
            guard stack[last].remaining == 0 else { return nil }
            v = .array(stack.removeLast().items)
        }
        elements = 0
        return v
    }

    private mutating func countElement() throws(RESPParseError) {
        elements += 1
        if elements > limits.maxReplyElements { throw .tooManyElements(limit: limits.maxReplyElements) }
    }

    /// The next CR LF-terminated line as (type byte, content), consumed; nil when incomplete.
    private mutating func line(_ buffer: inout InboundBuffer) throws(RESPParseError) -> (UInt8, [UInt8])? {
        let available = buffer.readableCount
        guard available > 0 else { return nil }
        let maxLine = limits.maxLineBytes
        let start = scanned
        let found: Result<Int?, RESPParseError> = buffer.withReadableBytes { bytes in
            switch bytes[0] {
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "$"), UInt8(ascii: "*"): break
            default: return .failure(.badTypeByte(bytes[0]))
            }
            var i = max(start, 1)
            // The line's content may be at most maxLine bytes; its CR may follow at index maxLine.
            let end = min(available, maxLine + 1)
            while i < end {
                let b = bytes[i]
                if b == 13 {
                    if i + 1 >= available { return .success(nil) }  // CR seen, LF not yet
                    return bytes[i + 1] == 10 ? .success(i) : .failure(.missingCRLF)
                }
                if b == 10 { return .failure(.missingCRLF) }
                i += 1
            }
            if end == maxLine + 1 { return .failure(.lineTooLong(limit: maxLine)) }
            return .success(nil)
        }
        guard let cr = try found.get() else {
            // Resume after what was scanned (but re-examine a trailing CR once its LF arrives).
            scanned = max(1, available - 1)
            return nil
        }
        scanned = 0
        let lineBytes = buffer.take(cr)
        buffer.consume(2)
        return (lineBytes[0], Array(lineBytes[1...]))
    }

    /// A canonical signed 64-bit decimal.
    static func integer(_ text: [UInt8]) throws(RESPParseError) -> Int64 {
        let bad = RESPParseError.badInteger(String(decoding: text.prefix(32), as: UTF8.self))
        var digits = text[...]
        let negative = digits.first == UInt8(ascii: "-")
        if negative { digits = digits.dropFirst() }
        guard let first = digits.first, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { throw bad }
        if first == 48 && (digits.count > 1 || negative) { throw bad }  // leading zero, "-0"
        var value: Int64 = 0
        for d in digits {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = negative ? m.subtractingReportingOverflow(Int64(d - 48)) : m.addingReportingOverflow(Int64(d - 48))
            if o1 || o2 { throw bad }
            value = s
        }
        return value
    }

    /// A bulk length or array count: `-1` (null) or a canonical non-negative decimal.
    static func length(_ text: [UInt8]) throws(RESPParseError) -> Int {
        let n = try integer(text)
        guard n >= -1 else {
            throw .badInteger(String(decoding: text.prefix(32), as: UTF8.self))
        }
        return Int(n)
    }
}
