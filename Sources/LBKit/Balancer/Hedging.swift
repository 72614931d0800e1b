import Synchronization

extension LoadBalancer {
    /// The instant after which an unanswered replayable attempt on `index` gets a hedge, or nil
    /// for none (see ``LoadBalancerConfiguration/hedgeAfter``). Reads the p99 from `cluster`, the
    /// request's own snapshot of the backends.
    func hedgePoint(for index: Int, in cluster: BackendCluster, from now: MonotonicInstant) -> MonotonicInstant? {
        hedgeDelayNanoseconds(for: index, in: cluster).map { now + .nanoseconds(Int64(clamping: $0)) }
    }

    /// How long after it was sent an unanswered replayable attempt on `index` gets a hedge, in
    /// nanoseconds (the forwarding loop turns it into the exchange's soft deadline directly).
    func hedgeDelayNanoseconds(for index: Int, in cluster: BackendCluster) -> UInt64? {
        if let fixed = configuration.hedgeAfter {
            guard fixed > .zero else { return nil }
            return UInt64(fixed.nanosecondsClamped)
        }
        if let maxDelay = configuration.maxDelay {
            let p99 = cluster.recentP99(index) ?? maxDelay
            return UInt64(max(0, min(maxDelay, max(.milliseconds(2), p99 * 2)).nanosecondsClamped))
        }
        return cluster.hangThresholdNanoseconds(index)
    }

    /// Whether a replayable request is hedged at its backend's hang threshold: when neither a
    /// fixed hedge delay nor a latency bound (`maxDelay`) is configured. Without a latency
    /// bound, hedge where the backend would count as hung: a stalled backend's replayable
    /// requests move on as soon as it is caught.
    var hedgesAtHangThreshold: Bool { configuration.hedgeAfter == nil && configuration.maxDelay == nil }

    /// Races the pending first attempt against a second attempt on another backend. Returns as soon
    /// as either gives a good answer (status below 500), or both have failed (then the later one).
    /// The loser is not aborted: the backend already has the request, and letting it finish in its
    /// own task yields its true latency and outcome for the health and latency trackers (a slow
    /// backend is recognised as slow after a few such samples). The client never waits for it.
    ///
    /// Never inlined: its locals (a task priority, the race's lock) have sizes the compiler
    /// reads from type metadata, so inlined into ``forward(_:context:)`` they cost every request
    /// three task allocations at entry, hedged or not.
    @inline(never)
    func hedge(_ upstream: UpstreamRequest, in up: UpstreamSet, pending: PendingExchange,
               firstIndex: Int, firstStart: MonotonicInstant, firstDeadline: MonotonicInstant,
               plan: inout AttemptPlan, loop: LBEventLoop) async -> AttemptRecord {
        let cluster = up.cluster
        let firstDeadlineNs = UpstreamClient.deadline(after: firstDeadline - clock.now())
        var chosen: Int?
        if case .backend(let candidate) = cluster.choose(excluding: plan.tried) {
            if cluster.tryRetry(reason: .hedge) { chosen = candidate } else { cluster.choiceAbandoned(candidate) }
        }
        let secondStart = clock.now()
        guard let second = chosen,
              case .admitted(let secondDeadline) = plan.admit(now: secondStart, budget: { _ in true }) else {
            if let chosen { cluster.choiceAbandoned(chosen) }
            // Nobody to hedge to (or no budget, or no time): wait for the first attempt as usual.
            return await AttemptRecord.run(index: firstIndex, start: firstStart) { () async throws(UpstreamError) in
                try await self.client.finish(pending, deadline: firstDeadlineNs)
            }
        }
        plan.started(second)
        attemptStarted(second, in: up)
        let secondDeadlineNs = UpstreamClient.deadline(after: secondDeadline - secondStart)
        let race = HedgeRace()
        let client = self.client
        Task(executorPreference: loop) {
            let record = await AttemptRecord.run(index: firstIndex, start: firstStart) { () async throws(UpstreamError) in
                try await client.finish(pending, deadline: firstDeadlineNs)
            }
            if !race.offer(record) {
                self.record(record, in: up)
                if case .success(let lost) = record.result { lost.bodyStream?.abandon() }
            }
        }
        Task(executorPreference: loop) {
            let record = await AttemptRecord.run(index: second, start: secondStart) { () async throws(UpstreamError) in
                try await client.execute(upstream, to: up.endpoints[second], on: loop, deadline: secondDeadlineNs)
            }
            if !race.offer(record) {
                self.record(record, in: up)
                if case .success(let lost) = record.result { lost.bodyStream?.abandon() }
            }
        }
        return await race.winner()
    }
}

/// The meeting point of two hedged attempts. The first good answer decides; a failure decides
/// only when the other attempt has failed too. An offer that does not decide returns false and
/// its task reports that attempt itself.
final class HedgeRace: Sendable {
    private struct State {
        var decided: LoadBalancer.AttemptRecord?
        var failures = 0
        var waiter: CheckedContinuation<LoadBalancer.AttemptRecord, Never>?
    }
    private let state = Mutex(State())

    init() {}

    /// Offers an attempt's result; true when it decided the race (the caller of ``winner()``
    /// then reports it).
    func offer(_ record: LoadBalancer.AttemptRecord) -> Bool {
        let (decides, waiter) = state.withLock { s -> (Bool, CheckedContinuation<LoadBalancer.AttemptRecord, Never>?) in
            if s.decided != nil { return (false, nil) }
            if !record.isGood {
                s.failures += 1
                if s.failures < 2 { return (false, nil) }
            }
            s.decided = record
            let w = s.waiter
            s.waiter = nil
            return (true, w)
        }
        guard decides else { return false }
        waiter?.resume(returning: record)
        return true
    }

    /// Suspends until the race is decided.
    nonisolated(nonsending) func winner() async -> LoadBalancer.AttemptRecord {
        await withCheckedContinuation { (c: CheckedContinuation<LoadBalancer.AttemptRecord, Never>) in
            let ready = state.withLock { s -> LoadBalancer.AttemptRecord? in
                if let d = s.decided { return d }
                s.waiter = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }
}
