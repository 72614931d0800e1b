/// One RESP2 reply (the Redis serialization protocol, version 2).
///
/// The five RESP2 types, with the two null forms kept apart (`$-1` and `*-1` are different
/// wire values, and a faithful client does not merge them):
///
/// ```swift
/// let pong: RESPValue = .simpleString("PONG")           // +PONG\r\n
/// let oops: RESPValue = .error("ERR unknown command")   // -ERR unknown command\r\n
/// let n: RESPValue = .integer(42)                        // :42\r\n
/// let v: RESPValue = .bulkString(Array("hi".utf8))       // $2\r\nhi\r\n
/// let missing: RESPValue = .bulkString(nil)              // $-1\r\n
/// let list: RESPValue = .array([n, v])                   // *2\r\n:42\r\n$2\r\nhi\r\n
/// let none: RESPValue = .array(nil)                      // *-1\r\n
/// ```
package enum RESPValue: Sendable, Hashable, CustomStringConvertible {
    /// `+text\r\n`: a short status reply such as `OK` or `PONG` (never contains CR or LF).
    case simpleString(String)
    /// `-text\r\n`: an error reply; the first word is its kind (`ERR`, `NOSCRIPT`, `WRONGTYPE`...).
    case error(String)
    /// `:n\r\n`: a signed 64-bit integer.
    case integer(Int64)
    /// `$len\r\nbytes\r\n`, binary safe; nil for the null bulk string `$-1\r\n`.
    case bulkString([UInt8]?)
    /// `*count\r\n` followed by that many values; nil for the null array `*-1\r\n`.
    case array([RESPValue]?)

    /// A bulk string made of the UTF-8 bytes of `text`.
    package static func bulk(_ text: String) -> RESPValue { .bulkString(Array(text.utf8)) }

    /// The text of a simple string or a (non-null) bulk string decoded as UTF-8; nil otherwise.
    package var string: String? {
        switch self {
        case .simpleString(let s): s
        case .bulkString(let b?): String(decoding: b, as: UTF8.self)
        default: nil
        }
    }

    /// The value of an integer reply, or of a bulk/simple string holding a base-10 integer.
    package var int64: Int64? {
        switch self {
        case .integer(let n): n
        case .bulkString(let b?): Int64(String(decoding: b, as: UTF8.self))
        case .simpleString(let s): Int64(s)
        default: nil
        }
    }

    /// The elements of a non-null array.
    package var elements: [RESPValue]? {
        if case .array(let a?) = self { return a }
        return nil
    }

    /// The message of an error reply.
    package var errorMessage: String? {
        if case .error(let e) = self { return e }
        return nil
    }

    /// Whether this is a null bulk string or a null array.
    package var isNull: Bool {
        switch self {
        case .bulkString(nil), .array(nil): true
        default: false
        }
    }

    /// The wire form of this value (RESP2).
    package var encoded: [UInt8] {
        var out: [UInt8] = []
        RESPEncoder.append(self, to: &out)
        return out
    }

    /// Readable form for logs and test failures: `"PONG"`, `(error) ERR ...`, `(integer) 3`,
    /// `(nil)`, `[...]`.
    package var description: String {
        switch self {
        case .simpleString(let s): return s
        case .error(let e): return "(error) \(e)"
        case .integer(let n): return "(integer) \(n)"
        case .bulkString(nil), .array(nil): return "(nil)"
        case .bulkString(let b?):
            let text = String(decoding: b, as: UTF8.self)
            return Array(text.utf8) == b ? "\"\(text)\"" : "<\(b.count) bytes>"
        case .array(let a?): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        }
    }
}
