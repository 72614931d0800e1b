import LBKit

/// lbserve's own settings (not the balancer's): where and how it logs, and its admin listener.
/// Each has a flag and a config key.
public struct LBServeSettings: Sendable, Equatable {
    /// Least important log event written (`--log-level`, default `info`).
    public var logLevel: LogLevel = .info
    /// `text` or `json` log lines (`--log-format`, default `text`).
    public var logFormat: LogFormat = .text
    /// A separate listener for the `/_lb/*` admin endpoints (`--admin-listen HOST:PORT`); the
    /// public listener then proxies `/_lb/*` for everyone.
    public var adminListen: ListenAddress?

    /// The defaults.
    public init() {}
}

/// A `HOST:PORT` listen address (`127.0.0.1:9901`, `[::1]:9901`, `:9901` = all addresses).
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    /// The address to bind (`0.0.0.0` when the text had none).
    public var host: String
    /// The port (0 = any free port).
    public var port: Int

    /// Creates an address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; nil when the port is missing or not 0-65535, or the host has
    /// characters an address cannot have.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard !portText.isEmpty, portText.utf8.allSatisfy({ (48...57).contains($0) }), portText.count <= 5,
              let port = Int(portText), (0...65535).contains(port) else { return nil }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        guard host.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-:_%".unicodeScalars.contains($0)) })
        else { return nil }
        self.host = host
        self.port = port
    }

    /// `HOST:PORT` (IPv6 in brackets).
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// What `lbserve`'s command line asked for.
public struct LBServeOptions: Sendable {
    /// The balancer settings built from the flags.
    public var balancer: LoadBalancerConfiguration
    /// lbserve's own settings (logging, admin listener).
    public var serve = LBServeSettings()
    /// `--help` was given.
    public var showHelp = false
    /// `--version` was given.
    public var showVersion = false
    /// `--check-config` was given: validate, print the effective configuration, exit.
    public var checkConfig = false
    /// `--config FILE.json`, if given.
    public var configFile: String?
    /// Whether `--backend` flags replaced the base configuration's backends.
    public var backendsFromFlags = false
    /// No `--backend` and no `--config`: start the three demo echo backends in-process.
    public var demoBackends: Bool { balancer.backends.isEmpty && configFile == nil }

    /// Options with every default.
    public init() { balancer = LoadBalancerConfiguration() }
}

/// A bad command line: the message names the flag and what is wrong (`lbserve` prints it on one
/// line and exits with status 2).
public struct CommandLineError: Error, Sendable, CustomStringConvertible {
    /// One line naming the flag (one line per problem for a config file's problems).
    public var message: String
    /// Creates an error; control characters in `message` (from quoted user input) are escaped, so
    /// it is always one line.
    public init(_ message: String) { self.message = message.escapingControlCharacters }
    /// Several problems, one line each (each line escaped).
    init(lines: [String]) { message = lines.map(\.escapingControlCharacters).joined(separator: "\n") }
    public var description: String { message }
}

/// One `lbserve` flag: its name, value, default and meaning (what `--help` prints), and how it is
/// applied. ``LBServeCommandLine/flags`` is the one table the parser reads and `--help` prints,
/// so the two cannot drift.
public struct LBServeFlag: Sendable {
    /// `--port`.
    public let name: String
    /// The value's placeholder (`N`, `URL`, `CIDR`), nil for a switch.
    public let value: String?
    /// The default, as shown (`8000`, `off`, `none`).
    public let defaultText: String
    /// One line of meaning.
    public let meaning: String
    /// Whether it may be given more than once (each adds to a list).
    public let repeatable: Bool
    /// The environment variable that gives a default (`LB_` and the flag's name in upper snake
    /// case: `LB_STRATEGY`, `LB_BACKEND`), nil for `--help`, `--version` and `--check-config`.
    /// A repeatable flag's variable holds a list separated by commas or spaces
    /// (`LB_BACKEND=http://127.0.0.1:5001,http://127.0.0.1:5002`); a switch's holds
    /// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
    public let environment: String?
    let apply: @Sendable (inout LBServeCommandLine.ParseState, String) throws(CommandLineError) -> Void

    /// The `--help` line: `  --port N   listen port ... (default 8000; env LB_PORT)` (no default
    /// shown when ``defaultText`` is empty).
    public var helpLine: String {
        var left = "  " + name + (value.map { " " + $0 } ?? "")
        if left.count < 30 { left += String(repeating: " ", count: 30 - left.count) } else { left += "  " }
        var notes = defaultText.isEmpty ? [] : ["default \(defaultText)"]
        if repeatable { notes.append("repeatable") }
        if let environment {
            notes.append("env \(environment)" + (repeatable ? ", comma-separated" : value == nil ? "=1" : ""))
        }
        return left + meaning + (notes.isEmpty ? "" : " (" + notes.joined(separator: "; ") + ")")
    }
}
