import LBKit

// What reading a configuration file gives: the settings, or every problem found.

/// One problem found in a configuration file; `description` is e.g.
/// `"config.json: backends[1].url: not an http URL"`.
public struct ConfigFileError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file as it was named (the path given to ``ConfigFile/load(path:base:)``).
    public var file: String
    /// Where in the file: `"timeout_ms"`, `"backends[1].url"`, `"trusted_proxies[0]"`,
    /// `"(top level)"`; empty when the file itself could not be read.
    public var field: String
    /// What is wrong, one line, e.g. `"expected an integer, got a string"`.
    public var message: String

    /// Creates an error.
    public init(file: String, field: String, message: String) {
        self.file = file
        self.field = field
        self.message = message
    }

    /// `<file>: <field>: <message>` (`<file>: <message>` when `field` is empty), always one line:
    /// control characters from the file (in keys or values quoted by the message) are escaped.
    public var description: String {
        let line = field.isEmpty ? "\(file): \(message)" : "\(file): \(field): \(message)"
        return line.escapingControlCharacters
    }
}

/// Every problem found in a configuration file (never empty when thrown).
public struct ConfigFileErrors: Error, Sendable, Equatable, CustomStringConvertible {
    /// The problems, in schema order (unknown keys first, then the keys as listed in
    /// Docs/Configuration.md, per-backend problems in backend order).
    public var errors: [ConfigFileError]

    /// Creates the error list.
    public init(_ errors: [ConfigFileError]) { self.errors = errors }

    /// One line per error.
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// What a configuration file produced: the balancer settings plus what
/// ``LoadBalancerConfiguration`` has no place for.
public struct LoadedConfiguration: Sendable {
    /// The balancer settings: the base configuration with every key of the file applied.
    public var balancer: LoadBalancerConfiguration
    /// Per-backend health check paths, parallel to `balancer.backends`; nil = the global
    /// `balancer.healthPath`.
    public var healthPaths: [String?]
    /// lbserve's own settings from the file (`log_level`, `log_format`, `admin_listen`).
    public var settings: LBServeSettings

    /// Creates a loaded configuration; `healthPaths` defaults to "global path for every backend".
    public init(balancer: LoadBalancerConfiguration, healthPaths: [String?]? = nil, settings: LBServeSettings = LBServeSettings()) {
        self.balancer = balancer
        self.healthPaths = healthPaths ?? Array(repeating: nil, count: balancer.backends.count)
        self.settings = settings
    }

    /// The health check path in effect for the backend at `index`: its own path if the file gave
    /// one, else the global `balancer.healthPath`.
    public func healthPath(forBackendAt index: Int) -> String {
        if index >= 0, index < healthPaths.count, let path = healthPaths[index] { return path }
        return balancer.healthPath
    }
}
