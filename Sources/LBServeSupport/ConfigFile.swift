import LBKit
import Foundation

// The `lbserve --config FILE.json` reader. Foundation's JSONSerialization is used here because
// this runs once at start-up (and on reload), never on the request path. The schema is
// documented in Docs/Configuration.md; keep the two in sync.

/// One problem found in a configuration file; `description` is e.g.
/// `"config.json: backends[1].url: not an http URL"`.
public struct ConfigFileError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file as it was named (the path given to ``ConfigFile/load(path:base:)``).
    public var file: String
    /// Where in the file: `"timeout_ms"`, `"backends[1].url"`, `"trusted_proxies[0]"`,
    /// `"(top level)"`; empty when the file itself could not be read.
    public var field: String
    /// What is wrong, one line, e.g. `"expected an integer, got a string"`.
    public var message: String

    /// Creates an error.
    public init(file: String, field: String, message: String) {
        self.file = file
        self.field = field
        self.message = message
    }

    /// `<file>: <field>: <message>` (`<file>: <message>` when `field` is empty).
    public var description: String {
        field.isEmpty ? "\(file): \(message)" : "\(file): \(field): \(message)"
    }
}

/// Every problem found in a configuration file (never empty when thrown).
public struct ConfigFileErrors: Error, Sendable, Equatable, CustomStringConvertible {
    /// The problems, in schema order (unknown keys first, then the keys as listed in
    /// Docs/Configuration.md, per-backend problems in backend order).
    public var errors: [ConfigFileError]

    /// Creates the error list.
    public init(_ errors: [ConfigFileError]) { self.errors = errors }

    /// One line per error.
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// What a configuration file produced: the balancer settings plus what
/// ``LoadBalancerConfiguration`` has no place for.
public struct LoadedConfiguration: Sendable {
    /// The balancer settings: the base configuration with every key of the file applied.
    public var balancer: LoadBalancerConfiguration
    /// Per-backend health check paths, parallel to `balancer.backends`; nil = the global
    /// `balancer.healthPath`.
    public var healthPaths: [String?]

    /// Creates a loaded configuration; `healthPaths` defaults to "global path for every backend".
    public init(balancer: LoadBalancerConfiguration, healthPaths: [String?]? = nil) {
        self.balancer = balancer
        self.healthPaths = healthPaths ?? Array(repeating: nil, count: balancer.backends.count)
    }

    /// The health check path in effect for the backend at `index`: its own path if the file gave
    /// one, else the global `balancer.healthPath`.
    public func healthPath(forBackendAt index: Int) -> String {
        if index >= 0, index < healthPaths.count, let path = healthPaths[index] { return path }
        return balancer.healthPath
    }
}

/// Reads `lbserve`'s JSON configuration file (schema in Docs/Configuration.md).
///
/// Every flag has a snake_case key (`--timeout-ms` is `timeout_ms`, `--trusted-proxy` is
/// `trusted_proxies`); `backends` items are URL strings or `{"url", "weight", "health_path"}`
/// objects. Values are checked against the same ranges as the command line, and every problem is
/// reported, not just the first.
///
/// ```swift
/// let loaded = try ConfigFile.load(path: "config.json")
/// loaded.balancer.backends        // [http://10.0.0.1:8080, ...]
/// loaded.balancer.weights         // [3, 1, ...]
/// loaded.healthPaths              // ["/ready", nil, ...]
/// ```
public enum ConfigFile {
    /// The top-level keys, in the order they are applied and reported.
    public static let topLevelKeys = [
        "port", "host", "backends", "timeout_ms", "request_timeout_ms", "connect_timeout_ms",
        "max_attempts", "retry_non_idempotent", "hedge_after_ms", "max_fails", "health_interval_ms",
        "health_path", "health_timeout_ms", "max_delay_ms", "strategy", "rate_limit", "burst",
        "throttle_max_keys", "penalty_threshold", "penalty_window_ms", "penalty_duration_ms",
        "penalty_factor", "trusted_proxies", "max_body_bytes", "access_log", "admin_token", "threads",
    ]

