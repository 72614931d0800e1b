/// A run-time change of the backends that was refused: what is wrong and the HTTP status the
/// admin API answers with (400 bad input, 404 unknown backend, 409 conflict with the current
/// set).
public struct BackendChangeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Why the change was refused.
    public enum Kind: Sendable, Equatable {
        /// Bad input (400): not a backend URL, a weight out of range, a bad health path...
        case invalid
        /// No such declared backend (404).
        case notFound
        /// The change conflicts with the current backends (409): already declared, the last
        /// backend, too many backends.
        case conflict
    }
    /// Why.
    public var kind: Kind
    /// One line naming the field and the problem.
    public var message: String
    /// Creates an error.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    /// 400, 404 or 409.
    public var status: Int {
        switch kind {
        case .invalid: 400
        case .notFound: 404
        case .conflict: 409
        }
    }
    public var description: String { message }
}

/// The run-time backend API: ``LoadBalancer/addBackend(_:weight:healthPath:)``,
/// ``LoadBalancer/removeBackend(_:)``, ``LoadBalancer/setWeight(_:of:)`` and
/// ``LoadBalancer/backendsJSON()``, served at `/_lb/backends` by the admin endpoints. A change
/// lasts until the next ``LoadBalancer/reload(backends:weights:healthPaths:)`` (lbserve: SIGHUP),
/// which replaces the declared backends with the file's: keep the file in step to keep a change.
extension LoadBalancer {
    /// Adds a backend at run time. A host name is resolved first, off the event loops: with
    /// re-resolution on (``LoadBalancerConfiguration/resolveInterval``) a name that does not
    /// resolve yet is added and retried; with it off, it is refused. Its addresses join in slow
    /// start. Throws `.conflict` when `url` is already declared or the backends would exceed
    /// the capacity, `.invalid` for a weight or health path the config file would refuse.
    ///
    /// ```swift
    /// func grow(_ balancer: LoadBalancer) async throws {
    ///     try await balancer.addBackend(try BackendURL(parsing: "http://10.0.0.7:8080"), weight: 2)
    /// }
    /// ```
    nonisolated(nonsending) public func addBackend(_ url: BackendURL, weight: Int = 1,
                                                   healthPath: String? = nil) async throws(BackendChangeError) {
        guard LoadBalancerConfiguration.weightRange.contains(weight) else {
            throw BackendChangeError(.invalid, "weight: \(weight) is not an integer in \(LoadBalancerConfiguration.weightRange.lowerBound)...\(LoadBalancerConfiguration.weightRange.upperBound)")
        }
        if let healthPath, let problem = HTTP1Syntax.originFormProblem(healthPath) {
            throw BackendChangeError(.invalid, "health_path: '\(healthPath)' \(problem)")
        }
        let name = url.description
        if membership.withLock({ $0.declaration(name) != nil }) {
            throw BackendChangeError(.conflict, "url: \(name) is already a backend (set its weight with PUT, or remove it first)")
        }
        let outcome = await resolveOffLoop(url)
        if configuration.resolveInterval <= .zero, case .failed(let why) = outcome {
            throw BackendChangeError(.invalid, "url: \(why) (resolution is off: --resolve-interval-ms 0)")
        }
        let now = clock.now()
        let result: (old: UpstreamSet, new: UpstreamSet, events: [LBLogEvent])
        do throws(LoadBalancerError) {
            result = try changeMembership { m, inFlight throws(LoadBalancerError) in
                guard m.declaration(name) == nil else { throw LoadBalancerError("url: \(name) is already a backend") }
                return m.replaceDeclared(m.declared + [DeclaredBackend(url: name, weight: weight, healthPath: healthPath)],
                                         resolutions: [name: outcome], at: now, inFlight: inFlight)
            }
        } catch {
            throw BackendChangeError(.conflict, error.message)
        }
        for event in result.events { log(event) }
        logAdminChange("added \(name)", old: result.old, new: result.new)
    }

