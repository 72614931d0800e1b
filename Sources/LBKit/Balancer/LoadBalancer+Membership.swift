import Dispatch
import Synchronization

/// Backends that come and go: name resolution, retiring backends, and the one path every change
/// of the backend set takes (reload, resolution, admin API). The rules themselves (expansion,
/// retirement, failure streaks) are ``BackendMembership``'s; this file does the I/O around them.
extension LoadBalancer {
    /// Declarations from parallel lists (missing weight = 1, missing path = the global one).
    static func declarations(_ backends: [BackendURL], weights: [Int], healthPaths: [String?]) -> [DeclaredBackend] {
        backends.enumerated().map { i, url in
            DeclaredBackend(url: url.description, weight: i < weights.count ? max(1, weights[i]) : 1,
                            healthPath: i < healthPaths.count ? healthPaths[i] : nil)
        }
    }

    /// The URL of the backend at `address`: `http://10.0.0.5:8080`, `http://[::1]:8080`.
    static func memberURL(_ address: IPSocketAddress) -> String { "http://" + address.description }

    /// Resolves `urls` now, on the calling thread (blocking for names): an IP literal is its own
    /// one address; a name's addresses come sorted, so the rotation order does not follow the
    /// order a DNS server happens to answer in. With `resolveOnce` (no re-resolution) a name
    /// that does not resolve is an error; otherwise it is recorded as failed and retried.
    static func resolveNow(_ urls: [BackendURL], resolver: any BackendResolver,
                           resolveOnce: Bool) throws(LoadBalancerError) -> [String: ResolutionOutcome] {
        var outcomes: [String: ResolutionOutcome] = [:]
        for url in urls {
            let outcome = resolve(url, resolver: resolver)
            if resolveOnce, case .failed(let why) = outcome { throw LoadBalancerError("backend \(url): \(why)") }
            outcomes[url.description] = outcome
        }
        return outcomes
    }

    /// One resolution of `url` (blocking for a name).
    static func resolve(_ url: BackendURL, resolver: any BackendResolver) -> ResolutionOutcome {
        if let literal = IPSocketAddress(ipLiteral: url.host, port: url.port) { return .resolved([memberURL(literal)]) }
        do throws(BackendResolutionError) {
            let addresses = try resolver.resolve(host: url.host, port: url.port)
            guard !addresses.isEmpty else { return .failed("cannot resolve \(url.host): no addresses") }
            let sorted = addresses.sorted { ($0.clientAddress, $0.port) < ($1.clientAddress, $1.port) }
            return .resolved(sorted.map(memberURL))
        } catch {
            return .failed(error.message)
        }
    }

    /// ``resolve(_:resolver:)`` on a Dispatch thread: getaddrinfo blocks, and must never hold an
    /// event loop or a thread of the cooperative pool.
    nonisolated(nonsending) func resolveOffLoop(_ url: BackendURL) async -> ResolutionOutcome {
        if let literal = IPSocketAddress(ipLiteral: url.host, port: url.port) { return .resolved([Self.memberURL(literal)]) }
        let resolver = self.resolver
        return await withCheckedContinuation { (c: CheckedContinuation<ResolutionOutcome, Never>) in
            DispatchQueue.global().async { c.resume(returning: Self.resolve(url, resolver: resolver)) }
        }
    }

    /// Applies `change` to the membership and installs the backend set it calls for, under the
    /// membership lock (so changes apply one after the other, each on the set the previous one
    /// installed). `change` gets the in-flight count of a backend URL. When the new set cannot
    /// be built (too many backends, a bad health path) the membership is left as it was and the
    /// error is thrown. Returns the old and new sets and `change`'s log events (not yet logged).
    func changeMembership(
        _ change: (inout BackendMembership, (String) -> Int) throws(LoadBalancerError) -> [LBLogEvent]
    ) throws(LoadBalancerError) -> (old: UpstreamSet, new: UpstreamSet, events: [LBLogEvent]) {
        let (old, new, events) = try membership.withLock { m throws(LoadBalancerError) -> (UpstreamSet, UpstreamSet, [LBLogEvent]) in
            let saved = m
            let current = upstreams
            let events = try change(&m, { current.inFlight($0) })
            if m.members == current.members { return (current, current, events) }
            do throws(LoadBalancerError) {
                let next = try UpstreamSet.make(
                    members: m.members, defaultHealthPath: configuration.healthPath,
                    defaultPathIsExplicit: configuration.healthPathIsExplicit, expectedStatuses: configuration.healthExpectStatus,
                    previous: current, group: group, clusterConfiguration: clusterConfiguration, clock: clock, log: log)
                upstreamSet.publish(next)
                retiringCount.store(next.retiringCount, ordering: .relaxed)
                return (current, next, events)
            } catch {
                m = saved
                throw error
            }
        }
        if old !== new { closeRemovedEndpoints(old: old, new: new) }
        return (old, new, events)
    }

