import Hummingbird
import LBKitHummingbird
import LBKitTesting

// Backends: the arguments or BACKENDS (comma-separated URLs), else three echo backends started
// here on 127.0.0.1:5101-5103 (LBKitTesting). PORT picks the gateway's port (default 8080).
let environment = Environment()
var backends = Array(CommandLine.arguments.dropFirst())
if backends.isEmpty, let list = environment.get("BACKENDS") {
    backends = list.split(separator: ",").map(String.init)
}
var echo: (backend: EchoBackend, group: LBEventLoopGroup)?
if backends.isEmpty {
    let group = try LBEventLoopGroup(loopCount: 1, namePrefix: "echo")
    let backend = EchoBackend(configuration: EchoBackendConfiguration(ports: [5101, 5102, 5103]), group: group)
    backends = try backend.start().map { "http://127.0.0.1:\($0)" }
    echo = (backend, group)
}
let port = environment.get("PORT").flatMap { Int($0) } ?? 8080

// --- The balancing part: /api/* across the backends, 5 requests/s per client IP.
let router = Router(context: BalancerRequestContext.self)
let lb = try router.balance("/api", across: backends, rateLimit: 5)
router.get("/hello") { _, _ in "hello from hummingbird\n" }
router.addLoadBalancerEndpoints(lb.balancer, health: "/healthz", stats: "/lb/stats", metrics: "/metrics")
var app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
app.addServices(lb)
try await app.runService()   // Ctrl-C: the server stops, then the balancer drains and stops
// ---

if let echo {
    await echo.backend.shutdown()
    echo.group.shutdown()
}
