// swift-tools-version:6.1
import PackageDescription

// A Vapor application that balances /api/* across three echo backends with LBKit.
// `swift run VaporGateway` from this folder; see README.md.
let package = Package(
    name: "VaporGateway",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "LBKitVapor", path: "../../Integrations/LBKitVapor"),
        .package(name: "LBKit", path: "../.."),          // for LBKitTesting's in-process echo backends
        .package(url: "https://github.com/vapor/vapor", from: "4.122.3"),
    ],
    targets: [
        .executableTarget(
            name: "VaporGateway",
            dependencies: [
                .product(name: "LBKitVapor", package: "LBKitVapor"),
                .product(name: "LBKitTesting", package: "LBKit"),
                .product(name: "Vapor", package: "vapor"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