    /// Removes the declared backend `url` at run time: its addresses take no new requests and
    /// leave once their requests in flight have finished (state `draining` until then).
    /// Throws `.notFound` when it is not declared, `.conflict` for the last backend.
    ///
    /// ```swift
    /// func shrink(_ balancer: LoadBalancer) throws {
    ///     try balancer.removeBackend(try BackendURL(parsing: "http://10.0.0.7:8080"))
    /// }
    /// ```
    public func removeBackend(_ url: BackendURL) throws(BackendChangeError) {
        let name = url.description
        let result: (old: UpstreamSet, new: UpstreamSet, events: [LBLogEvent])
        do throws(LoadBalancerError) {
            result = try changeMembership { m, inFlight throws(LoadBalancerError) in
                guard m.declaration(name) != nil else { throw LoadBalancerError("404") }
                guard m.declared.count > 1 else { throw LoadBalancerError("409") }
                return m.replaceDeclared(m.declared.filter { $0.url != name }, inFlight: inFlight)
            }
        } catch {
            if error.message == "409" {
                throw BackendChangeError(.conflict, "url: \(name) is the last backend (add another one first)")
            }
            throw notDeclared(name)
        }
        for event in result.events { log(event) }
        logAdminChange("removed \(name)", old: result.old, new: result.new)
    }

    /// Sets the weight of the declared backend `url` (each of its addresses gets it). Throws
    /// `.invalid` outside 1...1000, `.notFound` when it is not declared.
    ///
    /// ```swift
    /// func favour(_ balancer: LoadBalancer) throws {
    ///     try balancer.setWeight(5, of: try BackendURL(parsing: "http://10.0.0.7:8080"))
    /// }
    /// ```
    public func setWeight(_ weight: Int, of url: BackendURL) throws(BackendChangeError) {
        guard LoadBalancerConfiguration.weightRange.contains(weight) else {
            throw BackendChangeError(.invalid, "weight: \(weight) is not an integer in \(LoadBalancerConfiguration.weightRange.lowerBound)...\(LoadBalancerConfiguration.weightRange.upperBound)")
        }
        let name = url.description
        do throws(LoadBalancerError) {
            _ = try changeMembership { m, _ throws(LoadBalancerError) in
                guard m.setWeight(weight, of: name) else { throw LoadBalancerError("404") }
                return []
            }
        } catch {
            throw notDeclared(name)
        }
        log(LBLogEvent(level: .notice, category: .admin, message: "weight of \(name) set to \(weight)", metadata: ["backend": name]))
    }

    private func notDeclared(_ name: String) -> BackendChangeError {
        let origin = membership.withLock { m in m.members.first { $0.url == name }?.origin }
        if let origin, origin != name {
            return BackendChangeError(.notFound, "url: \(name) is an address of \(origin); change \(origin), or drain the address with POST /_lb/backends/drain")
        }
        return BackendChangeError(.notFound, "url: no backend \(name) in the current configuration")
    }

    private func logAdminChange(_ what: String, old: UpstreamSet, new: UpstreamSet) {
        let count = membership.withLock { $0.declared.count }
        log(LBLogEvent(level: .notice, category: .admin,
                       message: "\(what) through the admin API: " + Self.changeSummary(old: old, new: new, declaredCount: count)
                           + " (until the next reload: add it to the config file to keep it)"))
    }

    /// The `GET /_lb/backends` document: every declared backend with its weight, health path,
    /// resolution state and the addresses in effect for it; then backends retiring from removed
    /// declarations.
    public func backendsJSON() -> String {
        let view = BackendsView(self)
        let declared = view.membership.declared.map { view.declarationJSON($0) }
        let names = Set(view.membership.declared.map(\.url))
        let orphans = view.membership.members.filter { !names.contains($0.origin) }.map { view.memberJSON($0) }
        let interval = Int64(configuration.resolveInterval.milliseconds.rounded())
        return "{\"resolve_interval_ms\":\(interval),\"backends\":[\(declared.joined(separator: ","))],"
            + "\"retiring\":[\(orphans.joined(separator: ","))]}"
    }

    /// One declared backend as in `GET /_lb/backends` (`{}` if it is not declared).
    func declarationJSON(_ url: String) -> String {
        let view = BackendsView(self)
        return view.membership.declaration(url).map { view.declarationJSON($0) } ?? "{}"
    }

