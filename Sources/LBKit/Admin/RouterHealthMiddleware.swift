/// `GET <path>` answered by the balancer itself, for every client (before throttling):
/// 200 `{"status":"router ok","backends":N,"eligible":M}`, 503
/// `{"status":"no backend available",...}` when no backend is eligible. Other methods and paths
/// pass on. See ``LoadBalancerConfiguration/routerHealthPath``.
struct RouterHealthMiddleware: SynchronousMiddleware {
    let balancer: LoadBalancer
    let path: String

    func handle(_ request: LBRequest, context: LBRequestContext,
                next: (LBRequest, LBRequestContext) async -> LBResponse) async -> LBResponse {
        guard case .answer(let response) = before(request, context: context) else { return await next(request, context) }
        return response
    }

    func before(_ request: LBRequest, context: LBRequestContext) -> MiddlewareVerdict {
        guard request.method == "GET" || request.method == "HEAD", request.head.path == path || request.head.target == path else {
            return .pass(mark: 0)
        }
        let (backends, eligible) = balancer.eligibility()
        let status = eligible > 0 ? "router ok" : "no backend available"
        return .answer(.json(status: eligible > 0 ? 200 : 503, "{\"status\":\"\(status)\",\"backends\":\(backends),\"eligible\":\(eligible)}"))
    }
}
