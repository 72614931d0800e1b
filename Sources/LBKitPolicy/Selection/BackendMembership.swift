/// A backend as the operator declared it (config file, flag or admin API): its URL, which may
/// name a host that resolves to several addresses, and the settings every address inherits.
public struct DeclaredBackend: Sendable, Equatable {
    /// The URL as declared, e.g. `http://api.internal:8080` or `http://10.0.0.5:8080`.
    public var url: String
    /// Relative weight, given to each of its addresses.
    public var weight: Int
    /// Its own health-check path (nil = the balancer's).
    public var healthPath: String?

    /// Creates a declaration.
    public init(url: String, weight: Int = 1, healthPath: String? = nil) {
        self.url = url
        self.weight = weight
        self.healthPath = healthPath
    }
}

/// One backend in effect: one address of a ``DeclaredBackend``.
public struct BackendMember: Sendable, Equatable {
    /// The address's own URL, e.g. `http://10.0.0.5:8080`: the backend's identity in the cluster,
    /// stats, metrics and log lines.
    public var url: String
    /// The declared URL it came from (equal to ``url`` for an IP-literal backend).
    public var origin: String
    /// Weight (the declaration's).
    public var weight: Int
    /// Health-check path (the declaration's).
    public var healthPath: String?
    /// Its address no longer resolves, or its declaration was removed: it takes no new requests
    /// and leaves once it has none in flight.
    public var retiring: Bool

    /// Creates a member.
    public init(url: String, origin: String, weight: Int = 1, healthPath: String? = nil, retiring: Bool = false) {
        self.url = url
        self.origin = origin
        self.weight = weight
        self.healthPath = healthPath
        self.retiring = retiring
    }
}

/// How one resolution of a declared backend's name ended.
public enum ResolutionOutcome: Sendable, Equatable {
    /// The name resolved to these address URLs.
    case resolved([String])
    /// It did not resolve, for this reason.
    case failed(String)
}

/// What is known about the addresses of one declared backend.
public struct ResolutionStatus: Sendable, Equatable {
    /// The last known address URLs, in order; nil before the first successful resolution.
    public var addresses: [String]?
    /// Consecutive failed resolutions (0 = the last one succeeded).
    public var failures = 0
    /// When the current failure streak began.
    public var failingSince: MonotonicInstant?
    /// Why the last resolution failed (kept until one succeeds).
    public var lastError: String?

    /// A status; the defaults mean "nothing known yet".
    public init(addresses: [String]? = nil, failures: Int = 0, failingSince: MonotonicInstant? = nil, lastError: String? = nil) {
        self.addresses = addresses
        self.failures = failures
        self.failingSince = failingSince
        self.lastError = lastError
    }

    /// `resolved`, `failing` (last known addresses kept) or `pending` (never resolved).
    public var stateName: String {
        if failures > 0 { return addresses == nil ? "pending" : "failing" }
        return addresses == nil ? "pending" : "resolved"
    }
}

/// The set of backends in effect, derived from the declared backends and what their names
/// resolve to. A pure state machine: name resolution (I/O) happens elsewhere and is fed in
/// through ``resolved(_:addresses:at:inFlight:)`` and ``resolutionFailed(_:reason:at:inFlight:)``;
/// instants are passed in, never read.
///
/// Rules:
/// * Each declared backend becomes one member per address it resolves to, in declaration
///   order (its addresses in the order given). An address two declarations share belongs to
///   the first one.
/// * A member that is no longer wanted (its address vanished from the name, or its declaration
///   was removed) **retires**: it stays, marked ``BackendMember/retiring``, while
///   `inFlight(url)` is above zero, and leaves at the first change or ``sweep(inFlight:)`` that
///   sees it idle. A retiring address that resolves again is back at once.
/// * A failed resolution keeps the last known addresses; the first failure of a streak is
///   logged (warning), the later ones are not, and the first success after a streak logs the
///   recovery.
///
/// ```swift
/// var membership = BackendMembership(declared: [DeclaredBackend(url: "http://api.internal:8080")])
/// let now = ManualClock().now()
/// _ = membership.resolved("http://api.internal:8080",
///                         addresses: ["http://10.0.0.5:8080", "http://10.0.0.6:8080"], at: now) { _ in 0 }
/// membership.members.map(\.url)  // ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
/// ```
public struct BackendMembership: Sendable {
    /// The declared backends, in order.
    public private(set) var declared: [DeclaredBackend]
    /// The members in effect: the wanted ones in order, then the retiring ones.
    public private(set) var members: [BackendMember] = []
    private var status: [String: ResolutionStatus] = [:]

    /// A membership of `declared`, with no address known yet.
    public init(declared: [DeclaredBackend]) {
        self.declared = declared
    }

    /// What is known about the addresses of the declared backend `url` (nil if not declared).
    public func resolution(of url: String) -> ResolutionStatus? {
        declared.contains { $0.url == url } ? status[url] ?? ResolutionStatus() : nil
    }

    /// The declared backend with this URL, if any.
    public func declaration(_ url: String) -> DeclaredBackend? { declared.first { $0.url == url } }

    /// Replaces the declared backends (a configuration reload or an admin change) and records
    /// `resolutions` (keyed by declared URL: names resolved for the occasion, IP literals as
    /// their one address). Names still declared keep what is known about their addresses;
    /// members of removed declarations retire. Returns resolution warnings and removals (the
    /// caller logs the change itself, e.g. as a reload summary).
    public mutating func replaceDeclared(_ list: [DeclaredBackend], resolutions: [String: ResolutionOutcome] = [:],
                                         at now: MonotonicInstant = .zero, inFlight: (String) -> Int) -> [LBLogEvent] {
        declared = list
        let names = Set(list.map(\.url))
        status = status.filter { names.contains($0.key) }
        var events: [LBLogEvent] = []
        for d in list { if let outcome = resolutions[d.url] { events += record(d.url, outcome, at: now) } }
        return events + recompute(inFlight: inFlight, announce: false)
    }