    /// `/_lb/backends`: `GET` lists, `POST` adds (JSON `url`, `weight`, `health_path`),
    /// `PUT ?url=URL` sets the weight (JSON `weight`), `DELETE ?url=URL` removes (drains).
    /// Errors are JSON with 400, 404, 405 or 409.
    nonisolated(nonsending) func backendsEndpoint(_ request: LBRequest) async -> LBResponse {
        switch request.method {
        case "GET", "HEAD":
            return .json(status: 200, backendsJSON())
        case "POST":
            let fields: [String: AdminJSONValue]
            do throws(BackendChangeError) {
                fields = try Self.adminBody(request, keys: ["url", "weight", "health_path"])
            } catch {
                return .jsonError(status: error.status, message: error.message)
            }
            guard case .string(let text)? = fields["url"] else {
                return .jsonError(status: 400, message: fields["url"] == nil ? "url: missing (expected {\"url\":\"http://host:port\"})"
                                                                              : "url: expected a string")
            }
            var weight = 1
            var healthPath: String?
            switch fields["weight"] {
            case nil, .null?: break
            case .integer(let w)?: weight = w
            case .other?, .string?: return .jsonError(status: 400, message: "weight: expected an integer in 1...1000")
            }
            switch fields["health_path"] {
            case nil, .null?: break
            case .string(let p)?: healthPath = p
            case .other?, .integer?: return .jsonError(status: 400, message: "health_path: expected a string such as \"/ready\"")
            }
            do throws(BackendURLError) {
                let url = try BackendURL(parsing: text)
                do throws(BackendChangeError) {
                    try await addBackend(url, weight: weight, healthPath: healthPath)
                } catch {
                    return .jsonError(status: error.status, message: error.message)
                }
                return .json(status: 201, declarationJSON(url.description))
            } catch {
                return .jsonError(status: 400, message: "url: \(error.message)")
            }
        case "PUT", "DELETE":
            let url: BackendURL
            switch Self.queryURL(request) {
            case .success(let u): url = u
            case .failure(let error): return .jsonError(status: error.status, message: error.message)
            }
            do throws(BackendChangeError) {
                if request.method == "DELETE" {
                    try removeBackend(url)
                    return .json(status: 200, "{\"url\":\(JSON.quote(url.description)),\"removed\":true,\"retiring\":"
                                    + "[\(membership.withLock { m in m.members.filter { $0.retiring && $0.origin == url.description } }.map { JSON.quote($0.url) }.joined(separator: ","))]}")
                }
                let fields = try Self.adminBody(request, keys: ["weight"])
                guard case .integer(let weight)? = fields["weight"] else {
                    throw BackendChangeError(.invalid, "weight: \(fields["weight"] == nil ? "missing" : "expected an integer in 1...1000") (expected {\"weight\":N})")
                }
                try setWeight(weight, of: url)
                return .json(status: 200, declarationJSON(url.description))
            } catch {
                return .jsonError(status: error.status, message: error.message)
            }
        default:
            return .jsonError(status: 405, message: "\(request.method) not allowed on /_lb/backends",
                              headers: ["Allow": "GET, HEAD, POST, PUT, DELETE"])
        }
    }

    /// The `url` query parameter as a backend URL.
    static func queryURL(_ request: LBRequest) -> Result<BackendURL, BackendChangeError> {
        var target: String?
        for pair in (request.head.query ?? "").split(separator: "&") where pair.hasPrefix("url=") {
            target = String(pair.dropFirst(4)).removingPercentEncodingASCII()
        }
        guard let target else {
            return .failure(BackendChangeError(.invalid, "url: missing query parameter (e.g. ?url=http://127.0.0.1:5001)"))
        }
        do throws(BackendURLError) {
            return .success(try BackendURL(parsing: target))
        } catch {
            return .failure(BackendChangeError(.invalid, "url: \(error.message)"))
        }
    }

    /// The request body as a flat JSON object with only `keys`.
    static func adminBody(_ request: LBRequest, keys: [String]) throws(BackendChangeError) -> [String: AdminJSONValue] {
        guard request.bodyStream == nil else { throw BackendChangeError(.invalid, "body: too large for an admin request") }
        let fields = try AdminJSONValue.parseObject(request.body)
        for key in fields.keys.sorted() where !keys.contains(key) {
            throw BackendChangeError(.invalid, "\(key): unknown key (expected \(keys.joined(separator: ", ")))")
        }
        return fields
    }
}

/// A consistent view of the membership and the set in effect, for the admin documents.
struct BackendsView {
    let membership: BackendMembership
    let up: UpstreamSet
    let states: [String: String]

    init(_ balancer: LoadBalancer) {
        (membership, up) = balancer.membership.withLock { m in (m, balancer.upstreams) }
        states = Dictionary(up.cluster.snapshot().map { ($0.url, $0.stateName.rawValue) }, uniquingKeysWith: { a, _ in a })
    }

    func memberJSON(_ b: BackendMember) -> String {
        let i = up.names.firstIndex(of: b.url)
        let address = i.map { up.endpoints[$0].address.description } ?? ""
        let inFlight = i.map { up.activity[$0].total } ?? 0
        return "{\"url\":\(JSON.quote(b.url)),\"address\":\(JSON.quote(address)),\"state\":\"\(states[b.url] ?? "draining")\","
            + "\"weight\":\(b.weight),\"retiring\":\(b.retiring),\"in_flight\":\(inFlight)}"
    }

