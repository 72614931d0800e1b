// swift-tools-version:6.1
import PackageDescription

// A Hummingbird gateway that balances /api/* across three backends with per-client rate
// limiting. `swift run HummingbirdGateway` from this folder.
let package = Package(
    name: "HummingbirdGateway",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "LBKit", path: "../.."),
        .package(path: "../../Integrations/LBKitHummingbird"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        .executableTarget(
            name: "HummingbirdGateway",
            dependencies: [
                .product(name: "LBKitHummingbird", package: "LBKitHummingbird"),
                .product(name: "LBKitTesting", package: "LBKit"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
