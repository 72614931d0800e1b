import LBKitVapor
import Vapor

// Bench only. usage: BACKENDS=http://127.0.0.1:5001,http://127.0.0.1:5002 \
//   VaporEmbedded serve --env production --hostname 127.0.0.1 --port 8495
// GET /hello: a trivial Vapor route. /api/*: balanced by LBKit (prefix stripped, no rate limit,
// defaults otherwise), as the VaporGateway example does minus its per-client limit.
var env = try Environment.detect()
try LoggingSystem.bootstrap(from: &env)
let app = try await Application.make(env)
app.get("hello") { _ in "hello from vapor\n" }

var config = LoadBalancerConfiguration()
config.backends = try (Environment.get("BACKENDS") ?? "").split(separator: ",").map { try BackendURL(parsing: String($0)) }
let balancer = try LoadBalancer(configuration: config, log: app.logger.loadBalancerLogSink)
app.loadBalancer.use(balancer, pathPrefix: "/api", stripPrefix: true)

do {
    try await app.execute()
} catch {
    app.logger.report(error: error)
}
try await app.asyncShutdown()
