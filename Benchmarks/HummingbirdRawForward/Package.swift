// swift-tools-version:6.1
import PackageDescription

// Bench only (Benchmarks/embedding-cpu.sh, issue 10): the floor for any forwarder embedded in
// Hummingbird. GET /hello is the trivial route; /raw/* forwards round robin with a minimal
// hand-written HTTP/1.1 exchange over a SwiftNIO channel on the client connection's own event
// loop (one kept-alive upstream connection at a time per loop and backend, no retries, no health,
// no limits). NIO_TAKEOVER=1 installs SwiftNIO's global-executor take-over first, so that the
// handler runs on that same loop. GET /block/* is the absolute lower bound: the handler's own
// thread forwards with blocking system calls on kept-alive sockets (wrong in a real server).
let package = Package(
    name: "HummingbirdRawForward",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "HummingbirdRawForward",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
