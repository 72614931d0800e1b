import Synchronization

/// Active health checks: a round of probes every `healthInterval`, what an answer says about
/// the backend (status, reported load) and the per-backend gauges refreshed after each round.
extension LoadBalancer {
    /// Probes every backend with `GET healthPath` every `healthInterval` until the task is cancelled.
    /// Probes of one round run concurrently (one per backend); a round waits for the previous one,
    /// so a slow backend never accumulates probes.
    nonisolated(nonsending) public func runHealthChecks() async {
        let interval = configuration.healthInterval
        guard interval > .zero else { return }
        while !Task.isCancelled {
            let roundStart = clock.now()
            let up = upstreams
            await withTaskGroup(of: Void.self) { tasks in
                // A retiring backend only finishes its requests: it is not probed.
                for index in up.endpoints.indices where !up.retiring[index] {
                    let loop = group.loops[probeCursor.add(1, ordering: .relaxed).oldValue % group.loops.count]
                    let timeout = up.cluster.probeTimeout(for: index)
                    tasks.addTask(executorPreference: loop) {
                        await self.probe(index, in: up, loop: loop, timeout: timeout)
                    }
                }
            }
            reportGauges()
            let wait = interval - (clock.now() - roundStart)
            if wait > .zero {
                do { try await Task.sleep(for: wait, clock: .continuous) } catch { return }
            }
        }
    }

    /// One active check of backend `index`.
    nonisolated(nonsending) func probe(_ index: Int, in up: UpstreamSet, loop: LBEventLoop, timeout: Duration) async {
        var head = RequestHead(method: "GET", target: up.healthPaths[index])
        head.headers.add(name: "Host", value: up.endpoints[index].authority)
        head.headers.add(name: "User-Agent", value: "lbserve-health-check")
        let start = clock.now()
        let result: HealthCheckResult
        do {
            let response = try await client.execute(UpstreamRequest(head: head), to: up.endpoints[index], on: loop, timeout: timeout)
            result = up.healthExpectations[index].judge(status: response.head.status)
            up.cluster.loadReported(index, Self.loadReport(response))
        } catch {
            result = healthCheckFailure(error, timeout: timeout)
        }
        up.cluster.probeFinished(index, result: result, latency: clock.now() - start, path: up.healthPaths[index])
        metrics?.increment(counter: "lb_health_checks_total", by: 1,
                           dimensions: [("backend", up.names[index]), ("result", result.resultLabel), ("cause", result.label)])
    }

    /// What a health answer says about the backend's load: the body's `cpu`/`memory` fields,
    /// overridden by the words of the `X-LB-Agent` header (see ``BackendLoadReport``).
    static func loadReport(_ response: UpstreamResponse) -> BackendLoadReport {
        var report = BackendLoadReport(jsonBody: response.body)
        let words = response.head.headers[BackendLoadReport.agentHeaderName]
        if !words.isEmpty { report = report.overridden(by: BackendLoadReport(agentHeader: words.joined(separator: ","))) }
        return report
    }

    /// The cause of a health check that got no usable answer.
    func healthCheckFailure(_ error: UpstreamError, timeout: Duration) -> HealthCheckResult {
        switch error.kind {
        case .connectRefused: .refused
        case .connectTimeout: .timeout(min(configuration.connectTimeout, timeout))
        case .timedOut: .timeout(timeout)
        case .connectFailed(let why): .connectFailed(why)
        case .connectionReset, .aborted: .reset
        case .malformedResponse(let why): .malformed(why)
        case .requestBodyFailed(let why): .malformed(why)  // a probe has no body: unreachable
        }
    }

    private func reportGauges() {
        guard let metrics else { return }
        for view in backendViews() {
            let b = view.snapshot
            metrics.record(gauge: "lb_backend_in_flight", value: Double(view.inFlight), dimensions: [("backend", b.url)])
            metrics.record(gauge: "lb_backend_up", value: b.isEligible ? 1 : 0, dimensions: [("backend", b.url)])
            metrics.record(gauge: "lb_backend_share", value: b.isEligible ? b.slowStartFactor : 0, dimensions: [("backend", b.url)])
            let name = b.stateName
            for state in BackendStateName.allCases {
                metrics.record(gauge: "lb_backend_state", value: name == state ? 1 : 0,
                               dimensions: [("backend", b.url), ("state", state.rawValue)])
            }
            if let cpu = b.reportedLoad?.lastReport?.cpu {
                metrics.record(gauge: "lb_backend_reported_cpu", value: cpu, dimensions: [("backend", b.url)])
            }
            if let memory = b.reportedLoad?.lastReport?.memory {
                metrics.record(gauge: "lb_backend_reported_memory", value: memory, dimensions: [("backend", b.url)])
            }
        }
    }
}
