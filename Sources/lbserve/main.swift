// lbserve: the LBKit reference balancer. Thin wrapper: flags -> LoadBalancerConfiguration,
// then wiring (event loops, demo backends, server, health checks, signals). Logic lives in LBKit.
import Glibc
import LBKit
import LBKitTesting
import LBServeSupport

func fail(_ message: String) -> Never {
    for line in message.split(separator: "\n") { StandardOutput.errorLine("lbserve: \(line)") }
    exit(2)
}

var environment: [String: String] = [:]
for key in LBServeCommandLine.environmentVariables {
    if let v = getenv(key) { environment[key] = String(cString: v) }
}
let arguments = Array(CommandLine.arguments.dropFirst())
let setup: LBServeCommandLine.Setup
do {
    setup = try LBServeCommandLine.load(arguments, environment: environment)
} catch {
    fail(error.message)
}
let options = setup.options
if options.showHelp {
    StandardOutput.line(LBServeCommandLine.usage)
    exit(0)
}

// First, before any thread exists: SIGTERM/SIGINT are blocked and taken by a sigwait thread, so
// a signal sent as soon as "Router running" is printed is never lost.
let stop = SignalWaiter(signals: [SIGTERM, SIGINT, SIGHUP])
signal(SIGPIPE, SIG_IGN)
MemoryReclaimer.start()
var config = options.balancer
let group: LBEventLoopGroup
do {
    group = try LBEventLoopGroup(loopCount: config.loopCount)
} catch {
    fail("cannot start event loops: \(error)")
}

var demo: EchoBackend?
if options.demoBackends {
    let backend = EchoBackend(configuration: EchoBackendConfiguration(host: "127.0.0.1", ports: [5001, 5002, 5003]), group: group)
    do {
        for port in try backend.start() {
            StandardOutput.line("Backend running on port \(port)")
            config.backends.append(try BackendURL(parsing: "http://127.0.0.1:\(port)"))
        }
    } catch {
        fail("demo backends: \(error)")
    }
    demo = backend
}

let balancer: LoadBalancer
do {
    balancer = try LoadBalancer(configuration: config, group: group, healthPaths: setup.healthPaths,
                                log: { StandardOutput.line($0.line) },
                                accessLog: { AccessLogWriter.shared.write(AccessLogFormat.line($0)) })
} catch {
    fail("--backend: \(error)")
}
var serverConfig = HTTP1ServerConfiguration(host: config.host, port: config.port)
serverConfig.maxBodyBytes = config.maxBodyBytes
// The chain: per-client throttle, then the /_lb/* admin endpoints, then the balancer.
let server = HTTP1Server(configuration: serverConfig, group: group, handler: balancer.responder(admin: true))
let address: IPSocketAddress
do {
    address = try server.start()
} catch {
    fail("--port: \(error)")
}
StandardOutput.line("Router running on port \(address.port)")
for url in config.backends { StandardOutput.line("[CONFIG] backend \(url)") }

/// SIGHUP: re-read the config file (flags still win); apply backend changes live, keep the old
/// configuration when the file is invalid.
@MainActor func reload() {
    guard options.configFile != nil else {
        StandardOutput.line("[CONFIG] SIGHUP ignored: lbserve was started without --config")
        return
    }
    let next: LBServeCommandLine.Setup
    do {
        next = try LBServeCommandLine.load(arguments, environment: environment)
    } catch {
        StandardOutput.line("[CONFIG] reload failed, keeping the current configuration: \(error.message.split(separator: "\n").joined(separator: "; "))")
        return
    }
    do {
        let cfg = next.options.balancer
        try balancer.reload(backends: cfg.backends, weights: cfg.weights, healthPaths: next.healthPaths)
        var rest = cfg
        rest.backends = config.backends
        rest.weights = config.weights
        if rest != config {
            StandardOutput.line("[CONFIG] note: only backend changes (add, remove, weight, health path) apply on reload; restart lbserve for the other changed settings")
        }
    } catch {
        StandardOutput.line("[CONFIG] reload failed, keeping the current configuration: \(error)")
    }
}

let background = Task { try await balancer.run() }
var received = await stop.wait()
while received == SIGHUP {
    reload()
    received = await stop.wait()
}
StandardOutput.line("[SHUTDOWN] signal \(received): draining connections")
balancer.shutdown()
await server.shutdown(timeout: .seconds(10))
_ = await background.result
await demo?.shutdown(timeout: .seconds(2))
AccessLogWriter.shared.flush()
StandardOutput.line("[SHUTDOWN] done")
exit(0)
