// BackendCluster's operator and reload operations (drain, reported load, inheriting state
// across a configuration reload): they change a backend's standing from outside the request
// path, so they live apart from selection (BackendCluster.swift).

extension BackendCluster {
    // MARK: Operations

    /// Takes backend `index` out of rotation (`true`) or puts it back (`false`) without touching
    /// its health state: in-flight requests finish, probes continue. Returns false for a bad index.
    @discardableResult
    public func setDraining(_ index: Int, _ draining: Bool) -> Bool {
        let health = state.withLock { s -> BackendHealthState? in
            guard s.draining.indices.contains(index) else { return nil }
            s.draining[index] = draining
            return s.health[index].state
        }
        guard let health else { return false }
        // The state names of /_lb/stats: DRAINING, and on undrain the state it returns to.
        let url = backends[index].url
        let word = draining ? BackendStateName.draining.rawValue.uppercased() : health.rawValue.uppercased()
        let reason = draining ? "drained by an operator" : "undrained by an operator"
        log(LBLogEvent(level: .notice, category: .admin, message: "Marking \(url) as \(word) (\(reason))",
                       metadata: ["backend": url, "state": draining ? BackendStateName.draining.rawValue : health.rawValue, "reason": reason]))
        return true
    }

    /// Feeds what backend `index` reported about its own load in a health answer (see
    /// ``BackendLoadReport``): over `configuration.backendLoad`'s thresholds, or asking for
    /// `drain`/`down`, it leaves the rotation (logged `OVERLOADED`, `DRAINING`, `DOWN`); it comes
    /// back when its reports recover (logged with the state it returns to). These exclusions
    /// are the backend's own word, so the max-ejected cap does not apply: when every backend
    /// reports overload, requests get 503 with `Retry-After`, as with every backend down.
    public func loadReported(_ index: Int, _ report: BackendLoadReport) {
        let now = clock.now()
        let outcome = state.withLock { s -> (BackendLoadTransition, BackendHealthState)? in
            guard s.load.indices.contains(index), let t = s.load[index].record(report, at: now) else { return nil }
            return (t, s.health[index].state)
        }
        guard let (transition, health) = outcome else { return }
        let url = backends[index].url
        let entered = transition.to?.stateName.rawValue ?? health.rawValue
        log(LBLogEvent(level: transition.to == nil ? .info : .warning, category: .health,
                       message: "Marking \(url) as \(entered.uppercased()) (\(transition.reason))",
                       metadata: ["backend": url, "state": entered, "reason": transition.reason,
                                  "from": transition.from?.stateName.rawValue ?? health.rawValue]))
    }

    /// The index of the backend whose URL is `url`, if any.
    public func index(of url: String) -> Int? { backends.firstIndex { $0.url == url } }

    /// Copies the health, latency, counters and drain flag of every backend whose URL also exists
    /// in `old` (a configuration reload keeps what the balancer learned about unchanged backends).
    /// In-flight counts are not copied: those requests finish against `old`. A backend that is
    /// not in `old` joined a running balancer: it starts in slow start (`warming`), so a new
    /// address or a backend added at run time is not flooded while its caches are cold.
    public func inheritState(from old: BackendCluster) {
        let now = clock.now()
        let oldURLs = Set(old.backends.map(\.url))
        state.withLock { s in
            for (i, b) in backends.enumerated() where !oldURLs.contains(b.url) { s.health[i].beginSlowStart(at: now) }
        }
        copyState(from: old)
    }

    /// Sets the drain flag of backend `index` without logging (the caller says why, e.g. a
    /// backend whose address no longer resolves drains until its requests finish).
    public func setDrainFlag(_ index: Int, _ draining: Bool) {
        state.withLock { s in
            guard s.draining.indices.contains(index) else { return }
            s.draining[index] = draining
        }
    }

    private func copyState(from old: BackendCluster) {
        var oldIndex: [String: Int] = [:]
        for (i, b) in old.backends.enumerated() { oldIndex[b.url] = i }
        let copied = old.state.withLock { o in (o.health, o.latency, o.stats, o.draining, o.load) }
        state.withLock { s in
            for (i, b) in backends.enumerated() {
                guard let j = oldIndex[b.url] else { continue }
                s.health[i] = copied.0[j]
                s.latency[i] = copied.1[j]
                s.stats[i] = copied.2[j]
                s.stats[i].inFlight = 0
                s.draining[i] = copied.3[j]
                s.load[i] = copied.4[j]
            }
            s.passivelyExcluded = s.health.filter { $0.state.isPassiveExclusion }.count
            s.nextDeadline = MonotonicInstant(nanoseconds: 0)  // re-evaluate timers on the next call
        }
    }
}
