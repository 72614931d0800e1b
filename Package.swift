// swift-tools-version:6.1
import PackageDescription

// LBKit has no package dependencies on purpose: only what the Swift toolchain ships
// (stdlib, Synchronization, Dispatch, Foundation, Glibc, Swift Testing), plus our own C shim
// for Linux headers Glibc does not export (sys/epoll.h, sys/eventfd.h).
let package = Package(
    name: "LBKit",
    products: [
        .library(name: "LBKit", targets: ["LBKit"]),
        .executable(name: "lbserve", targets: ["lbserve"]),
        .executable(name: "echo", targets: ["echo"]),
    ],
    targets: [
        .target(name: "CLBKitShim"),
        .target(
            name: "LBKit",
            dependencies: ["CLBKitShim"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "lbserve",
            dependencies: ["LBKit"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "echo",
            dependencies: ["LBKit"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "throttle-bench",
            dependencies: ["LBKit"],
            path: "Benchmarks/throttle-bench",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "LBKitTests",
            dependencies: ["LBKit"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
