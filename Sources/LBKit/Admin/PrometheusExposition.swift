/// The Prometheus text exposition of the balancer's counters, histograms and per-backend state.
extension LoadBalancer {
    /// The `/_lb/metrics` Prometheus text exposition (format 0.0.4), to serve on any route.
    public func prometheusText() -> String {
        let cluster = upstreams.cluster
        var out = ""
        let c = counters
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        /// The `_bucket`/`_sum`/`_count` series of one histogram: `cumulative` holds the count at
        /// or below each of `bounds`, then the total (`+Inf`); `labels` is `backend="…"` or empty.
        func histogram(_ name: String, labels: String = "", bounds: [Double], cumulative: [Int], sum: Double) {
            let bucketLabels = labels.isEmpty ? "" : labels + ","
            for (i, bound) in bounds.enumerated() {
                out += "\(name)_bucket{\(bucketLabels)le=\"\(bound)\"} \(cumulative[i])\n"
            }
            let total = cumulative[bounds.count]
            let series = labels.isEmpty ? "" : "{\(labels)}"
            out += "\(name)_bucket{\(bucketLabels)le=\"+Inf\"} \(total)\n"
            out += "\(name)_sum\(series) \(sum)\n"
            out += "\(name)_count\(series) \(total)\n"
        }
        /// One backend's latency histogram.
        func backendHistogram(_ name: String, _ h: LatencyHistogram, backend: String) {
            histogram(name, labels: "backend=\"\(backend)\"", bounds: LatencyHistogram.bounds, cumulative: h.cumulativeCounts, sum: h.sum)
        }
        family("lb_build_info", "gauge", "Always 1; the LBKit version as a label.")
        out += "lb_build_info{version=\"\(LBKitVersion.string)\"} 1\n"
        family("lb_requests_total", "counter", "Client requests answered, by status class.")
        for digit in 1...5 {
            out += "lb_requests_total{code=\"\(digit)xx\"} \(c.responses(ofClass: digit))\n"
        }
        family("lb_request_duration_seconds", "histogram",
               "Client request duration inside the balancer (until the response head is ready), whoever answered.")
        let durations = c.requestDurations
        histogram("lb_request_duration_seconds", bounds: RequestDurationHistogram.bounds, cumulative: durations.counts, sum: durations.sum)
        family("lb_throttled_total", "counter", "Requests answered 429 by per-client throttling.")
        out += "lb_throttled_total \(throttleMiddleware?.throttledRequests ?? 0)\n"
        family("lb_throttle_penalties_total", "counter", "Clients put in the penalty box (stricter limit) for repeated 429s.")
        out += "lb_throttle_penalties_total \(throttle?.penaltiesStarted ?? 0)\n"
        family("lb_reloads_total", "counter", "Configuration reloads, by outcome (success, failure).")
        out += "lb_reloads_total{outcome=\"success\"} \(c.reloadsSucceeded.load(ordering: .relaxed))\n"
        out += "lb_reloads_total{outcome=\"failure\"} \(c.reloadsFailed.load(ordering: .relaxed))\n"
        family("lb_tunnels_opened_total", "counter", "Upgraded connections (WebSocket) relayed.")
        out += "lb_tunnels_opened_total \(c.tunnelsOpened.load(ordering: .relaxed))\n"
        family("lb_tunnels_open", "gauge", "Upgraded connections open now.")
        out += "lb_tunnels_open \(c.tunnelsOpen.load(ordering: .relaxed))\n"
        family("lb_no_backend_total", "counter", "Requests answered 503 because no backend was eligible.")
        out += "lb_no_backend_total \(c.noBackend.load(ordering: .relaxed))\n"
        family("lb_retry_budget_exhausted_total", "counter", "Retries refused by the retry budget.")
        out += "lb_retry_budget_exhausted_total \(c.budgetExhausted.load(ordering: .relaxed))\n"
        family("lb_retries_total", "counter", "Retries sent to another backend, by reason.")
        let retryStats = cluster.retryStatistics()
        for reason in RetryReason.allCases {
            out += "lb_retries_total{reason=\"\(reason.rawValue)\"} \(retryStats.granted[reason] ?? 0)\n"
        }
        let views = backendViews()
        let snapshot = views.map(\.snapshot)
        family("lb_backend_requests_total", "counter", "Attempts sent to each backend.")
        for b in snapshot { out += "lb_backend_requests_total{backend=\"\(b.url)\"} \(b.requests)\n" }
        family("lb_backend_failures_total", "counter", "Failed attempts per backend, by kind.")
        for b in snapshot {
            for (kind, v) in [("connect", b.failures.connect), ("reset", b.failures.reset), ("timeout", b.failures.timeout), ("5xx", b.failures.status5xx)] {
                out += "lb_backend_failures_total{backend=\"\(b.url)\",kind=\"\(kind)\"} \(v)\n"
            }
        }
        family("lb_backend_responses_total", "counter", "Answers each backend gave to proxied attempts, by status class.")
        for b in snapshot {
            for (cls, v) in b.responses.byLabel {
                out += "lb_backend_responses_total{backend=\"\(b.url)\",code=\"\(cls)\"} \(v)\n"
            }
        }
        family("lb_backend_ejections_total", "counter",
               "Times each backend was taken out of rotation, by reason (see ExclusionCause).")
        for b in snapshot {
            for cause in ExclusionCause.allCases {
                out += "lb_backend_ejections_total{backend=\"\(b.url)\",reason=\"\(cause.rawValue)\"} \(b.exclusions[cause])\n"
            }
        }
        family("lb_backend_retries_total", "counter", "Retry attempts sent to each backend (a request that failed elsewhere first).")
        for b in snapshot { out += "lb_backend_retries_total{backend=\"\(b.url)\"} \(b.retries)\n" }
        family("lb_backend_in_flight", "gauge", "Attempts in progress per backend.")
        for v in views { out += "lb_backend_in_flight{backend=\"\(v.snapshot.url)\"} \(v.inFlight)\n" }
        family("lb_backend_up", "gauge", "1 when the backend takes new requests (healthy, warming or probing, not draining), else 0.")
        for b in snapshot { out += "lb_backend_up{backend=\"\(b.url)\"} \(b.isEligible ? 1 : 0)\n" }
        family("lb_backend_share", "gauge",
               "Share of its normal traffic the backend takes now: 1 in service, ramping up from 0.1 while warming, 0 when it takes none.")
        for b in snapshot { out += "lb_backend_share{backend=\"\(b.url)\"} \(b.isEligible ? b.slowStartFactor : 0)\n" }
        family("lb_backend_state", "gauge", "1 for the state the backend is in, 0 for every other state name.")
        for b in snapshot {
            let current = b.stateName
            for state in BackendStateName.allCases {
                out += "lb_backend_state{backend=\"\(b.url)\",state=\"\(state.rawValue)\"} \(current == state ? 1 : 0)\n"
            }
        }
        family("lb_health_checks_total", "counter", "Active health checks per backend, by result (pass, fail) and cause.")
        for b in snapshot {
            for entry in b.healthChecks.counts {
                out += "lb_health_checks_total{backend=\"\(b.url)\",result=\"\(entry.result)\",cause=\"\(entry.cause)\"} \(entry.count)\n"
            }
        }
        family("lb_backend_reported_cpu", "gauge", "CPU load the backend reported in its last health answer, as a fraction (absent until it reports).")
        for b in snapshot { if let cpu = b.reportedLoad?.lastReport?.cpu { out += "lb_backend_reported_cpu{backend=\"\(b.url)\"} \(cpu)\n" } }
        family("lb_backend_reported_memory", "gauge", "Memory use the backend reported in its last health answer, as a fraction (absent until it reports).")
        for b in snapshot { if let memory = b.reportedLoad?.lastReport?.memory { out += "lb_backend_reported_memory{backend=\"\(b.url)\"} \(memory)\n" } }
        family("lb_backend_overloads_total", "counter", "Times the backend left the rotation because its reported load was over --max-backend-cpu/--max-backend-memory.")
        for b in snapshot { out += "lb_backend_overloads_total{backend=\"\(b.url)\"} \(b.reportedLoad?.overloadCount ?? 0)\n" }
        family("lb_backend_latency_seconds", "histogram", "Latency of attempts sent to each backend (time to the complete response).")
        for b in snapshot { backendHistogram("lb_backend_latency_seconds", b.histogram, backend: b.url) }
        family("lb_backend_last_byte_seconds", "histogram", "Time to the last byte of proxied response bodies per backend (streamed bodies included).")
        for b in snapshot { backendHistogram("lb_backend_last_byte_seconds", b.lastByteHistogram, backend: b.url) }
        family("lb_backend_latency_ewma_seconds", "gauge", "Peak-sensitive EWMA of response latency per backend.")
        for b in snapshot { out += "lb_backend_latency_ewma_seconds{backend=\"\(b.url)\"} \(b.latencyEWMA / 1000)\n" }
        if let store = throttleMiddleware?.sharedStore { out += store.prometheusText() }
        return out
    }
}
