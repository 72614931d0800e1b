// `import LBKitVapor` brings LBKit's public API too (LoadBalancer, LoadBalancerConfiguration,
// BackendURL, LBMiddleware, ...): every LBKit name is chosen not to collide with Vapor, NIO,
// swift-http-types or AsyncHTTPClient, so both live unqualified in one file.
@_exported import LBKit
