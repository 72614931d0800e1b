/// Writes RESP2: commands as arrays of bulk strings (the only form Redis accepts from clients
/// besides inline commands), and any ``RESPValue`` (for tests and fake servers).
///
/// ```swift
/// var wire: [UInt8] = []
/// RESPEncoder.appendCommand(["SET", "k", "v", "PX", "1000"], to: &wire)
/// // *5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n1000\r\n
/// ```
package enum RESPEncoder {
    /// Appends one command (an array of bulk strings) made of UTF-8 arguments.
    package static func appendCommand(_ arguments: [String], to out: inout [UInt8]) {
        appendHeader(UInt8(ascii: "*"), arguments.count, to: &out)
        for argument in arguments {
            var a = argument
            a.withUTF8 { appendBulk($0, to: &out) }
        }
    }

    /// Appends one command made of binary-safe arguments.
    package static func appendCommand(bytes arguments: [[UInt8]], to out: inout [UInt8]) {
        appendHeader(UInt8(ascii: "*"), arguments.count, to: &out)
        for argument in arguments { argument.withUnsafeBufferPointer { appendBulk($0, to: &out) } }
    }

    /// The wire form of one command.
    package static func command(_ arguments: [String]) -> [UInt8] {
        var out: [UInt8] = []
        appendCommand(arguments, to: &out)
        return out
    }

    /// Appends `value` in RESP2. Simple strings and errors must not contain CR or LF (they are
    /// replaced by spaces so the output is always well formed).
    package static func append(_ value: RESPValue, to out: inout [UInt8]) {
        switch value {
        case .simpleString(let s): appendLine(UInt8(ascii: "+"), s, to: &out)
        case .error(let e): appendLine(UInt8(ascii: "-"), e, to: &out)
        case .integer(let n):
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: String(n).utf8)
            out.append(13); out.append(10)
        case .bulkString(nil): out.append(contentsOf: "$-1\r\n".utf8)
        case .bulkString(let b?): b.withUnsafeBufferPointer { appendBulk($0, to: &out) }
        case .array(nil): out.append(contentsOf: "*-1\r\n".utf8)
        case .array(let items?):
            appendHeader(UInt8(ascii: "*"), items.count, to: &out)
            for item in items { append(item, to: &out) }
        }
    }

    @inline(__always)
    private static func appendHeader(_ type: UInt8, _ count: Int, to out: inout [UInt8]) {
        out.append(type)
        out.append(contentsOf: String(count).utf8)
        out.append(13); out.append(10)
    }

    @inline(__always)
    private static func appendBulk(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        appendHeader(UInt8(ascii: "$"), bytes.count, to: &out)
        out.append(contentsOf: bytes)
        out.append(13); out.append(10)
    }

    private static func appendLine(_ type: UInt8, _ text: String, to out: inout [UInt8]) {
        out.append(type)
        for byte in text.utf8 { out.append(byte == 13 || byte == 10 ? 0x20 : byte) }
        out.append(13); out.append(10)
    }
}
