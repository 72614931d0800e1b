import LBKit
import Glibc

// The `lbserve --config FILE.json` reader. The JSON itself is read by StrictJSON (no trailing
// commas, no duplicate keys, numbers kept exact); the settings are checked against the same
// NumericSetting table as the flags. The schema is documented in Docs/Configuration.md; keep the
// two in sync.

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
        "max_attempts", "retry_non_idempotent", "hedge_after_ms", "max_fails", "ejection_base_ms",
        "ejection_max_ms", "max_ejected_percent", "health_interval_ms", "health_path", "health_expect_status",
        "health_timeout_ms", "health_fall", "health_rise", "slow_start_ms", "max_delay_ms", "max_backend_cpu",
        "max_backend_memory", "strategy",
        "rate_limit", "burst", "throttle_max_keys", "penalty_threshold", "penalty_window_ms", "penalty_duration_ms",
        "penalty_factor", "trusted_proxies", "max_body_bytes", "access_log", "admin_token", "admin_allow",
        "admin_listen", "backend_header", "router_health_path", "log_level", "log_format", "threads",
        "throttle_store", "throttle_key_prefix", "throttle_sync_ms", "throttle_store_timeout_ms",
        "resolve_interval_ms",
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
        _ data: [UInt8], file: String, base: LoadBalancerConfiguration = LoadBalancerConfiguration(),
        baseSettings: LBServeSettings = LBServeSettings()
    ) throws(ConfigFileErrors) -> LoadedConfiguration {
        let topLevel = StrictJSON.rootPath
        if data.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            throw ConfigFileErrors([.init(file: file, field: topLevel, message: "the file is empty (expected a JSON object)")])
        }
        let (root, problems) = StrictJSON.parse(data)
        if !problems.isEmpty {
            throw ConfigFileErrors(problems.map { ConfigFileError(file: file, field: $0.path, message: $0.message) })
        }
        guard let root, case .object(let object) = root else {
            throw ConfigFileErrors([.init(file: file, field: topLevel, message: "expected an object, got \(root.map(\.kind) ?? "nothing")")])
        }

        var r = Reader(file: file)
        for key in object.keys.sorted() where !topLevelKeys.contains(key) {
            r.fail(topLevel, unknownKeyMessage(key, known: topLevelKeys))
        }
        var c = base
        var settings = baseSettings
        var healthPaths: [String?] = Array(repeating: nil, count: base.backends.count)
        for key in topLevelKeys {
            guard let v = object[key] else { continue }
            if let setting = NumericSetting.named(key: key) {
                r.numeric(v, key, setting).map { setting.apply($0, to: &c) }
                continue
            }
            switch key {
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
            case "retry_non_idempotent": r.bool(v, key).map { c.retryNonIdempotent = $0 }
            case "health_path":
                // null: the default path, judged as "not configured" (404/405/501 = no endpoint).
                if case .null = v {
                    c.healthPath = LoadBalancerConfiguration().healthPath
                    c.healthPathIsExplicit = false
                } else {
                    r.healthPath(v, key).map { c.healthPath = $0 }
                }
            case "health_expect_status":
                if case .null = v {
                    c.healthExpectStatus = nil
                } else if let text = r.string(v, key) {
                    if let set = HTTPStatusSet(parsing: text) {
                        c.healthExpectStatus = set
                    } else {
                        r.fail(key, "'\(text)' is not a list of statuses or ranges in 100-599 (e.g. \"200-399\" or \"200,204\")")
                    }
                }
            case "admin_allow": r.cidrList(v, key).map { c.adminAllow = $0 }
            case "admin_listen":
                if case .null = v {
                    settings.adminListen = nil
                } else if let text = r.string(v, key) {
                    if let address = ListenAddress(parsing: text) {
                        settings.adminListen = address
                    } else {
                        r.fail(key, "'\(text)' is not HOST:PORT (e.g. \"127.0.0.1:9901\")")
                    }
                }
            case "backend_header":
                if let text = r.string(v, key) {
                    do throws(CommandLineError) {
                        c.backendHeader = try LBServeCommandLine.backendHeader(text, name: "")
                    } catch {
                        r.fail(key, "'\(text)' is not a header field name (letters, digits, -) or \"off\"")
                    }
                }
            case "router_health_path":
                if case .null = v { c.routerHealthPath = nil } else { r.healthPath(v, key).map { c.routerHealthPath = $0 } }
            case "log_level":
                if let text = r.string(v, key) {
                    if let level = LogLevel.allCases.first(where: { $0.description == text }) {
                        settings.logLevel = level
                    } else {
                        r.fail(key, "'\(text)' is not one of trace, debug, info, notice, warning, error")
                    }
                }
            case "log_format":
                if let text = r.string(v, key) {
                    if let format = LogFormat(rawValue: text) { settings.logFormat = format } else { r.fail(key, "'\(text)' is not one of text, json") }
                }
            case "strategy":
                if let s = r.string(v, key) {
                    if let strategy = BalancingStrategy(rawValue: s) {
                        c.strategy = strategy
                    } else {
                        r.fail(key, "'\(s)' is not one of round-robin, weighted, least-requests, peak-ewma")
                    }
                }
            case "trusted_proxies": r.cidrList(v, key).map { c.trustedProxies = $0 }
            case "access_log": r.bool(v, key).map { c.accessLog = $0 }
            case "admin_token":
                if case .null = v {
                    c.adminToken = nil
                } else if let token = r.string(v, key) {
                    if token.count >= 8 { c.adminToken = token } else { r.fail(key, "use at least 8 characters") }
                }
            case "throttle_store":
                if case .null = v {
                    c.throttleStore = nil
                } else if let text = r.string(v, key) {
                    do throws(RedisURLError) {
                        c.throttleStore = try RedisURL(parsing: text)
                    } catch {
                        r.fail(key, "\(error.message) (expected redis://[:password@]host:port[/db])")
                    }
                }
            case "throttle_key_prefix":
                if let text = r.string(v, key) {
                    do throws(CommandLineError) {
                        c.throttleKeyPrefix = try LBServeCommandLine.throttleKeyPrefix(text, name: key)
                    } catch {
                        r.fail(key, "'\(text)' is not 1 to 256 printable ASCII characters without spaces")
                    }
                }
            default: break  // unreachable: every key of topLevelKeys is numeric or has a case
            }
        }
        if c.ejectionMax < c.ejectionBase, object["ejection_max_ms"] != nil || object["ejection_base_ms"] != nil {
            r.fail(object["ejection_max_ms"] != nil ? "ejection_max_ms" : "ejection_base_ms",
                   "ejection_max_ms (\(Int64(c.ejectionMax.milliseconds))) must be at least ejection_base_ms (\(Int64(c.ejectionBase.milliseconds)))")
        }
        if !r.errors.isEmpty { throw ConfigFileErrors(r.errors) }
        return LoadedConfiguration(balancer: c, healthPaths: healthPaths, settings: settings)
    }

    /// Reads the file at `path` and parses it on top of `base` (see ``parse(_:file:base:)``); the
    /// path, as given, names the file in messages. An unreadable file is one error naming the path
    /// and the reason (`"missing.json: cannot read: No such file or directory"`).
    public static func load(
        path: String, base: LoadBalancerConfiguration = LoadBalancerConfiguration(),
        baseSettings: LBServeSettings = LBServeSettings()
    ) throws(ConfigFileErrors) -> LoadedConfiguration {
        let bytes: [UInt8]
        switch readFile(path) {
        case .success(let b): bytes = b
        case .failure(let problem):
            throw ConfigFileErrors([.init(file: path, field: "", message: problem.message)])
        }
        return try parse(bytes, file: path, base: base, baseSettings: baseSettings)
    }

    // MARK: - Internals

    private struct ReadProblem: Error { var message: String }

    /// The whole file, or why it cannot be read (errno text). Only a regular file (or a symbolic
    /// link to one) is read: a FIFO, socket, device or directory is refused before it is opened,
    /// so reading can never block (lbserve reloads on the thread that handles its signals). The
    /// file is opened with O_NONBLOCK and checked again, in case it was swapped in between.
    private static func readFile(_ path: String) -> Result<[UInt8], ReadProblem> {
        func failure(_ what: String) -> Result<[UInt8], ReadProblem> {
            .failure(ReadProblem(message: "\(what): \(String(cString: strerror(errno)))"))
        }
        func notRegular(_ mode: mode_t) -> Result<[UInt8], ReadProblem> {
            .failure(ReadProblem(message: "cannot read: not a regular file (\(fileKind(mode)))"))
        }
        var info = stat()
        guard stat(path, &info) == 0 else { return failure("cannot read") }
        guard info.st_mode & S_IFMT == S_IFREG else { return notRegular(info.st_mode) }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { return failure("cannot read") }
        defer { close(fd) }
        guard fstat(fd, &info) == 0 else { return failure("cannot read") }
        guard info.st_mode & S_IFMT == S_IFREG else { return notRegular(info.st_mode) }
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

    /// "a directory", "a FIFO", ... for a `st_mode`.
    private static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        default: "not a regular file"
        }
    }

    /// `unknown key 'k'`, with a hint when the key is a near miss of a known one
    /// (`timeout-ms`, `timeout`, `trusted_proxy`, `backend`).
    private static func unknownKeyMessage(_ key: String, known: [String]) -> String {
        let normalized = String(key.lowercased().map { $0 == "-" ? "_" : $0 })
        let candidates = [normalized, normalized + "_ms", normalized + "s",
                          normalized.hasSuffix("y") ? String(normalized.dropLast()) + "ies" : normalized]
        if let hint = candidates.first(where: { $0 != key && known.contains($0) }) {
            return "unknown key '\(key)' (did you mean '\(hint)'?)"
        }
        return "unknown key '\(key)'"
    }

    fileprivate typealias Value = StrictJSON.Value

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
            guard n.isIntegral else {
                fail(field, "expected an integer, got \(n.text)")
                return nil
            }
            guard let i = n.integer, range.contains(i) else {
                fail(field, "expected \(expected), got \(n.text)")
                return nil
            }
            return i
        }

        /// A value of a numeric setting; `.some(nil)` for `null` when the setting allows it ("unset");
        /// nil when invalid.
        mutating func numeric(_ v: Value, _ field: String, _ setting: NumericSetting) -> NumericSetting.Value?? {
            if case .null = v, setting.nullable { return .some(nil) }
            switch setting.kind {
            case .integer(let range):
                guard let i = int(v, field, range) else { return nil }
                return .some(.integer(i))
            case .decimal(let range):
                if setting.acceptsRateUnits, case .string(let text) = v {
                    // "100/minute", as on the command line.
                    guard let value = setting.value(parsing: text) else {
                        fail(field, "expected \(setting.expectation), got \(JSON.quote(text))")
                        return nil
                    }
                    return .some(value)
                }
                guard case .number(let n) = v else {
                    fail(field, "expected a number, got \(v.kind)")
                    return nil
                }
                let d = n.double
                guard d.isFinite, range.contains(d) else {
                    fail(field, "expected \(setting.expectation), got \(n.text)")
                    return nil
                }
                return .some(.decimal(d))
            }
        }

        mutating func bool(_ v: Value, _ field: String) -> Bool? {
            guard case .bool(let b) = v else {
                fail(field, "expected a boolean, got \(v.kind)")
                return nil
            }
            return b
        }

        /// A string without control characters (no setting has a use for them).
        mutating func string(_ v: Value, _ field: String) -> String? {
            guard case .string(let s) = v else {
                fail(field, "expected a string, got \(v.kind)")
                return nil
            }
            guard !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
                fail(field, "'\(s)' contains a control character")
                return nil
            }
            return s
        }

        mutating func healthPath(_ v: Value, _ field: String) -> String? {
            guard case .string(let p) = v else {
                fail(field, "expected a string, got \(v.kind)")
                return nil
            }
            if let problem = HTTP1Syntax.originFormProblem(p) {
                fail(field, "'\(p)' \(problem)")
                return nil
            }
            return p
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
                guard let text = string(item, itemField) else { ok = false; continue }
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
                switch item {
                case .string(let s):
                    urlText = s
                case .object(let object):
                    for key in object.keys.sorted() where !ConfigFile.backendKeys.contains(key) {
                        fail(itemField, ConfigFile.unknownKeyMessage(key, known: ConfigFile.backendKeys))
                        ok = false
                    }
                    if let raw = object["url"] {
                        urlText = string(raw, urlField)
                        if urlText == nil { ok = false }
                    } else {
                        fail(itemField, "missing required key 'url'")
                        ok = false
                    }
                    if let raw = object["weight"] {
                        if let w = int(raw, itemField + ".weight", NumericSetting.weightRange) { weight = w } else { ok = false }
                    }
                    if let raw = object["health_path"] {
                        if let p = healthPath(raw, itemField + ".health_path") { path = p } else { ok = false }
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

extension StrictJSON.Value {
    /// The kind with an article, for "expected ..., got <kind>".
    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number(let n): n.integer != nil ? "an integer" : "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