    /// The keys of an object item of `backends`.
    public static let backendKeys = ["url", "weight", "health_path"]

    /// Largest file ``load(path:base:)`` reads.
    public static let maxFileBytes = 16 * 1024 * 1024

    /// Parses JSON `data` (named `file` in messages) on top of `base`: keys present in the file
    /// replace the base values, absent keys keep them. Collects every problem (not just the first)
    /// and throws them all if there is any.
    ///
    /// A `backends` key replaces the base backend list and its weights; without it the base
    /// backends and weights are kept, with no per-backend health paths.
    public static func parse(
        _ data: [UInt8], file: String, base: LoadBalancerConfiguration = LoadBalancerConfiguration()
    ) throws(ConfigFileErrors) -> LoadedConfiguration {
        let topLevel = "(top level)"
        if data.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            throw ConfigFileErrors([.init(file: file, field: topLevel, message: "the file is empty (expected a JSON object)")])
        }
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: Data(data), options: [.fragmentsAllowed])
        } catch {
            throw ConfigFileErrors([.init(file: file, field: topLevel, message: "invalid JSON: \(syntaxMessage(error, data))")])
        }
        guard case .object(let object) = Value(root) else {
            throw ConfigFileErrors([.init(file: file, field: topLevel, message: "expected an object, got \(Value(root).kind)")])
        }

        var r = Reader(file: file)
        for key in object.keys.sorted() where !topLevelKeys.contains(key) {
            r.fail(topLevel, unknownKeyMessage(key, known: topLevelKeys))
        }
        var c = base
        var healthPaths: [String?] = Array(repeating: nil, count: base.backends.count)
        for key in topLevelKeys {
            guard let raw = object[key] else { continue }
            let v = Value(raw)
            switch key {
            case "port": r.int(v, key, 0...65535).map { c.port = $0 }
            case "host":
                if let h = r.string(v, key) {
                    if h.isEmpty { r.fail(key, "must not be empty") } else { c.host = h }
                }
            case "backends":
                if let (urls, weights, paths) = r.backends(v) {
                    c.backends = urls
                    c.weights = weights
                    healthPaths = paths
                }
            case "timeout_ms": r.int(v, key, 1...3_600_000).map { c.attemptTimeout = .milliseconds($0) }
            case "request_timeout_ms": r.optionalInt(v, key, 1...3_600_000).map { c.requestTimeout = $0.map { .milliseconds($0) } }
            case "connect_timeout_ms": r.int(v, key, 1...600_000).map { c.connectTimeout = .milliseconds($0) }
            case "max_attempts": r.int(v, key, 1...10).map { c.maxAttempts = $0 }
            case "retry_non_idempotent": r.bool(v, key).map { c.retryNonIdempotent = $0 }
            case "hedge_after_ms": r.optionalInt(v, key, 0...3_600_000).map { c.hedgeAfter = $0.map { .milliseconds($0) } }
            case "max_fails": r.int(v, key, 1...1000).map { c.maxFails = $0 }
            case "health_interval_ms": r.int(v, key, 0...3_600_000).map { c.healthInterval = .milliseconds($0) }
            case "health_path": r.healthPath(v, key).map { c.healthPath = $0 }
            case "health_timeout_ms": r.optionalInt(v, key, 1...600_000).map { c.healthTimeout = $0.map { .milliseconds($0) } }
            case "max_delay_ms": r.optionalInt(v, key, 1...3_600_000).map { c.maxDelay = $0.map { .milliseconds($0) } }
            case "strategy":
                if let s = r.string(v, key) {
                    if let strategy = BalancingStrategy(rawValue: s) {
                        c.strategy = strategy
                    } else {
                        r.fail(key, "'\(s)' is not one of round-robin, weighted, least-requests, peak-ewma")
                    }
                }
            case "rate_limit": r.rate(v, key).map { c.rateLimit = $0 }
            case "burst": r.optionalInt(v, key, 1...1_000_000).map { c.burst = $0 }
            case "throttle_max_keys": r.int(v, key, 1...100_000_000).map { c.throttleMaxKeys = $0 }
            case "penalty_threshold": r.int(v, key, 0...1_000_000).map { c.penaltyThreshold = $0 }
            case "penalty_window_ms": r.int(v, key, 1...86_400_000).map { c.penaltyWindow = .milliseconds($0) }
            case "penalty_duration_ms": r.int(v, key, 0...86_400_000).map { c.penaltyDuration = .milliseconds($0) }
            case "penalty_factor": r.int(v, key, 1...1000).map { c.penaltyFactor = $0 }
            case "trusted_proxies": r.cidrList(v, key).map { c.trustedProxies = $0 }
            case "max_body_bytes": r.int(v, key, 0...(1 << 34)).map { c.maxBodyBytes = $0 }
            case "access_log": r.bool(v, key).map { c.accessLog = $0 }
            case "admin_token":
                if let token = r.string(v, key) {
                    if token.count >= 8 { c.adminToken = token } else { r.fail(key, "use at least 8 characters") }
                }
            case "threads": r.int(v, key, 1...256).map { c.loopCount = $0 }
            default: break  // unreachable: every key of topLevelKeys has a case
            }
        }
        if !r.errors.isEmpty { throw ConfigFileErrors(r.errors) }
        return LoadedConfiguration(balancer: c, healthPaths: healthPaths)
    }

    /// Reads the file at `path` and parses it on top of `base` (see ``parse(_:file:base:)``); the
    /// path, as given, names the file in messages. An unreadable file is one error naming the path
    /// and the reason (`"missing.json: cannot read: No such file or directory"`).
    public static func load(
        path: String, base: LoadBalancerConfiguration = LoadBalancerConfiguration()
    ) throws(ConfigFileErrors) -> LoadedConfiguration {
        let bytes: [UInt8]
        switch readFile(path) {
        case .success(let b): bytes = b
        case .failure(let problem):
            throw ConfigFileErrors([.init(file: path, field: "", message: problem.message)])
        }
        return try parse(bytes, file: path, base: base)
    }

    // MARK: - Internals

    private struct ReadProblem: Error { var message: String }

    /// The whole file, or why it cannot be read (errno text).
    private static func readFile(_ path: String) -> Result<[UInt8], ReadProblem> {
        func failure(_ what: String) -> Result<[UInt8], ReadProblem> {
            .failure(ReadProblem(message: "\(what): \(String(cString: strerror(errno)))"))
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return failure("cannot read") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return failure("cannot read")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > maxFileBytes {
                return .failure(ReadProblem(message: "cannot read: larger than \(maxFileBytes) bytes"))
            }
        }
        return .success(bytes)
    }

    /// JSONSerialization's reason on one line, with "around character N" turned into a line and column.
    private static func syntaxMessage(_ error: any Error, _ data: [UInt8]) -> String {
        var text = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? "\(error)"
        text = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).joined(separator: " ")
        while text.hasSuffix(".") { text.removeLast() }
        if let range = text.range(of: "around character "),
           let offset = Int(text[range.upperBound...].prefix(while: { $0.isNumber })) {
            var line = 1
            var column = 1
            for byte in data.prefix(offset) {
                if byte == 0x0A { line += 1; column = 1 } else if byte & 0xC0 != 0x80 { column += 1 }
            }
            let number = String(offset)
            text.replaceSubrange(range.lowerBound..<text.index(range.upperBound, offsetBy: number.count),
                                 with: "at line \(line), column \(column)")
        }
        if let first = text.first { text = first.lowercased() + text.dropFirst() }
        return text
    }

    /// `unknown key 'k'`, with a hint when the key is a near miss of a known one
    /// (`timeout-ms`, `timeout`, `trusted_proxy`, `backend`).
    private static func unknownKeyMessage(_ key: String, known: [String]) -> String {
        let normalized = key.lowercased().replacingOccurrences(of: "-", with: "_")
        let candidates = [normalized, normalized + "_ms", normalized + "s",
                          normalized.hasSuffix("y") ? String(normalized.dropLast()) + "ies" : normalized]
        if let hint = candidates.first(where: { $0 != key && known.contains($0) }) {
            return "unknown key '\(key)' (did you mean '\(hint)'?)"
        }
        return "unknown key '\(key)'"
    }

    /// A JSON value as JSONSerialization hands it over, classified.
    fileprivate enum Value {
        case null, bool(Bool), number(NSNumber), string(String), array([Any]), object([String: Any])

        private static let booleanClass = ObjectIdentifier(type(of: NSNumber(value: true)))

        init(_ any: Any) {
            if any is NSNull {
                self = .null
            } else if let s = any as? String {
                self = .string(s)
            } else if let a = any as? [Any] {
                self = .array(a)
            } else if let o = any as? [String: Any] {
                self = .object(o)
            } else if let n = any as? NSNumber {
                // Booleans and 0/1 both bridge to Bool and Int; only the class tells them apart.
                self = ObjectIdentifier(type(of: n)) == Self.booleanClass ? .bool(n.boolValue) : .number(n)
            } else {
                self = .null
            }
        }

        /// The kind with an article, for "expected ..., got <kind>".
        var kind: String {
            switch self {
            case .null: "null"
            case .bool: "a boolean"
            case .number(let n): n as? Int != nil ? "an integer" : "a number"
            case .string: "a string"
            case .array: "an array"
            case .object: "an object"
            }
        }
    }

    /// Type and range checks that record a problem and return nil instead of throwing.
    private struct Reader {
        let file: String
        var errors: [ConfigFileError] = []

        mutating func fail(_ field: String, _ message: String) {
            errors.append(ConfigFileError(file: file, field: field, message: message))
        }

        mutating func int(_ v: Value, _ field: String, _ range: ClosedRange<Int>) -> Int? {
            let expected = "an integer in \(range.lowerBound)...\(range.upperBound)"
            guard case .number(let n) = v else {
                fail(field, "expected an integer, got \(v.kind)")
                return nil
            }
            guard let i = n as? Int else {
                let d = n.doubleValue
                if d.isFinite, d == d.rounded() {
                    fail(field, "expected \(expected), got \(n.stringValue)")
                } else {
                    fail(field, "expected an integer, got \(n.stringValue)")
                }
                return nil
            }
            guard range.contains(i) else {
                fail(field, "expected \(expected), got \(i)")
                return nil
            }
            return i
        }

        /// An integer, or null for "unset" (`.some(nil)`); nil when invalid.
        mutating func optionalInt(_ v: Value, _ field: String, _ range: ClosedRange<Int>) -> Int?? {
            if case .null = v { return .some(nil) }
            guard let i = int(v, field, range) else { return nil }
            return .some(i)
        }

        mutating func bool(_ v: Value, _ field: String) -> Bool? {
            guard case .bool(let b) = v else {
                fail(field, "expected a boolean, got \(v.kind)")
                return nil
            }
            return b
        }

        mutating func string(_ v: Value, _ field: String) -> String? {
            guard case .string(let s) = v else {
                fail(field, "expected a string, got \(v.kind)")
                return nil
            }
            return s
        }

        mutating func healthPath(_ v: Value, _ field: String) -> String? {
            guard let p = string(v, field) else { return nil }
            guard p.hasPrefix("/"), !p.contains(" ") else {
                fail(field, "'\(p)' must start with / and contain no spaces")
                return nil
            }
            return p
        }

        /// A positive finite number of requests per second, or null (`.some(nil)`).
        mutating func rate(_ v: Value, _ field: String) -> Double?? {
            switch v {
            case .null: return .some(nil)
            case .number(let n):
                let d = n.doubleValue
                guard d > 0, d.isFinite else {
                    fail(field, "expected a positive number, got \(n.stringValue)")
                    return nil
                }
                return .some(d)
            default:
                fail(field, "expected a number, got \(v.kind)")
                return nil
            }
        }

        mutating func cidrList(_ v: Value, _ field: String) -> [CIDRRange]? {
            guard case .array(let items) = v else {
                fail(field, "expected an array of CIDR strings, got \(v.kind)")
                return nil
            }
            var ranges: [CIDRRange] = []
            var ok = true
            for (i, item) in items.enumerated() {
                let itemField = "\(field)[\(i)]"
                guard let text = string(Value(item), itemField) else { ok = false; continue }
                guard let range = CIDRRange(text) else {
                    fail(itemField, "'\(text)' is not a CIDR range")
                    ok = false
                    continue
                }
                ranges.append(range)
            }
            return ok ? ranges : nil
        }

        /// The backend list with weights and health paths (parallel), or nil when any item is bad.
        mutating func backends(_ v: Value) -> ([BackendURL], [Int], [String?])? {
            guard case .array(let items) = v else {
                fail("backends", "expected an array, got \(v.kind)")
                return nil
            }
            guard !items.isEmpty else {
                fail("backends", "must list at least one backend")
                return nil
            }
            var urls: [BackendURL] = []
            var weights: [Int] = []
            var paths: [String?] = []
            var firstIndex: [String: Int] = [:]
            var ok = true
            for (i, item) in items.enumerated() {
                let itemField = "backends[\(i)]"
                // The string form is shorthand for {"url": ...}, so URL problems name `.url` either way.
                let urlField = itemField + ".url"
                var urlText: String?
                var weight = 1
                var path: String?
                switch Value(item) {
                case .string(let s):
                    urlText = s
                case .object(let object):
                    for key in object.keys.sorted() where !ConfigFile.backendKeys.contains(key) {
                        fail(itemField, ConfigFile.unknownKeyMessage(key, known: ConfigFile.backendKeys))
                        ok = false
                    }
                    if let raw = object["url"] {
                        urlText = string(Value(raw), urlField)
                        if urlText == nil { ok = false }
                    } else {
                        fail(itemField, "missing required key 'url'")
                        ok = false
                    }
                    if let raw = object["weight"] {
                        if let w = int(Value(raw), itemField + ".weight", 1...1000) { weight = w } else { ok = false }
                    }
                    if let raw = object["health_path"] {
                        if let p = healthPath(Value(raw), itemField + ".health_path") { path = p } else { ok = false }
                    }
                case let other:
                    fail(itemField, "expected a URL string or an object, got \(other.kind)")
                    ok = false
                }
                guard let urlText else { continue }
                guard let url = backendURL(urlText, urlField) else { ok = false; continue }
                let identity = url.description.lowercased()
                if let first = firstIndex[identity] {
                    fail(urlField, "duplicate of backends[\(first)] (\(url))")
                    ok = false
                    continue
                }
                firstIndex[identity] = i
                urls.append(url)
                weights.append(weight)
                paths.append(path)
            }
            return ok ? (urls, weights, paths) : nil
        }

        /// A parsed backend URL; BackendURL's reason without the quoted input (the field names it).
        mutating func backendURL(_ text: String, _ field: String) -> BackendURL? {
            let lower = text.lowercased()
            guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
                fail(field, "not an http URL (expected http://host:port, got '\(text)')")
                return nil
            }
            do {
                return try BackendURL(parsing: text)
            } catch {
                var message = error.message
                for prefix in ["'\(text)': ", "'\(text)' "] where message.hasPrefix(prefix) {
                    message = String(message.dropFirst(prefix.count))
                    break
                }
                fail(field, message)
                return nil
            }
        }
    }
}
