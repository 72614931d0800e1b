/// A strict RFC 8259 JSON reader for configuration files.
///
/// Unlike `JSONSerialization` it refuses trailing commas and duplicate object keys (both are
/// accepted silently there, the last duplicate winning), keeps every number's text so that
/// `99999999999999999999` is neither rounded nor wrapped, bounds nesting, and says where each
/// problem is as a JSON path (`backends[1]`) plus line and column.
///
/// ```swift
/// let result = StrictJSON.parse(Array(#"{"a": [1, 2,]}"#.utf8))
/// result.problems   // [("a", "invalid JSON: trailing comma at line 1, column 13")]
/// ```
enum StrictJSON {
    /// A JSON value as written.
    enum Value {
        case null
        case bool(Bool)
        case number(Number)
        case string(String)
        case array([Value])
        case object(Object)
    }

    /// An object's members in file order (keys are unique once parsing succeeded).
    struct Object {
        var members: [(key: String, value: Value)] = []

        var keys: [String] { members.map(\.key) }

        subscript(key: String) -> Value? { members.first { $0.key == key }?.value }
    }

    /// A number with its exact text.
    struct Number {
        /// The number as written, e.g. `1e3`, `-0`, `99999999999999999999`.
        var text: String
        /// Whether the value is a whole number (exactly, whatever its magnitude: `1e3`, `2.50e1`).
        var isIntegral: Bool
        /// The exact value when it is a whole number that fits in `Int`.
        var integer: Int?
        /// The nearest `Double` (infinite when out of range, e.g. `1e400`).
        var double: Double { Double(text) ?? .nan }
    }

    /// A problem: where (`(top level)`, `backends[1]`, `backends[1].url`) and what.
    struct Problem {
        var path: String
        var message: String
    }

    /// The most deeply nested arrays and objects accepted.
    static let maxDepth = 32
    /// The path of the document itself.
    static let rootPath = "(top level)"

    /// Parses `bytes`: the value (nil after a syntax error) and every problem found. A syntax
    /// error ends parsing (one problem); duplicate keys are all reported and the value is still
    /// returned.
    static func parse(_ bytes: [UInt8]) -> (value: Value?, problems: [Problem]) {
        var parser = Parser(bytes: bytes)
        do throws(Parser.Stop) {
            parser.skipWhitespace()
            if parser.at == 0, bytes.starts(with: [0xEF, 0xBB, 0xBF]) {  // a UTF-8 byte order mark
                parser.at = 3
                parser.skipWhitespace()
            }
            let value = try parser.value(path: rootPath, depth: 0)
            parser.skipWhitespace()
            if parser.at < bytes.count { try parser.fail(rootPath, "unexpected text after the top-level value") }
            return (value, parser.problems)
        } catch {
            return (nil, parser.problems)
        }
    }

    /// `parent` + `.key` (or just `key` at the top level).
    static func path(_ parent: String, key: String) -> String { parent == rootPath ? key : parent + "." + key }

    /// `parent` + `[index]`.
    static func path(_ parent: String, index: Int) -> String { (parent == rootPath ? "" : parent) + "[\(index)]" }

    private struct Parser {
        struct Stop: Error {}

        let bytes: [UInt8]
        var at = 0
        var problems: [Problem] = []

        init(bytes: [UInt8]) { self.bytes = bytes }

        /// Records a syntax error at the current position and stops.
        mutating func fail(_ path: String, _ what: String, at offset: Int? = nil) throws(Stop) -> Never {
            let (line, column) = position(of: offset ?? at)
            problems.append(Problem(path: path, message: "invalid JSON: \(what) at line \(line), column \(column)"))
            throw Stop()
        }

        /// Line and column (1-based, columns counted in characters) of byte `offset`.
        func position(of offset: Int) -> (Int, Int) {
            var line = 1
            var column = 1
            for byte in bytes.prefix(offset) {
                if byte == 0x0A { line += 1; column = 1 } else if byte & 0xC0 != 0x80 { column += 1 }
            }
            return (line, column)
        }

        mutating func skipWhitespace() {
            while at < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[at]) { at += 1 }
        }

