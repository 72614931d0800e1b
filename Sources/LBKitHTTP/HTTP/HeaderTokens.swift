/// Helpers for the `Connection` header's comma-separated tokens.
package enum HTTPConnectionHeader {
    /// Whether `value` (e.g. `"keep-alive, Upgrade"`) lists `token`, case-insensitively.
    package static func hasToken(_ value: String, _ token: String) -> Bool {
        value.split(separator: ",").contains { part in
            HeaderFields.namesEqual(String(part.trimmingASCIIWhitespace()), token)
        }
    }
}

extension Substring {
    /// The substring without leading and trailing spaces and tabs.
    package func trimmingASCIIWhitespace() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
