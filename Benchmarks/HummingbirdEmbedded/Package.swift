// swift-tools-version:6.1
import PackageDescription

// Bench only (Benchmarks/embedding-cpu.sh): one Hummingbird server with a trivial route (/hello)
// and an LBKit-balanced route (/api/*), so the two can be measured side by side in one process.
let package = Package(
    name: "HummingbirdEmbedded",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "LBKit", path: "../.."),
        .package(path: "../../Integrations/LBKitHummingbird"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "HummingbirdEmbedded",
            dependencies: [
                .product(name: "LBKitHummingbird", package: "LBKitHummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
