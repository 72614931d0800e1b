/// Request accounting: every client response counted by status, its duration recorded, its
/// access-log record and metrics written.
extension LoadBalancer {
    /// Counts a response to a client request (whoever produced it: balancer, throttle, user
    /// middleware), records its duration (`lb_request_duration_seconds`) and writes its
    /// access-log record and metrics.
    func record(_ response: LBResponse, request: LBRequest, context: LBRequestContext, start: MonotonicInstant) {
        let (backend, attempts) = response.upstream
        let elapsed = clock.now() - start
        counters.count(status: response.status, elapsedNanoseconds: elapsed.nanosecondsClamped, loopIndex: group.currentLoopIndex)
        if metrics == nil && accessLog == nil { return }
        if let metrics {
            let statusClass = ProxyCounters.statusClass(response.status)
            metrics.increment(counter: "lb_requests_total", by: 1, dimensions: [("status_class", statusClass)])
            metrics.record(histogram: "lb_request_duration_seconds", seconds: Double(elapsed.nanosecondsClamped) / 1e9, dimensions: [])
            // lb_backend_responses_total is counted per answered attempt (forwarding).
            if backend == nil && response.status == 429 {
                metrics.increment(counter: "lb_throttled_total", by: 1, dimensions: [])
            } else if backend == nil && response.status == 503 && attempts == 0 {
                metrics.increment(counter: "lb_no_backend_total", by: 1, dimensions: [])
            }
            if attempts > 1 {
                metrics.increment(counter: "lb_retries_total", by: attempts - 1, dimensions: [])
            }
        }
        if let accessLog {
            let client = throttleMiddleware?.client(of: request, context: context) ?? context.clientAddress
            func length(_ headers: HeaderFields, buffered: Int, streamed: Bool) -> Int? {
                streamed ? headers.first(name: "Content-Length").flatMap { Int($0) } : buffered
            }
            accessLog(AccessLogRecord(client: client?.description, method: request.method, target: request.target,
                                      status: response.status, backend: backend, attempts: attempts, duration: elapsed,
                                      userAgent: request.headers.first(name: "User-Agent"),
                                      upstreamStatus: backend == nil ? nil : response.status,
                                      bytesIn: length(request.headers, buffered: request.body.count, streamed: request.bodyStream != nil),
                                      bytesOut: length(response.head.headers, buffered: response.body.count, streamed: response.bodyStream != nil)))
        }
    }
}

/// The first step of ``LoadBalancer/responder(admin:middlewares:)``: counts every client
/// response by status, feeds metrics and the access log. Requests the admin endpoints answer
/// are not counted (other clients' `/_lb/` requests are proxied, and counted).
struct RequestAccounting: SynchronousMiddleware {
    let balancer: LoadBalancer
    let adminInChain: Bool

    /// `after` is told not to count a request the admin endpoints answer.
    static let unrecorded = UInt64.max

    func handle(_ request: LBRequest, context: LBRequestContext,
                next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
        guard case .pass(let mark) = before(request, context: context) else { return await next(request, context) }
        let response = await next(request, context)
        after(response, request: request, context: context, mark: mark)
        return response
    }

    func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
        if adminInChain && balancer.answersAdmin(request, context: context) { return .pass(mark: Self.unrecorded) }
        // Two clock reads per request (tens of nanoseconds, vDSO): the duration histogram of
        // /_lb/metrics is always kept.
        return .pass(mark: balancer.clock.now().nanoseconds)
    }

    func after(_ response: LBResponse, request: LBRequest, context: LBRequestContext, mark: UInt64) {
        if mark == Self.unrecorded { return }
        balancer.record(response, request: request, context: context, start: MonotonicInstant(nanoseconds: mark))
    }
}
