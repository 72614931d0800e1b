/// Helpers for the `Connection` header's comma-separated tokens.
package enum HTTPConnectionHeader {
    /// Whether `value` (e.g. `"keep-alive, Upgrade"`) lists `token`, case-insensitively.
    package static func hasToken(_ value: String, _ token: String) -> Bool {
        var found = false
        forEachToken(value) { part in
            if !found && HeaderFields.namesEqual(String(part), token) { found = true }
        }
        return found
    }

    /// Calls `body` with each non-empty, OWS-trimmed element of the comma-separated list `value`,
    /// in order, without allocating (per-request header path).
    @inline(__always)
    package static func forEachToken(_ value: String, _ body: (Substring) -> Void) {
        var rest = value[...]
        while !rest.isEmpty {
            let end = rest.utf8.firstIndex(of: 0x2C) ?? rest.endIndex
            let token = rest[..<end].trimmingASCIIWhitespace()
            if !token.isEmpty { body(token) }
            if end == rest.endIndex { break }
            rest = rest[rest.utf8.index(after: end)...]
        }
    }
}

extension Substring {
    /// The substring without leading and trailing spaces and tabs.
    package func trimmingASCIIWhitespace() -> Substring {
        let u = utf8
        var start = u.startIndex, end = u.endIndex
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start = u.index(after: start) }
        while end > start {
            let before = u.index(before: end)
            guard u[before] == 0x20 || u[before] == 0x09 else { break }
            end = before
        }
        return self[start..<end]
    }
}
