// swift-tools-version:6.1
import PackageDescription

// LBKit has no package dependencies on purpose: only what the Swift toolchain ships
// (stdlib, Synchronization, Dispatch, Foundation, Glibc, Swift Testing), plus our own C shim
// for Linux headers Glibc does not export (sys/epoll.h, sys/eventfd.h).
//
// The targets are the layers (see Docs/Architecture.md), and the compiler keeps them apart:
//
//   LBKitPolicy   selection, health, latency, retry budget, throttling. No I/O, no clock reads.
//        ^
//   LBKitHTTP     the HTTP/1.1 engine: epoll loops (also TaskExecutors), sockets, parser,
//        ^        server, upstream client and pools. I/O internals are `package`.
//   LBKit         the balancer, middleware chain, configuration, log/metrics hooks. What
//        ^        embedders import (re-exports the two layers below).
//   LBKitTesting  echo / alternating / slow / down backends and test helpers for embedders.
//   LBServeSupport  lbserve's own code: command line, config file (its own strict JSON reader),
//                 signals, stdout and access-log writers.
let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "LBKit",
    products: [
        .library(name: "LBKit", targets: ["LBKit"]),
        .library(name: "LBKitTesting", targets: ["LBKitTesting"]),
        .executable(name: "lbserve", targets: ["lbserve"]),
        .executable(name: "echo", targets: ["echo"]),
    ],
    targets: [
        .target(name: "CLBKitShim"),
        .target(name: "LBKitPolicy", swiftSettings: swift6),
        .target(name: "LBKitHTTP", dependencies: ["CLBKitShim", "LBKitPolicy"], swiftSettings: swift6),
        .target(name: "LBKit", dependencies: ["CLBKitShim", "LBKitHTTP", "LBKitPolicy"], swiftSettings: swift6),
        .target(name: "LBKitTesting", dependencies: ["LBKit"], swiftSettings: swift6),
        .target(name: "LBServeSupport", dependencies: ["CLBKitShim", "LBKit"], swiftSettings: swift6),
        .executableTarget(name: "lbserve", dependencies: ["LBServeSupport", "LBKit", "LBKitTesting"], swiftSettings: swift6),
        .executableTarget(name: "echo", dependencies: ["LBKitTesting", "LBServeSupport"], swiftSettings: swift6),
        .executableTarget(
            name: "throttle-bench",
            dependencies: ["LBKit"],
            path: "Benchmarks/throttle-bench",
            swiftSettings: swift6
        ),
        .testTarget(name: "LBKitPolicyTests", dependencies: ["LBKitPolicy"], swiftSettings: swift6),
        .testTarget(
            name: "LBKitTests",
            dependencies: ["LBKit", "LBKitHTTP", "LBKitPolicy", "LBKitTesting", "LBServeSupport", "CLBKitShim"],
            swiftSettings: swift6
        ),
    ]
)
