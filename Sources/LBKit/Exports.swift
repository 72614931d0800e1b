// What an embedder needs comes with `import LBKit`: the policy types (clocks, strategies,
// throttle, client addresses) and the engine's public surface (messages, server, upstream
// client). Every re-exported name is chosen not to collide with NIO, swift-http-types,
// Hummingbird, Vapor or AsyncHTTPClient (checked in CI by Integrations/).
@_exported import LBKitHTTP
@_exported import LBKitPolicy
