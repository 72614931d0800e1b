// swift-tools-version:6.1
import PackageDescription

// LBKitVapor: runs an LBKit `LoadBalancer` inside a Vapor 4 application.
//
// LBKit itself keeps zero package dependencies; this package is where Vapor, swift-log and
// swift-metrics come in. It depends on LBKit by path (the repository root, two folders up).
let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "LBKitVapor",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LBKitVapor", targets: ["LBKitVapor"]),
    ],
    dependencies: [
        .package(name: "LBKit", path: "../.."),
        .package(url: "https://github.com/vapor/vapor", from: "4.122.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        .target(
            name: "LBKitVapor",
            dependencies: [
                .product(name: "LBKit", package: "LBKit"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swift6
        ),
        .testTarget(
            name: "LBKitVaporTests",
            dependencies: [
                "LBKitVapor",
                .product(name: "LBKit", package: "LBKit"),
                .product(name: "LBKitTesting", package: "LBKit"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "VaporTesting", package: "vapor"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: swift6
        ),
    ]
)
