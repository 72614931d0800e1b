// echo: the LBKit test backend. Thin wrapper: flag parsing and wiring; the behaviour lives in
// LBKit's EchoBackend.
import Dispatch
import Glibc
import LBKit
import LBKitTesting
import LBServeSupport

let usage = """
    usage: echo --port 5001 [--port 5002 ...] [--host 127.0.0.1] [--mode echo|alternate|slow|down] [--delay-ms 10000]
                [--max-body-bytes 8388608]
    endpoints beyond the contract: POST /_echo/sink (counts a body of any size), GET /_echo/bytes?n=N,
    GET /_echo/stream?chunks=K&interval_ms=M (server-sent events),
    POST /_echo/delay?ms=N[&health=fast|delayed] (fast: GET /health answers without the delay),
    POST /_echo/load?cpu=F&memory=F[&agent=drain|down|ready][&weight=N] (what GET /health reports; no parameter = measured)
    """

func fail(_ message: String) -> Never {
    StandardOutput.errorLine("echo: \(message)")
    exit(2)
}

struct EchoOptions {
    var ports: [Int] = []
    var host = "127.0.0.1"
    var mode = EchoMode.echo
    var delayMs = 10_000
    var maxBodyBytes = 8 * 1024 * 1024
}

func parseArguments(_ args: [String]) -> EchoOptions {
    var options = EchoOptions()
    var i = 0
    func nextValue(_ flag: String) -> String {
        i += 1
        guard i < args.count else { fail("\(flag): missing value") }
        return args[i]
    }
    while i < args.count {
        let flag = args[i]
        switch flag {
        case "-h", "--help":
            StandardOutput.line(usage)
            exit(0)
        case "--port":
            let v = nextValue(flag)
            guard let p = Int(v), (0...65535).contains(p) else { fail("--port: '\(v)' is not a port number") }
            options.ports.append(p)
        case "--host": options.host = nextValue(flag)
        case "--mode":
            let v = nextValue(flag)
            guard let m = EchoMode(rawValue: v) else { fail("--mode: '\(v)' is not one of echo, alternate, slow, down") }
            options.mode = m
        case "--delay-ms":
            let v = nextValue(flag)
            guard let d = Int(v), d >= 0 else { fail("--delay-ms: '\(v)' is not a non-negative integer") }
            guard d <= 3_600_000 else { fail("--delay-ms: '\(v)' is over 3600000 (one hour)") }
            options.delayMs = d
        case "--max-body-bytes":
            let v = nextValue(flag)
            guard let n = Int(v), n >= 0, n <= 1 << 40 else { fail("--max-body-bytes: '\(v)' is not an integer from 0 to 2^40") }
            options.maxBodyBytes = n
        default:
            fail("\(flag): unknown flag (see echo --help)")
        }
        i += 1
    }
    if options.ports.isEmpty { fail("--port: at least one port is required (see echo --help)") }
    return options
}

let options = parseArguments(Array(CommandLine.arguments.dropFirst()))
// First, before any thread exists (see lbserve/main.swift).
let stop = SignalWaiter(signals: [SIGTERM, SIGINT])
signal(SIGPIPE, SIG_IGN)
let group: LBEventLoopGroup
do {
    group = try LBEventLoopGroup(loopCount: min(2, LBEventLoopGroup.coreCount))
} catch {
    fail("cannot start event loops: \(error)")
}
var echoConfiguration = EchoBackendConfiguration(host: options.host, ports: options.ports, mode: options.mode,
                                                 delay: .milliseconds(options.delayMs))
echoConfiguration.maxBodyBytes = options.maxBodyBytes
let backend = EchoBackend(configuration: echoConfiguration, group: group)
let bound: [Int]
do {
    bound = try backend.start()
} catch {
    fail("--port: \(error)")
}
for port in bound { StandardOutput.line("Backend running on port \(port)") }

await stop.wait()
await backend.shutdown(timeout: .seconds(2))
exit(0)