    func declarationJSON(_ d: DeclaredBackend) -> String {
        let r = membership.resolution(of: d.url) ?? ResolutionStatus()
        let members = membership.members.filter { $0.origin == d.url }.map(memberJSON).joined(separator: ",")
        return "{\"url\":\(JSON.quote(d.url)),\"weight\":\(d.weight),\"health_path\":\(d.healthPath.map(JSON.quote) ?? "null"),"
            + "\"resolution\":{\"state\":\"\(r.stateName)\",\"failures\":\(r.failures),\"last_error\":\(r.lastError.map(JSON.quote) ?? "null")},"
            + "\"addresses\":[\(members)]}"
    }
}

/// A value of the flat JSON objects the admin API reads.
enum AdminJSONValue: Sendable, Equatable {
    case string(String)
    case integer(Int)
    case null
    /// Anything else (a fraction, a boolean, an array, an object), by kind for messages.
    case other(String)

    /// Parses `{"key": value, ...}` strictly (RFC 8259 syntax; no key twice). Nested arrays and
    /// objects are refused rather than parsed: the admin API has no use for them.
    static func parseObject(_ bytes: [UInt8]) throws(BackendChangeError) -> [String: AdminJSONValue] {
        var p = AdminJSONReader(bytes: bytes)
        return try p.object()
    }
}

/// The admin API's small strict JSON reader (flat objects only).
struct AdminJSONReader {
    let bytes: [UInt8]
    var i = 0

    private func fail(_ what: String) -> BackendChangeError {
        BackendChangeError(.invalid, "body: \(what) at byte \(i) (expected a JSON object such as {\"url\":\"http://10.0.0.7:8080\",\"weight\":2})")
    }

    mutating func skipSpace() {
        while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
    }

    mutating func object() throws(BackendChangeError) -> [String: AdminJSONValue] {
        skipSpace()
        guard i < bytes.count, bytes[i] == UInt8(ascii: "{") else { throw fail(bytes.isEmpty ? "empty body" : "not an object") }
        i += 1
        var out: [String: AdminJSONValue] = [:]
        skipSpace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                let key = try string()
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("missing ':'") }
                i += 1
                skipSpace()
                let value = try value()
                guard out[key] == nil else { throw BackendChangeError(.invalid, "\(key): appears twice") }
                out[key] = value
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated object") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                guard bytes[i] == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
                i += 1
                break
            }
        }
        skipSpace()
        guard i == bytes.count else { throw fail("trailing data") }
        return out
    }

    mutating func value() throws(BackendChangeError) -> AdminJSONValue {
        guard i < bytes.count else { throw fail("missing value") }
        switch bytes[i] {
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "t"): try literal("true"); return .other("a boolean")
        case UInt8(ascii: "f"): try literal("false"); return .other("a boolean")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        case UInt8(ascii: "["), UInt8(ascii: "{"): throw fail("nested arrays and objects are not accepted")
        default: throw fail("unexpected character")
        }
    }

    mutating func literal(_ word: String) throws(BackendChangeError) {
        let w = Array(word.utf8)
        guard i + w.count <= bytes.count, Array(bytes[i..<(i + w.count)]) == w else { throw fail("bad literal") }
        i += w.count
    }

    mutating func number() throws(BackendChangeError) -> AdminJSONValue {
        let start = i
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        let digitsStart = i
        while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) { i += 1 }
        guard i > digitsStart else { throw fail("bad number") }
        guard bytes[digitsStart] != UInt8(ascii: "0") || i - digitsStart == 1 else { throw fail("leading zero") }
        var fractional = false
        while i < bytes.count, ".eE+-0123456789".utf8.contains(bytes[i]) { fractional = true; i += 1 }
        if fractional { return .other("a number with a fraction or exponent") }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        // Digits beyond Int range are out of any accepted range: say so rather than wrap.
        guard let n = Int(text) else { return .other("an integer out of range") }
        return .integer(n)
    }

    mutating func string() throws(BackendChangeError) -> String {
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string") }
        i += 1
        var out: [UInt8] = []
        while i < bytes.count {
            let c = bytes[i]
            i += 1
            switch c {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard i < bytes.count else { throw fail("unterminated escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16),
                          let scalar = Unicode.Scalar(v) else { throw fail("bad \\u escape") }
                    i += 4
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: throw fail("bad escape")
                }
            case 0..<0x20:
                throw fail("control character in a string")
            default:
                out.append(c)
            }
        }
        throw fail("unterminated string")
    }
}
