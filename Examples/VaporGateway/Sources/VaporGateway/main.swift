import LBKitTesting
import LBKitVapor
import Vapor

// Stand-ins for real services: three in-process echo backends on 127.0.0.1:5201-5203.
let backendLoops = try LBEventLoopGroup(loopCount: 1, namePrefix: "echo")
let echo = EchoBackend(configuration: EchoBackendConfiguration(host: "127.0.0.1", ports: [5201, 5202, 5203]), group: backendLoops)
try echo.start()

var env = try Environment.detect()
try LoggingSystem.bootstrap(from: &env)
let app = try await Application.make(env)
app.http.server.configuration.hostname = "127.0.0.1"
app.http.server.configuration.port = 8081
app.get("hello") { _ in "hello from vapor\n" }

// --- The balancing part: /api/* round robin over the three backends, 5 requests/s per client
// (bursts of 10), health checks every 2 s; Vapor's lifecycle starts and stops the balancer.
var config = LoadBalancerConfiguration()
config.backends = try [5201, 5202, 5203].map { try BackendURL(parsing: "http://127.0.0.1:\($0)") }
config.rateLimit = 5
config.burst = 10
let balancer = try LoadBalancer(configuration: config, log: app.logger.loadBalancerLogSink, metrics: SwiftMetricsSink())
app.loadBalancer.use(balancer, pathPrefix: "/api", exposesBackendHeader: true)
app.grouped("_lb").loadBalancerAdmin(balancer)          // /_lb/health, /_lb/stats, /_lb/metrics
// --- end of the balancing part

do {
    try await app.execute()                             // until SIGINT / SIGTERM
} catch {
    app.logger.report(error: error)
}
try await app.asyncShutdown()                           // drains and stops the balancer
await echo.shutdown()
backendLoops.shutdown()
