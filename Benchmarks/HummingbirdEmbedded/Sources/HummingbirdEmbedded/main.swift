import Hummingbird
import LBKitHummingbird
import NIOCore
import NIOPosix

// NIO_TAKEOVER=1: Swift concurrency's global executor becomes SwiftNIO's event loops (before anything
// else, as an app does at the top of main), so a handler runs on the loop that read its request.
// LBKit's hook for jobs from its own loop threads is then put in front of NIO's.
if Environment().get("NIO_TAKEOVER") == "1" {
    print("NIO take-over: \(NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor())")
}

// Bench only. usage: PORT=8491 HummingbirdEmbedded http://127.0.0.1:5001 http://127.0.0.1:5002 ...
// GET /hello: a trivial Hummingbird route. /api/*: balanced by LBKit (prefix stripped, no rate
// limit, defaults otherwise: health checks, failover, ejection), as the HummingbirdGateway example
// does minus its per-client limit.
let backends = Array(CommandLine.arguments.dropFirst())
// LB_KEEP_JOBS=0: a request resumed by LBKit's loop (the backend answered) goes back to a thread
// of the global pool, as before LoadBalancerConfiguration.keepsResumedTasksOnLoops (default true).
let keepsResumedTasksOnLoops = Environment().get("LB_KEEP_JOBS") != "0"
let port = Environment().get("PORT").flatMap { Int($0) } ?? 8491

let router = Router(context: BalancerRequestContext.self)
router.get("/hello") { _, _ in "hello from hummingbird\n" }
// LB_LOOPS=N: the balancer's event loops (default one per core).
let loopCount = Environment().get("LB_LOOPS").flatMap { Int($0) }
let lb = try router.balance("/api", across: backends) {
    $0.keepsResumedTasksOnLoops = keepsResumedTasksOnLoops
    if let loopCount { $0.loopCount = loopCount }
}
var app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
app.addServices(lb)
if Environment().get("LB_EXECUTOR") == "1" {
    // Request handling on LBKit's loops: each request and its upstream exchange share a thread.
    try await withTaskExecutorPreference(lb.balancer.eventLoopGroup) { try await app.runService() }
} else {
    try await app.runService()
}
