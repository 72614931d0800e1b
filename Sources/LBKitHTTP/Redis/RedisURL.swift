/// Where a Redis server is and how to log in: `redis://[[user]:password@]host[:port][/db]`.
///
/// ```swift
/// let url = try RedisURL(parsing: "redis://:s3cret@10.0.0.5:6380/2")
/// url.host       // "10.0.0.5"
/// url.port       // 6380
/// url.password   // "s3cret"  (sent with AUTH after connecting)
/// url.database   // 2         (sent with SELECT)
/// url.description   // "redis://:***@10.0.0.5:6380/2": the password never appears in logs
/// ```
///
/// The port defaults to 6379 and the database to 0. User and password may be percent-encoded
/// (`%40` for `@`). A user name without a password, `rediss://` (TLS), paths beyond the
/// database number and query strings are refused with a message naming the problem.
public struct RedisURL: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP literal (IPv6 without brackets).
    public var host: String
    /// TCP port (default 6379).
    public var port: Int
    /// ACL user for `AUTH user password` (Redis 6+); nil = `AUTH password` (the default user).
    public var username: String?
    /// Password sent with `AUTH`; nil = no AUTH.
    public var password: String?
    /// Database selected with `SELECT` (0 = none sent).
    public var database: Int

    /// Largest database number accepted.
    public static let maxDatabase = 65_535

    /// A URL from its parts.
    public init(host: String, port: Int = 6379, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
    }

    /// Parses `text`; the error says what is wrong (without repeating any password).
    public init(parsing text: String) throws(RedisURLError) {
        let lower = text.lowercased()
        if lower.hasPrefix("rediss://") { throw RedisURLError("TLS (rediss://) is not supported; use redis://") }
        guard lower.hasPrefix("redis://") else { throw RedisURLError("not a redis URL (expected redis://host:port[/db])") }
        var rest = Substring(text.dropFirst("redis://".count))
        guard !rest.contains("?"), !rest.contains("#") else { throw RedisURLError("a redis URL cannot have a query or fragment") }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let dbText = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !dbText.isEmpty {
                guard dbText.allSatisfy({ $0.isASCII && $0.isNumber }), let db = Int(dbText), db <= Self.maxDatabase,
                      dbText.count == 1 || !dbText.hasPrefix("0")
                else { throw RedisURLError("database must be an integer in 0...\(Self.maxDatabase), got '\(dbText)'") }
                database = db
            }
        }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            guard let colon = userinfo.firstIndex(of: ":") else {
                throw RedisURLError("credentials must be ':password@' or 'user:password@'")
            }
            let user = String(userinfo[..<colon])
            let pass = String(userinfo[userinfo.index(after: colon)...])
            guard let decodedUser = Self.percentDecoded(user), let decodedPass = Self.percentDecoded(pass) else {
                throw RedisURLError("bad percent-encoding in the credentials")
            }
            guard !decodedPass.isEmpty else { throw RedisURLError("empty password (leave out the '@' part for no AUTH)") }
            username = decodedUser.isEmpty ? nil : decodedUser
            password = decodedPass
        }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw RedisURLError("unterminated IPv6 literal") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty { throw RedisURLError("bad port") }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw RedisURLError("no host (expected redis://host:port)") }
        guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_") }) else {
            throw RedisURLError("invalid host '\(host)'")
        }
        var port = 6379
        if let portText {
            guard portText.allSatisfy({ $0.isASCII && $0.isNumber }), let p = Int(portText), (1...65535).contains(p) else {
                throw RedisURLError("port must be 1-65535, got '\(portText)'")
            }
            port = p
        }
        self.init(host: String(host), port: port, username: username, password: password, database: database)
    }

    /// `redis://host:port/db` with `:***@` in place of any password.
    public var description: String {
        let authority = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        let credentials = password == nil ? "" : "\(username ?? ""):***@"
        return "redis://\(credentials)\(authority)/\(database)"
    }

    private static func percentDecoded(_ text: String) -> String? {
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%") {
                guard i + 2 < bytes.count, let v = UInt8(String(decoding: bytes[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) else { return nil }
                out.append(v)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }
}

/// A `redis://` URL that could not be parsed.
public struct RedisURLError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong, one line.
    public var message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}
