// swift-tools-version:6.1
import PackageDescription

// LBKit inside a Hummingbird 2 application: a router middleware that balances a path prefix,
// the balancer as a swift-service-lifecycle Service, and swift-log / swift-metrics bridges.
// LBKit itself (../..) keeps zero package dependencies; everything Hummingbird-specific lives here.
let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "LBKitHummingbird",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LBKitHummingbird", targets: ["LBKitHummingbird"]),
    ],
    dependencies: [
        .package(name: "LBKit", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        .target(
            name: "LBKitHummingbird",
            dependencies: [
                .product(name: "LBKit", package: "LBKit"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: swift6
        ),
        // Test helper, run as a process of its own by NIOTakeOverTests (not a product).
        .executableTarget(
            name: "NIOTakeOverCheck",
            dependencies: [
                .product(name: "LBKit", package: "LBKit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swift6
        ),
        .testTarget(
            name: "LBKitHummingbirdTests",
            dependencies: [
                "LBKitHummingbird",
                "NIOTakeOverCheck",
                .product(name: "LBKit", package: "LBKit"),
                .product(name: "LBKitTesting", package: "LBKit"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: swift6
        ),
    ]
)