        var current: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func value(path: String, depth: Int) throws(Stop) -> Value {
            skipWhitespace()
            guard let byte = current else { try fail(path, "unexpected end of file") }
            switch byte {
            case UInt8(ascii: "{"):
                guard depth < StrictJSON.maxDepth else { try fail(path, "nested deeper than \(StrictJSON.maxDepth) levels") }
                return .object(try object(path: path, depth: depth + 1))
            case UInt8(ascii: "["):
                guard depth < StrictJSON.maxDepth else { try fail(path, "nested deeper than \(StrictJSON.maxDepth) levels") }
                return .array(try array(path: path, depth: depth + 1))
            case UInt8(ascii: "\""):
                return .string(try string(path: path))
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .number(try number(path: path))
            default:
                if literal("true") { return .bool(true) }
                if literal("false") { return .bool(false) }
                if literal("null") { return .null }
                try fail(path, "invalid value")
            }
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard at + count <= bytes.count else { return false }
            let matches = word.withUTF8Buffer { w in (0..<count).allSatisfy { bytes[at + $0] == w[$0] } }
            guard matches else { return false }
            // "nullx" is not null followed by garbage we report later; say it here.
            if at + count < bytes.count, Self.isIdentifierByte(bytes[at + count]) { return false }
            at += count
            return true
        }

        static func isIdentifierByte(_ b: UInt8) -> Bool {
            (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || b == 0x5F
        }

        mutating func object(path: String, depth: Int) throws(Stop) -> Object {
            at += 1  // {
            var result = Object()
            var seen: Set<String> = []
            var reported: Set<String> = []
            skipWhitespace()
            if current == UInt8(ascii: "}") { at += 1; return result }
            while true {
                skipWhitespace()
                guard current == UInt8(ascii: "\"") else {
                    if current == UInt8(ascii: "}") && !result.members.isEmpty {
                        try fail(path, "trailing comma", at: lastComma)
                    }
                    try fail(path, current == nil ? "unexpected end of file" : "expected a key in double quotes")
                }
                let key = try string(path: path)
                if !seen.insert(key).inserted, reported.insert(key).inserted {
                    problems.append(Problem(path: path, message: "duplicate key \"\(key)\""))
                }
                skipWhitespace()
                guard current == UInt8(ascii: ":") else { try fail(StrictJSON.path(path, key: key), "expected ':' after the key") }
                at += 1
                let member = try value(path: StrictJSON.path(path, key: key), depth: depth)
                result.members.append((key, member))
                skipWhitespace()
                switch current {
                case UInt8(ascii: ","):
                    lastComma = at
                    at += 1
                case UInt8(ascii: "}"):
                    at += 1
                    return result
                case nil: try fail(path, "unexpected end of file (missing '}')")
                default: try fail(path, "expected ',' or '}'")
                }
            }
        }

        /// Where the last comma between members or elements was (for "trailing comma").
        var lastComma = 0

        mutating func array(path: String, depth: Int) throws(Stop) -> [Value] {
            at += 1  // [
            var result: [Value] = []
            skipWhitespace()
            if current == UInt8(ascii: "]") { at += 1; return result }
            while true {
                skipWhitespace()
                if current == UInt8(ascii: "]") && !result.isEmpty { try fail(path, "trailing comma", at: lastComma) }
                result.append(try value(path: StrictJSON.path(path, index: result.count), depth: depth))
                skipWhitespace()
                switch current {
                case UInt8(ascii: ","):
                    lastComma = at
                    at += 1
                case UInt8(ascii: "]"):
                    at += 1
                    return result
                case nil: try fail(path, "unexpected end of file (missing ']')")
                default: try fail(path, "expected ',' or ']'")
                }
            }
        }

        mutating func string(path: String) throws(Stop) -> String {
            let start = at
            at += 1  // "
            var out: [UInt8] = []
            while true {
                guard let b = current else { try fail(path, "unterminated string", at: start) }
                switch b {
                case UInt8(ascii: "\""):
                    at += 1
                    guard let text = String(validating: out, as: UTF8.self) else { try fail(path, "invalid UTF-8 in string", at: start) }
                    return text
                case UInt8(ascii: "\\"):
                    at += 1
                    guard let e = current else { try fail(path, "unterminated string", at: start) }
                    at += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        let escapeStart = at - 2
                        var scalar = try hex4(path: path)
                        if (0xD800...0xDBFF).contains(scalar) {
                            guard current == UInt8(ascii: "\\"), at + 1 < bytes.count, bytes[at + 1] == UInt8(ascii: "u") else {
                                try fail(path, "unpaired surrogate escape", at: escapeStart)
                            }
                            at += 2
                            let low = try hex4(path: path)
                            guard (0xDC00...0xDFFF).contains(low) else { try fail(path, "unpaired surrogate escape", at: escapeStart) }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(scalar) {
                            try fail(path, "unpaired surrogate escape", at: escapeStart)
                        }
                        guard let s = Unicode.Scalar(scalar) else { try fail(path, "invalid escape", at: escapeStart) }
                        out.append(contentsOf: Array(String(Character(s)).utf8))
                    default:
                        try fail(path, "invalid escape", at: at - 2)
                    }
                default:
                    guard b >= 0x20 else { try fail(path, "control character in string (write it as an escape)") }
                    out.append(b)
                    at += 1
                }
            }
        }

        mutating func hex4(path: String) throws(Stop) -> UInt32 {
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard let b = current else { try fail(path, "unterminated string") }
                let digit: UInt32
                switch b {
                case 0x30...0x39: digit = UInt32(b - 0x30)
                case 0x41...0x46: digit = UInt32(b - 0x41 + 10)
                case 0x61...0x66: digit = UInt32(b - 0x61 + 10)
                default: try fail(path, "invalid \\u escape")
                }
                v = v << 4 | digit
                at += 1
            }
            return v
        }

