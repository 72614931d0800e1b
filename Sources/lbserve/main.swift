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
if options.showVersion {
    StandardOutput.line(LBServeCommandLine.versionLine)
    exit(0)
}
if options.checkConfig {
    // Everything was validated by load(); print what would run, warnings on stderr.
    for warning in LBServeCommandLine.warnings(setup) { StandardOutput.errorLine("lbserve: warning: \(warning)") }
    StandardOutput.line(ConfigFile.render(options, healthPaths: setup.healthPaths))
    exit(0)
}
let logOutput = LogOutput(level: options.serve.logLevel, format: options.serve.logFormat)

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
            logOutput.banner("Backend running on port \(port)")
            config.backends.append(try BackendURL(parsing: "http://127.0.0.1:\(port)"))
        }
    } catch {
        fail("demo backends: \(error)")
    }
    demo = backend
}

let balancer: LoadBalancer
do {
    let accessFormat = options.serve.logFormat
    balancer = try LoadBalancer(configuration: config, group: group, healthPaths: setup.healthPaths,
                                log: logOutput.sink,
                                accessLog: { AccessLogWriter.shared.write(AccessLogFormat.line($0, format: accessFormat)) })
} catch {
    fail("--backend: \(error)")
}
var serverConfig = HTTP1ServerConfiguration(host: config.host, port: config.port)
serverConfig.maxBodyBytes = config.maxBodyBytes
// The chain: router health path, per-client throttle, then the /_lb/* admin endpoints (unless
// they have their own listener), then the balancer.
let adminOnPublic = options.serve.adminListen == nil
let server = HTTP1Server(configuration: serverConfig, group: group, handler: balancer.responder(admin: adminOnPublic))
let address: IPSocketAddress
do {
    address = try server.start()
} catch {
    fail("--port: \(error)")
}
var adminServer: HTTP1Server?
if let listen = options.serve.adminListen {
    let admin = HTTP1Server(configuration: HTTP1ServerConfiguration(host: listen.host, port: listen.port), group: group,
                            handler: balancer.adminResponder())
    do {
        let adminAddress = try admin.start()
        logOutput.banner("Admin running on port \(adminAddress.port)")
    } catch {
        fail("--admin-listen: \(error)")
    }
    adminServer = admin
}
logOutput.banner("Router running on port \(address.port)")
for url in config.backends {
    logOutput.write(LBLogEvent(level: .info, category: .config, message: "backend \(url)", metadata: ["backend": url.description]))
}
for warning in LBServeCommandLine.warnings(setup) {
    logOutput.write(LBLogEvent(level: .warning, category: .config, message: "warning: \(warning)"))
}

/// SIGHUP: re-read the config file (flags still win); apply backend changes live, keep the old
/// configuration when the file is invalid.
@MainActor func reload() {
    guard options.configFile != nil else {
        logOutput.write(LBLogEvent(level: .notice, category: .config, message: "SIGHUP ignored: lbserve was started without --config"))
        return
    }
    let next: LBServeCommandLine.Setup
    do {
        next = try LBServeCommandLine.load(arguments, environment: environment)
    } catch {
        balancer.noteReloadFailure()
        for line in error.message.split(separator: "\n") {
            logOutput.write(LBLogEvent(level: .error, category: .config, message: "reload failed, keeping the current configuration: \(line)"))
        }
        return
    }
    do {
        let cfg = next.options.balancer
        try balancer.reload(backends: cfg.backends, weights: cfg.weights, healthPaths: next.healthPaths)
        for warning in LBServeCommandLine.warnings(next) {
            logOutput.write(LBLogEvent(level: .warning, category: .config, message: "warning: \(warning)"))
        }
        var rest = cfg
        rest.backends = config.backends
        rest.weights = config.weights
        if rest != config {
            logOutput.write(LBLogEvent(level: .notice, category: .config, message: "note: only backend changes (add, remove, weight, health path) apply on reload; restart lbserve for the other changed settings"))
        }
    } catch {
        logOutput.write(LBLogEvent(level: .error, category: .config, message: "reload failed, keeping the current configuration: \(error)"))
    }
}

let background = Task { try await balancer.run() }
var received = await stop.wait()
while received == SIGHUP {
    reload()
    received = await stop.wait()
}
logOutput.write(LBLogEvent(level: .notice, category: .lifecycle, message: "signal \(received): draining connections"))
balancer.shutdown()
await server.shutdown(timeout: .seconds(10))
await adminServer?.shutdown(timeout: .seconds(1))
_ = await background.result
await demo?.shutdown(timeout: .seconds(2))
AccessLogWriter.shared.flush()
logOutput.write(LBLogEvent(level: .notice, category: .lifecycle, message: "shutdown done"))
exit(0)
