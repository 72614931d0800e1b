// A deliberately plain, slow reference model of the rules the fast parsers implement (RFC 9112 /
// RFC 9110 as documented in HTTPRequestHeadParser, HTTPResponseHeadParser and ChunkedDecoder).
// It shares no code with them: lines are cut with firstIndex, characters are checked against sets
// built from the RFC's character lists, UTF-8 is validated by the standard library, numbers are
// folded digit by digit. The targets compare its verdict (accept / incomplete / reject with which
// status) and everything it extracts with the real parsers.
//
// The order of checks follows the parsers' documented order (start line, then each field line in
// turn, then the framing rules), because the status of a rejection depends on which rule fires first.

enum Ref {
    static let cr: UInt8 = 13, lf: UInt8 = 10, sp: UInt8 = 32, htab: UInt8 = 9, colon: UInt8 = 58, comma: UInt8 = 44

    /// RFC 9110 5.6.2 tchar.
    static let tchar: [Bool] = {
        var table = [Bool](repeating: false, count: 256)
        for b in "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8 {
            table[Int(b)] = true
        }
        return table
    }()

    static func isToken(_ s: ArraySlice<UInt8>) -> Bool { !s.isEmpty && s.allSatisfy { tchar[Int($0)] } }

    static func isOWS(_ b: UInt8) -> Bool { b == sp || b == htab }

    static func trimOWS(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var s = s
        while let f = s.first, isOWS(f) { s = s.dropFirst() }
        while let l = s.last, isOWS(l) { s = s.dropLast() }
        return s
    }

    static func lower(_ s: ArraySlice<UInt8>) -> String {
        String(decoding: s.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// Case-insensitive comparison with a lowercase ASCII literal (byte-exact, no Unicode folding).
    static func isCI(_ s: ArraySlice<UInt8>, _ literal: String) -> Bool {
        let l = Array(literal.utf8)
        guard s.count == l.count else { return false }
        return zip(s, l).allSatisfy { ($0 >= 65 && $0 <= 90 ? $0 + 32 : $0) == $1 }
    }

    /// field-value: HTAB, SP, VCHAR, obs-text; obs-text must form valid UTF-8 (the parsers' rule).
    static func isValidFieldValue(_ v: ArraySlice<UInt8>) -> Bool {
        v.allSatisfy { $0 == htab || ($0 >= 0x20 && $0 != 0x7F) } && String(validating: v, as: UTF8.self) != nil
    }

    /// A whole field line (no CRLF): name, then `:`, OWS, value, OWS. nil when invalid.
    static func fieldLine(_ line: ArraySlice<UInt8>) -> (name: ArraySlice<UInt8>, value: ArraySlice<UInt8>)? {
        guard let c = line.firstIndex(of: colon) else { return nil }
        let name = line[line.startIndex..<c]
        let value = trimOWS(line[(c + 1)...])
        guard isToken(name), isValidFieldValue(value) else { return nil }
        return (name, value)
    }

    enum Verdict<T> {
        case incomplete
        case reject(status: Int)
        case accept(T)
    }

    /// Framing facts of a field section, collected field by field.
    struct Facts {
        var hostCount = 0
        /// The first Host value (requests judge it after all fields, as limits come first).
        var hostValue: ArraySlice<UInt8>?
        var contentLength: Int?
        var codings: [String] = []  // every transfer coding, lowercased, in order
        var hasTransferEncoding = false
        var close = false
        var keepAlive = false
        var expectContinue = false

        /// RFC 3986 authority as the parser accepts it: empty; `[IPv6]`; or a reg-name/IPv4 of
        /// unreserved, sub-delim (no comma) and %XX bytes; then optionally `:` and 1-5 digits
        /// of at most 65535. Written separately from the parser's, from the same rules.
        static func validHost(_ v: [UInt8]) -> Bool {
            if v.isEmpty { return true }
            var rest: ArraySlice<UInt8>
            if v[0] == 0x5B {   // [
                guard let close = v.firstIndex(of: 0x5D), close >= 3 else { return false }
                let inside = v[1..<close]
                let allowed = inside.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) || $0 == 58 || $0 == 46 }
                guard allowed, inside.contains(58) else { return false }
                guard ClientAddress(String(decoding: inside, as: UTF8.self)) != nil else { return false }
                rest = v[(close + 1)...]
            } else {
                let colon = v.firstIndex(of: 58) ?? v.count
                let name = v[0..<colon]
                if name.isEmpty { return false }
                var i = name.startIndex
                while i < name.endIndex {
                    let b = name[i]
                    if b == 37 {   // %
                        guard name.endIndex - i >= 3, isHex(name[i + 1]), isHex(name[i + 2]) else { return false }
                        i += 3
                        continue
                    }
                    let unreserved = (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 45 || b == 46 || b == 95 || b == 126
                    let subDelim = [33, 36, 38, 39, 40, 41, 42, 43, 59, 61].contains(b)
                    guard unreserved || subDelim else { return false }
                    i += 1
                }
                rest = v[colon...]
            }
            if rest.isEmpty { return true }
            guard rest.first == 58 else { return false }
            let digits = rest.dropFirst()
            guard (1...5).contains(digits.count), digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return false }
            return digits.reduce(0) { $0 * 10 + Int($1 - 48) } <= 65535
        }

        static func isHex(_ b: UInt8) -> Bool { (b >= 48 && b <= 57) || (b >= 97 && b <= 102) || (b >= 65 && b <= 70) }

        /// Records one accepted field; returns a status when the field itself is invalid.
        mutating func add(name: ArraySlice<UInt8>, value: ArraySlice<UInt8>) -> Int? {
            if isCI(name, "host") {
                hostCount += 1
                if hostValue == nil { hostValue = value }
            }
            if isCI(name, "expect") && isCI(value, "100-continue") { expectContinue = true }
            if isCI(name, "connection") {
                for part in value.split(separator: comma, omittingEmptySubsequences: false) {
                    let t = trimOWS(part)
                    if isCI(t, "close") { close = true } else if isCI(t, "keep-alive") { keepAlive = true }
                }
            }
            if isCI(name, "content-length") {
                for part in value.split(separator: comma, omittingEmptySubsequences: false) {
                    let digits = trimOWS(part)
                    guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return 400 }
                    let n = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
                    if let existing = contentLength, existing != n { return 400 }
                    contentLength = n
                }
            }
            if isCI(name, "transfer-encoding") {
                hasTransferEncoding = true
                for part in value.split(separator: comma, omittingEmptySubsequences: false) {
                    let coding = trimOWS(part)
                    if coding.isEmpty { return 400 }
                    codings.append(lower(coding))
                }
            }
            return nil
        }
    }

    /// Where the head ends (one past the final CRLFCRLF), searching `b[start...]` within the head
    /// limit; every LF before it must follow a CR.
    static func headEnd(_ b: [UInt8], start: Int, limits: HTTPParserLimits) -> Verdict<Int> {
        let end = min(b.count, max(limits.maxHeadBytes, 0))
        var j = start
        while j < end {
            if b[j] == lf {
                if j == start || b[j - 1] != cr { return .reject(status: 400) }
                if j - 3 >= start && b[j - 2] == lf && b[j - 3] == cr { return .accept(j + 1) }
            }
            j += 1
        }
        return b.count > limits.maxHeadBytes ? .reject(status: 431) : .incomplete
    }

    /// The lines of `b[from..<headEnd]` without their CRLF (the last one is the empty line).
    static func lines(_ b: [UInt8], from: Int, to headEnd: Int) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var pos = from
        while pos < headEnd, let nl = b[pos..<headEnd].firstIndex(of: lf) {
            out.append(b[pos..<(nl - 1)])
            pos = nl + 1
        }
        return out
    }

    /// `HTTP/1.0` or `HTTP/1.1`: 400 when not `HTTP/DIGIT.DIGIT`, 505 for other digits.
    static func version(_ v: ArraySlice<UInt8>) -> Verdict<Int> {
        let a = Array(v)
        let digit = { (x: UInt8) in x >= 48 && x <= 57 }
        guard a.count == 8, Array(a[0..<5]) == Array("HTTP/".utf8), digit(a[5]), a[6] == 46, digit(a[7]) else {
            return .reject(status: 400)
        }
        guard a[5] == 49, a[7] == 48 || a[7] == 49 else { return .reject(status: 505) }
        return .accept(Int(a[7] - 48))
    }

    /// Field lines (all but the final empty line): count limit, syntax, per-field facts.
    static func fields(
        _ lines: ArraySlice<ArraySlice<UInt8>>, limits: HTTPParserLimits
    ) -> Verdict<([(ArraySlice<UInt8>, ArraySlice<UInt8>)], Facts)> {
        var fields: [(ArraySlice<UInt8>, ArraySlice<UInt8>)] = []
        var facts = Facts()
        for line in lines {
            if fields.count >= limits.maxHeaderCount { return .reject(status: 431) }
            guard let (name, value) = fieldLine(line) else { return .reject(status: 400) }
            if let status = facts.add(name: name, value: value) { return .reject(status: status) }
            fields.append((name, value))
        }
        return .accept((fields, facts))
    }

    // MARK: Request head

    struct Request {
        var method: ArraySlice<UInt8>
        var target: ArraySlice<UInt8>
        var minor: Int
        var fields: [(ArraySlice<UInt8>, ArraySlice<UInt8>)]
        var framing: HTTPBodyFraming
        var keepAlive: Bool
        var expectsContinue: Bool
        var headLength: Int
    }

    static func request(_ b: [UInt8], limits: HTTPParserLimits) -> Verdict<Request> {
        // Up to 8 leading CRLFs.
        var start = 0
        var empty = 0
        while start < b.count && (b[start] == cr || b[start] == lf) {
            if b[start] == lf { return .reject(status: 400) }
            if start + 1 == b.count { return b.count > limits.maxHeadBytes ? .reject(status: 431) : .incomplete }
            if b[start + 1] != lf { return .reject(status: 400) }
            start += 2
            empty += 1
            if empty > 8 { return .reject(status: 400) }
        }
        if start == b.count { return b.count > limits.maxHeadBytes ? .reject(status: 431) : .incomplete }

        let end: Int
        switch headEnd(b, start: start, limits: limits) {
        case .incomplete: return .incomplete
        case .reject(let s): return .reject(status: s)
        case .accept(let e): end = e
        }
        let all = lines(b, from: start, to: end)
        let line = all[0]

        guard let sp1 = line.firstIndex(of: sp) else { return .reject(status: 400) }
        let method = line[line.startIndex..<sp1]
        guard isToken(method) else { return .reject(status: 400) }
        let rest = line[(sp1 + 1)...]
        guard let sp2 = rest.firstIndex(of: sp) else { return .reject(status: 400) }
        let target = rest[rest.startIndex..<sp2]
        guard !target.isEmpty, target.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else { return .reject(status: 400) }
        let minor: Int
        switch version(rest[(sp2 + 1)...]) {
        case .accept(let m): minor = m
        case .reject(let s): return .reject(status: s)
        case .incomplete: return .incomplete
        }

        let parsedFields: [(ArraySlice<UInt8>, ArraySlice<UInt8>)]
        let facts: Facts
        switch fields(all[1..<(all.count - 1)], limits: limits) {
        case .accept(let (f, x)): (parsedFields, facts) = (f, x)
        case .reject(let s): return .reject(status: s)
        case .incomplete: return .incomplete
        }

        if facts.hostCount == 0 && minor == 1 { return .reject(status: 400) }
        if facts.hostCount > 1 { return .reject(status: 400) }
        if facts.hostCount == 1, let host = facts.hostValue, !Facts.validHost(Array(host)) { return .reject(status: 400) }
        let framing: HTTPBodyFraming
        if facts.hasTransferEncoding {
            if facts.contentLength != nil || minor == 0 { return .reject(status: 400) }
            if facts.codings.filter({ $0 == "chunked" }).count > 1 { return .reject(status: 400) }
            if facts.codings.last != "chunked" { return .reject(status: 400) }
            if facts.codings.count > 1 { return .reject(status: 501) }
            framing = .chunked
        } else if let n = facts.contentLength {
            framing = .contentLength(n)
        } else {
            framing = .none
        }
        let keepAlive = minor == 1 ? !facts.close : facts.keepAlive && !facts.close
        return .accept(Request(
            method: method, target: target, minor: minor, fields: parsedFields, framing: framing,
            keepAlive: keepAlive,
            // RFC 9110 10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request.
            expectsContinue: facts.expectContinue && minor == 1, headLength: end))
    }

    // MARK: Response head

    struct Response {
        var minor: Int
        var status: Int
        var reason: ArraySlice<UInt8>
        var fields: [(ArraySlice<UInt8>, ArraySlice<UInt8>)]
        var framing: HTTPBodyFraming
        var keepAlive: Bool
        var headLength: Int
    }

    static func response(_ b: [UInt8], method: String, limits: HTTPParserLimits) -> Verdict<Response> {
        guard let first = b.first else { return .incomplete }
        if first == lf { return .reject(status: 400) }
        if first == cr { return b.count == 1 ? .incomplete : .reject(status: 400) }
        let end: Int
        switch headEnd(b, start: 0, limits: limits) {
        case .incomplete: return .incomplete
        case .reject(let s): return .reject(status: s)
        case .accept(let e): end = e
        }
        let all = lines(b, from: 0, to: end)
        let line = all[0]
        guard line.count >= 8 else { return .reject(status: 400) }
        let minor: Int
        switch version(line.prefix(8)) {
        case .accept(let m): minor = m
        case .reject(let s): return .reject(status: s)
        case .incomplete: return .incomplete
        }
        let digits = line.dropFirst(9).prefix(3)
        guard line.count >= 12, line[8] == sp, digits.count == 3, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
            return .reject(status: 400)
        }
        let status = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
        guard status >= 100 && status <= 599 else { return .reject(status: 400) }
        var reason = line[12...]
        if !reason.isEmpty {
            guard reason.first == sp else { return .reject(status: 400) }
            reason = reason.dropFirst()
            // reason-phrase = *( HTAB / SP / VCHAR / obs-text ): any byte but CTLs and DEL.
            guard reason.allSatisfy({ $0 == htab || ($0 >= 0x20 && $0 != 0x7F) }) else { return .reject(status: 400) }
        }

        let parsedFields: [(ArraySlice<UInt8>, ArraySlice<UInt8>)]
        let facts: Facts
        switch fields(all[1..<(all.count - 1)], limits: limits) {
        case .accept(let (f, x)): (parsedFields, facts) = (f, x)
        case .reject(let s): return .reject(status: s)
        case .incomplete: return .incomplete
        }

        var keepAlive = minor == 1 ? !facts.close : facts.keepAlive && !facts.close
        if facts.hasTransferEncoding && (facts.contentLength != nil || minor == 0) { keepAlive = false }
        let framing: HTTPBodyFraming
        if method == "HEAD" || status < 200 || status == 204 || status == 304 || (method == "CONNECT" && status < 300) {
            framing = .none
        } else if facts.hasTransferEncoding {
            if facts.codings.filter({ $0 == "chunked" }).count > 1 { return .reject(status: 400) }
            if facts.codings.last == "chunked" {
                // Responses: other codings before chunked are the body's (e.g. gzip); the proxy
                // de-chunks and passes them on, so the framing is chunked whatever precedes it.
                framing = .chunked
            } else {
                framing = .untilClose
                keepAlive = false
            }
        } else if let n = facts.contentLength {
            framing = .contentLength(n)
        } else {
            framing = .untilClose
            keepAlive = false
        }
        return .accept(Response(
            minor: minor, status: status, reason: reason, fields: parsedFields, framing: framing,
            keepAlive: keepAlive, headLength: end))
    }

    // MARK: Chunked body

    enum ChunkedVerdict: Equatable {
        /// The whole body through the final CRLF was read: bytes used and the body.
        case complete(consumed: Int, body: [UInt8])
        /// The input ended first; the data bytes received so far.
        case incomplete(body: [UInt8])
        /// Something in the input breaks the grammar or a limit.
        case error
    }

    /// Decodes a chunked body from the start of `b` (RFC 9112 7.1, with the decoder's limits: at
    /// most 16 hex digits, `maxChunkLineBytes` for size plus extensions, sizes up to Int.max,
    /// trailer lines validated like header fields, `maxTrailerBytes` counting every trailer byte
    /// including CRLFs and the final CRLF, at most `maxHeaderCount` trailer fields). Errors are
    /// reported as soon as the offending byte is present; a trailer line's syntax is checked at its
    /// LF, limits as bytes arrive.
    static func chunked(_ b: [UInt8], limits: HTTPParserLimits) -> ChunkedVerdict {
        var body: [UInt8] = []
        var i = 0
        let n = b.count
        while true {
            // chunk-size [ chunk-ext ] CRLF
            var size: UInt64 = 0
            var digits = 0
            while i < n, let d = hexValue(b[i]) {
                if digits == 16 { return .error }
                size = size << 4 | UInt64(d)
                digits += 1
                if digits > limits.maxChunkLineBytes { return .error }
                i += 1
            }
            if i == n { return .incomplete(body: body) }
            if digits == 0 { return .error }
            var lineBytes = digits
            if b[i] == 0x3B {  // ';' chunk-ext: any bytes but CTLs (HTAB allowed) and DEL, up to CR
                lineBytes += 1
                if lineBytes > limits.maxChunkLineBytes { return .error }
                i += 1
                while i < n && b[i] != cr {
                    let c = b[i]
                    if c == lf || (c < 0x20 && c != htab) || c == 0x7F { return .error }
                    lineBytes += 1
                    if lineBytes > limits.maxChunkLineBytes { return .error }
                    i += 1
                }
                if i == n { return .incomplete(body: body) }
            }
            guard b[i] == cr else { return .error }
            i += 1
            if i == n { return .incomplete(body: body) }
            guard b[i] == lf else { return .error }
            i += 1
            guard size <= UInt64(Int.max) else { return .error }
            if size == 0 { break }
            // chunk-data CRLF
            let available = n - i
            if UInt64(available) < size {
                body += b[i..<n]
                return .incomplete(body: body)
            }
            body += b[i..<(i + Int(size))]
            i += Int(size)
            if i == n { return .incomplete(body: body) }
            guard b[i] == cr else { return .error }
            i += 1
            if i == n { return .incomplete(body: body) }
            guard b[i] == lf else { return .error }
            i += 1
        }
        // trailer-section CRLF
        var trailerBytes = 0
        var trailerCount = 0
        while true {
            if i == n { return .incomplete(body: body) }
            if b[i] == cr {  // the final CRLF
                trailerBytes += 1
                if trailerBytes > limits.maxTrailerBytes { return .error }
                i += 1
                if i == n { return .incomplete(body: body) }
                guard b[i] == lf else { return .error }
                trailerBytes += 1
                if trailerBytes > limits.maxTrailerBytes { return .error }
                return .complete(consumed: i + 1, body: body)
            }
            if b[i] == lf || isOWS(b[i]) { return .error }  // bare LF, obs-fold
            let lineStart = i
            while i < n && b[i] != cr && b[i] != lf {
                trailerBytes += 1
                if trailerBytes > limits.maxTrailerBytes { return .error }
                i += 1
            }
            if i == n { return .incomplete(body: body) }
            if b[i] == lf { return .error }
            let line = b[lineStart..<i]
            trailerBytes += 1  // CR
            if trailerBytes > limits.maxTrailerBytes { return .error }
            i += 1
            if i == n { return .incomplete(body: body) }
            guard b[i] == lf else { return .error }
            trailerBytes += 1
            if trailerBytes > limits.maxTrailerBytes { return .error }
            trailerCount += 1
            if trailerCount > limits.maxHeaderCount { return .error }
            if isOWS(line.first!) || fieldLine(line) == nil { return .error }
            i += 1
        }
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        let text = "0123456789abcdef"
        let lowered = c >= 65 && c <= 90 ? c + 32 : c
        guard let k = text.utf8.firstIndex(of: lowered) else { return nil }
        return UInt8(text.utf8.distance(from: text.utf8.startIndex, to: k))
    }
}
