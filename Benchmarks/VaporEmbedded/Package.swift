// swift-tools-version:6.1
import PackageDescription

// Bench only (Benchmarks/embedding-cpu.sh): one Vapor server with a trivial route (/hello) and an
// LBKit-balanced route (/api/*), measured side by side in one process.
let package = Package(
    name: "VaporEmbedded",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "LBKitVapor", path: "../../Integrations/LBKitVapor"),
        .package(name: "LBKit", path: "../.."),
        .package(url: "https://github.com/vapor/vapor", from: "4.122.3"),
    ],
    targets: [
        .executableTarget(
            name: "VaporEmbedded",
            dependencies: [
                .product(name: "LBKitVapor", package: "LBKitVapor"),
                .product(name: "Vapor", package: "vapor"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
