// BackendCluster's retry budget and counters, and the snapshot behind /_lb/stats and the
// metrics: what the cluster counts and reports, apart from how it selects backends and
// judges attempts (BackendCluster.swift).

extension BackendCluster {
    // MARK: Retries

    /// Records a new client request: deposits `retryBudgetPercent`% of a token into the budget.
    public func requestStarted() {
        state.withLock { $0.retry.budget.deposit() }
    }

    /// Asks whether a failed attempt may be retried: withdraws one token from the retry budget
    /// if available. Counts granted and denied retries per reason.
    public func tryRetry(reason: RetryReason) -> Bool {
        state.withLock { s in
            let granted = s.retry.budget.tryWithdraw()
            if granted { s.retry.granted[reason.slot] += 1 } else { s.retry.denied[reason.slot] += 1 }
            return granted
        }
    }

    /// The backend's recent p99 latency (from requests and probes), or nil without samples.
    public func recentP99(_ index: Int) -> Duration? {
        let now = clock.now()
        return state.withLock { s in
            s.latency.indices.contains(index) ? s.latency[index].quantile(0.99, at: now) : nil
        }
    }

    /// Counts a retry that does not draw on the budget: a request that provably never reached a
    /// backend (connect refused / timed out) always moves on, since it adds no load to any backend.
    public func recordUnbudgetedRetry(reason: RetryReason) {
        state.withLock { $0.retry.granted[reason.slot] += 1 }
    }

    /// Retry counters since the cluster was created.
    public func retryStatistics() -> RetryStatistics {
        state.withLock { s in
            var stats = RetryStatistics()
            for reason in RetryReason.allCases {
                stats.granted[reason] = s.retry.granted[reason.slot]
                stats.denied[reason] = s.retry.denied[reason.slot]
            }
            return stats
        }
    }

    // MARK: Introspection

    /// The state and statistics of every backend (applying due time-based transitions first).
    public func snapshot() -> [BackendSnapshot] {
        let now = clock.now()
        var transitions: [(Int, HealthTransition)] = []
        let result = state.withLock { s -> [BackendSnapshot] in
            if now >= s.nextDeadline { s.refresh(at: now, into: &transitions) }
            var result: [BackendSnapshot] = []
            result.reserveCapacity(s.health.count)
            for i in 0..<s.health.count {
                let health = s.health[i]
                let stats = s.stats[i]
                let latency = s.latency[i]
                result.append(BackendSnapshot(
                    index: i, url: backends[i].url, weight: backends[i].weight,
                    state: health.state, reason: health.reason, since: health.since,
                    requests: stats.requests, successes: stats.successes, failures: stats.failures,
                    retries: stats.retries, inFlight: stats.inFlight,
                    latencyEWMA: latency.peakEWMA?.milliseconds ?? 0,
                    latencyP50: latency.quantile(0.5, at: now)?.milliseconds ?? 0,
                    latencyP99: latency.quantile(0.99, at: now)?.milliseconds ?? 0,
                    ejectionCount: health.ejectionCount,
                    slowStartFactor: health.slowStartFactor(at: now),
                    draining: s.draining[i],
                    histogram: stats.histogram,
                    lastByteHistogram: stats.lastByteHistogram,
                    lastCheck: stats.lastCheck,
                    healthChecks: stats.healthChecks,
                    exclusions: stats.exclusions,
                    responses: stats.responses,
                    readmission: health.state == .healthy ? nil : health.readmission,
                    reportedLoad: s.load[i]))
            }
            return result
        }
        emit(transitions)
        return result
    }
}