    /// Changes the weight of the declared backend `url` (and so of each of its addresses);
    /// false when it is not declared.
    public mutating func setWeight(_ weight: Int, of url: String) -> Bool {
        guard let i = declared.firstIndex(where: { $0.url == url }) else { return false }
        declared[i].weight = weight
        for j in members.indices where members[j].origin == url && !members[j].retiring { members[j].weight = weight }
        return true
    }

    /// Records a successful resolution of the declared backend `origin` to `addresses` (address
    /// URLs; duplicates are ignored). Returns the log events of the change.
    public mutating func resolved(_ origin: String, addresses: [String], at now: MonotonicInstant,
                                  inFlight: (String) -> Int) -> [LBLogEvent] {
        guard declared.contains(where: { $0.url == origin }) else { return [] }
        return record(origin, .resolved(addresses), at: now) + recompute(inFlight: inFlight, announce: true, resolvedOrigin: origin)
    }

    /// Records a failed resolution of `origin`: its last known addresses stay in effect. Only
    /// the first failure of a streak returns a log event.
    public mutating func resolutionFailed(_ origin: String, reason: String, at now: MonotonicInstant,
                                          inFlight: (String) -> Int) -> [LBLogEvent] {
        guard declared.contains(where: { $0.url == origin }) else { return [] }
        return record(origin, .failed(reason), at: now)
    }

    private mutating func record(_ origin: String, _ outcome: ResolutionOutcome, at now: MonotonicInstant) -> [LBLogEvent] {
        var record = status[origin] ?? ResolutionStatus()
        switch outcome {
        case .resolved(let addresses):
            var unique: [String] = []
            for a in addresses where !unique.contains(a) { unique.append(a) }
            var events: [LBLogEvent] = []
            if record.failures > 0 {
                let duration = record.failingSince.map { formatDuration(now - $0) } ?? "0 ms"
                let count = record.failures
                events.append(LBLogEvent(
                    level: .notice, category: .config,
                    message: "\(origin) resolves again after \(count) failed resolution\(count == 1 ? "" : "s") over \(duration)",
                    metadata: ["backend": origin]))
            }
            record.addresses = unique
            record.failures = 0
            record.failingSince = nil
            record.lastError = nil
            status[origin] = record
            return events
        case .failed(let reason):
            record.failures += 1
            record.lastError = reason
            if record.failingSince == nil { record.failingSince = now }
            status[origin] = record
            guard record.failures == 1 else { return [] }
            let kept = record.addresses.map { $0.isEmpty ? "no addresses" : $0.joined(separator: ", ") }
            let consequence = kept.map { "keeping its last known addresses (\($0))" } ?? "it has no backends until it resolves"
            return [LBLogEvent(level: .warning, category: .config,
                               message: "cannot resolve \(origin) (\(reason)): \(consequence); logged once until it resolves again",
                               metadata: ["backend": origin, "reason": reason])]
        }
    }

    /// Removes retiring members that have no request in flight; returns their log events.
    public mutating func sweep(inFlight: (String) -> Int) -> [LBLogEvent] {
        var events: [LBLogEvent] = []
        members.removeAll { m in
            guard m.retiring, inFlight(m.url) <= 0 else { return false }
            events.append(LBLogEvent(level: .info, category: .config, message: "removed \(m.url) (drained: no requests in flight)",
                                     metadata: ["backend": m.url]))
            return true
        }
        return events
    }

    /// The members the declarations and known addresses call for, in order.
    private func wanted() -> [BackendMember] {
        var out: [BackendMember] = []
        var seen: Set<String> = []
        for d in declared {
            for address in status[d.url]?.addresses ?? [] where seen.insert(address).inserted {
                out.append(BackendMember(url: address, origin: d.url, weight: d.weight, healthPath: d.healthPath))
            }
        }
        return out
    }

    private mutating func recompute(inFlight: (String) -> Int, announce: Bool, resolvedOrigin: String? = nil) -> [LBLogEvent] {
        let next = wanted()
        let nextURLs = Set(next.map(\.url))
        let before = members
        let beforeActive = Set(before.filter { !$0.retiring }.map(\.url))
        var retiring: [BackendMember] = []
        for m in before where !nextURLs.contains(m.url) {
            var r = m
            r.retiring = true
            retiring.append(r)
        }
        members = next + retiring
        let added = next.filter { !beforeActive.contains($0.url) }.map(\.url)
        let retired = retiring.filter { beforeActive.contains($0.url) }.map(\.url)
        var events: [LBLogEvent] = []
        if announce && (!added.isEmpty || !retired.isEmpty) {
            var parts: [String] = []
            if !added.isEmpty { parts.append("added " + added.joined(separator: ", ")) }
            if !retired.isEmpty { parts.append("removed (draining) " + retired.joined(separator: ", ")) }
            let subject = resolvedOrigin.map { o in
                "\(o) resolves to \(status[o]?.addresses?.count ?? 0) address\(status[o]?.addresses?.count == 1 ? "" : "es")"
            } ?? "backends changed"
            events.append(LBLogEvent(level: .notice, category: .config, message: subject + ": " + parts.joined(separator: "; "),
                                     metadata: resolvedOrigin.map { ["backend": $0] } ?? [:]))
        }
        return events + sweep(inFlight: inFlight)
    }
}