        mutating func number(path: String) throws(Stop) -> Number {
            let start = at
            var negative = false
            if current == UInt8(ascii: "-") { negative = true; at += 1 }
            func digits() -> ArraySlice<UInt8> {
                let s = at
                while at < bytes.count, (0x30...0x39).contains(bytes[at]) { at += 1 }
                return bytes[s..<at]
            }
            let whole = digits()
            if whole.isEmpty { try fail(path, "invalid number", at: start) }
            if whole.count > 1 && whole.first == UInt8(ascii: "0") { try fail(path, "number with a leading zero", at: start) }
            var fraction: ArraySlice<UInt8> = []
            if current == UInt8(ascii: ".") {
                at += 1
                fraction = digits()
                if fraction.isEmpty { try fail(path, "invalid number (no digit after '.')", at: start) }
            }
            var exponent = 0
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                at += 1
                var exponentNegative = false
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") {
                    exponentNegative = current == UInt8(ascii: "-")
                    at += 1
                }
                let e = digits()
                if e.isEmpty { try fail(path, "invalid number (no digit in the exponent)", at: start) }
                for d in e { exponent = min(exponent * 10 + Int(d - 0x30), 1_000_000_000) }  // saturates: 1e999999999999 is just huge
                if exponentNegative { exponent = -exponent }
            }
            if let next = current, Self.isIdentifierByte(next) || next == UInt8(ascii: ".") {
                try fail(path, "invalid number", at: start)
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            let (integral, integer) = Self.exactInteger(negative: negative, whole: whole, fraction: fraction, exponent: exponent)
            return Number(text: text, isIntegral: integral, integer: integer)
        }

        /// Whether `±whole.fraction × 10^exponent` is a whole number, and its value when it fits in `Int`.
        static func exactInteger(negative: Bool, whole: ArraySlice<UInt8>, fraction: ArraySlice<UInt8>,
                                 exponent: Int) -> (Bool, Int?) {
            var digits = Array(whole) + Array(fraction)
            var scale = exponent - fraction.count
            while let first = digits.first, first == UInt8(ascii: "0") { digits.removeFirst() }
            if digits.isEmpty { return (true, 0) }
            while let last = digits.last, last == UInt8(ascii: "0") {
                digits.removeLast()
                scale += 1
            }
            if scale < 0 { return (false, nil) }
            if digits.count + scale > 19 { return (true, nil) }  // at least 10^19 > Int.max
            var magnitude: UInt64 = 0
            for d in digits + Array(repeating: UInt8(ascii: "0"), count: scale) {
                let (m, o1) = magnitude.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(UInt64(d - 0x30))
                if o1 || o2 { return (true, nil) }
                magnitude = a
            }
            if negative {
                if magnitude == UInt64(Int.max) + 1 { return (true, Int.min) }
                return (true, magnitude <= UInt64(Int.max) ? -Int(magnitude) : nil)
            }
            return (true, magnitude <= UInt64(Int.max) ? Int(magnitude) : nil)
        }
    }
}
