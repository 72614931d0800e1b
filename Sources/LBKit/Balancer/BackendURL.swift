/// A backend's base URL, `http://host[:port]` (no path, query or credentials).
///
/// ```swift
/// let url = try BackendURL(parsing: "http://127.0.0.1:5001")
/// url.host  // "127.0.0.1"
/// url.port  // 5001
/// ```
public struct BackendURL: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP literal (IPv6 without brackets).
    public var host: String
    /// TCP port.
    public var port: Int

    /// Parses `text`; throws a message naming what is wrong.
    public init(parsing text: String) throws(BackendURLError) {
        let lower = text.lowercased()
        guard lower.hasPrefix("http://") else {
            if lower.hasPrefix("https://") { throw .init("'\(text)': https backends are not supported (use http://)") }
            throw .init("'\(text)' is not an http URL (expected http://host:port)")
        }
        var rest = Substring(text.dropFirst("http://".count))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty else { throw .init("'\(text)' has no host") }
        guard !rest.contains("/"), !rest.contains("?"), !rest.contains("#") else {
            throw .init("'\(text)': a backend URL cannot have a path or query")
        }
        guard !rest.contains("@") else { throw .init("'\(text)': credentials in backend URLs are not supported") }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw .init("'\(text)': unterminated IPv6 literal") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { throw .init("'\(text)': bad port") }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw .init("'\(text)' has no host") }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_" }) else {
            throw .init("'\(text)': invalid host '\(host)'")
        }
        var port = 80
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw .init("'\(text)': port must be 1-65535") }
            port = p
        }
        self.host = String(host)
        self.port = port
    }

    /// `http://host:port` (brackets around IPv6 hosts).
    public var description: String {
        host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"
    }

    /// `host:port`, the value for a `Host` header.
    public var authority: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// A backend URL that could not be parsed.
public struct BackendURLError: Error, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}