    /// Closes the idle connections of endpoints no longer in any set, now and once more after
    /// the longest request could have returned a connection to them.
    private func closeRemovedEndpoints(old: UpstreamSet, new: UpstreamSet) {
        let kept = Set(new.endpoints.map(ObjectIdentifier.init))
        let removed = old.endpoints.filter { !kept.contains(ObjectIdentifier($0)) }
        guard !removed.isEmpty else { return }
        for endpoint in removed { endpoint.closeIdleConnections() }
        let grace = configuration.effectiveRequestTimeout + .seconds(1)
        Task {
            try? await Task.sleep(for: grace)
            for endpoint in removed { endpoint.closeIdleConnections() }
        }
    }

    /// `3 backends (4 addresses); added ...; removed (draining) ...`: what a change did.
    static func changeSummary(old: UpstreamSet, new: UpstreamSet, declaredCount: Int) -> String {
        func active(_ set: UpstreamSet) -> [String] { set.members.filter { !$0.retiring }.map(\.url) }
        let before = active(old), after = active(new)
        let added = after.filter { !before.contains($0) }
        let removed = before.filter { !after.contains($0) }
        var parts = ["\(declaredCount) backends" + (after.count != declaredCount ? " (\(after.count) addresses)" : "")]
        if !added.isEmpty { parts.append("added " + added.joined(separator: ", ")) }
        if !removed.isEmpty { parts.append("removed (draining) " + removed.joined(separator: ", ")) }
        return parts.joined(separator: "; ")
    }

    // MARK: Resolution

    /// Resolves every declared host name again now (off the event loops) and applies what
    /// changed: new addresses join in slow start, vanished ones retire (drain, then leave), a
    /// name that fails keeps its last known addresses (logged once per failure streak).
    /// ``run()`` calls it every ``LoadBalancerConfiguration/resolveInterval``; call it yourself
    /// to pick up a change sooner.
    ///
    /// ```swift
    /// func addressesChanged(_ balancer: LoadBalancer) async {
    ///     await balancer.refreshBackends()
    /// }
    /// ```
    nonisolated(nonsending) public func refreshBackends() async {
        let names = membership.withLock { m in m.declared.map(\.url) }.compactMap { try? BackendURL(parsing: $0) }
            .filter { IPSocketAddress(ipLiteral: $0.host, port: $0.port) == nil }
        var outcomes: [(String, ResolutionOutcome)] = []
        for url in names { outcomes.append((url.description, await resolveOffLoop(url))) }
        let now = clock.now()
        var events: [LBLogEvent] = []
        do throws(LoadBalancerError) {
            (_, _, events) = try changeMembership { m, inFlight in
                var events: [LBLogEvent] = []
                for (origin, outcome) in outcomes {
                    switch outcome {
                    case .resolved(let addresses): events += m.resolved(origin, addresses: addresses, at: now, inFlight: inFlight)
                    case .failed(let why): events += m.resolutionFailed(origin, reason: why, at: now, inFlight: inFlight)
                    }
                }
                return events + m.sweep(inFlight: inFlight)
            }
        } catch {
            events = [LBLogEvent(level: .error, category: .config,
                                 message: "resolved addresses not applied, keeping the current backends: \(error)")]
        }
        for event in events { log(event) }
    }

    /// Re-resolves every `resolveInterval` until cancelled.
    nonisolated(nonsending) func runResolution() async {
        let interval = configuration.resolveInterval
        guard interval > .zero else { return }
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval, clock: .continuous) } catch { return }
            await refreshBackends()
        }
    }

    // MARK: Retiring backends

    /// Notes the start of an attempt on backend `index` of `up` (for retiring backends' drain).
    func attemptStarted(_ index: Int, in up: UpstreamSet) {
        up.cluster.attemptStarted(index)
        attemptActivityStarted(index, in: up)
    }

    /// ``attemptStarted(_:in:)`` without the cluster's part, for an attempt the cluster already
    /// counts (``BackendCluster/startAttempt(excluding:firstOfRequest:withHangThreshold:trial:hangThresholdNanoseconds:)``).
    @inline(__always)
    func attemptActivityStarted(_ index: Int, in up: UpstreamSet) {
        up.activity[index].started(onLoop: group.currentLoopIndex)
    }

    /// Notes the end of an attempt; the last attempt of a retiring backend removes it.
    func attemptEnded(_ index: Int, in up: UpstreamSet) {
        up.activity[index].ended(onLoop: group.currentLoopIndex)
        guard retiringCount.load(ordering: .relaxed) > 0 && up.activity[index].total <= 0 else { return }
        // The request's set may predate the retirement: ask the set in effect now.
        let current = upstreams
        if let i = current.names.firstIndex(of: up.names[index]), current.retiring[i] { sweepRetired() }
    }

    /// Removes retiring backends that have no attempt in flight.
    func sweepRetired() {
        do throws(LoadBalancerError) {
            let (_, _, events) = try changeMembership { m, inFlight in m.sweep(inFlight: inFlight) }
            for event in events { log(event) }
        } catch {
            // Removing backends cannot exceed the capacity or add a bad path; nothing to undo.
        }
    }
}
