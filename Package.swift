// swift-tools-version:6.1
// Keyper: a replicated key-value store. See README.md and docs/.

import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "keyper",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "keyper", targets: ["keyper"]),
        .executable(name: "raft-sim", targets: ["raft-sim"]),
        .executable(name: "wal-bench", targets: ["wal-bench"]),
        .library(name: "KeyperClient", targets: ["KeyperClient"]),
    ],
    dependencies: [
        // `traits: []` drops full Foundation/ICU and swift-configuration: only FoundationEssentials is linked.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // SHA-256 of backups (and, later, token hashes): no hand-written crypto. Version 4
        // imports only FoundationEssentials; 3.x linked full Foundation and ICU into keyper.
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        // KeyperClient's HTTP: pooled connections, timeouts, TLS when the cluster has it
        // (on Linux it imports FoundationEssentials, not Foundation).
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        .executableTarget(
            name: "keyper",
            dependencies: [
                "KeyperBase",
                "KeyperServer",
                "KeyperReplica",
                "KeyperVerify",
                "KeyperBench",
                "KeyperClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "KeyperServer",
            dependencies: [
                "KeyperBase",
                "KeyperReplica",
                "KeyperStorage",
                "KeyperRaft",
                "KeyperWire",
                "KeyperTransport",
                "KeyperClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // Small helpers every layer may use (a clock type, collection helpers): no dependencies.
        .target(name: "KeyperBase", swiftSettings: strictSettings),
        // The consensus core: no I/O, no clock, no Foundation; only the base module (its seeded generator).
        .target(name: "KeyperRaft", dependencies: ["KeyperBase"], swiftSettings: strictSettings),
        // One cluster member (Raft core, log, state machine, clients): no NIO, no HTTP, no wall
        // clock. The server runs it with real peers; the simulator with simulated ones.
        .target(
            name: "KeyperReplica",
            dependencies: [
                "KeyperBase",
                "KeyperRaft",
                "KeyperWire",
                "KeyperStorage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // Client histories and their linearizability checker (the simulator's and `keyper verify`'s).
        .target(name: "KeyperHistory", swiftSettings: strictSettings),
        // The shipped replica under simulation: real WAL on simulated disks, real SQLite, simulated peers and clock.
        .target(
            name: "KeyperClusterSimulation",
            dependencies: [
                "KeyperBase",
                "KeyperRaft",
                "KeyperReplica",
                "KeyperHistory",
                "KeyperStorage",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "raft-sim",
            dependencies: ["KeyperRaft", "KeyperClusterSimulation"],
            swiftSettings: strictSettings
        ),
        // Binary encodings shared by the WAL and the peer transport.
        .target(name: "KeyperWire", dependencies: ["KeyperRaft"], swiftSettings: strictSettings),
        .target(
            name: "KeyperStorage",
            dependencies: ["CLinux", "CSQLite", "KeyperBase", "KeyperRaft", "KeyperWire"],
            swiftSettings: strictSettings
        ),
        .executableTarget(name: "wal-bench", dependencies: ["KeyperRaft", "KeyperStorage"], swiftSettings: strictSettings),
        .target(
            name: "KeyperClient",
            dependencies: [
                "KeyperBase",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "KeyperBench",
            dependencies: [
                "KeyperBase",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings),
        .target(
            name: "KeyperVerify",
            dependencies: [
                "KeyperBase",
                "KeyperClient",
                "KeyperHistory",
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "KeyperTransport",
            dependencies: [
                "KeyperBase",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strictSettings
        ),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite"),
        .systemLibrary(name: "CLinux", path: "Sources/CLinux"),
        .target(
            name: "KeyperTestSupport",
            dependencies: ["KeyperBase", "KeyperStorage"],
            path: "Tests/KeyperTestSupport",
            swiftSettings: strictSettings
        ),
        .testTarget(name: "KeyperRaftTests", dependencies: ["KeyperBase", "KeyperRaft"], swiftSettings: strictSettings),
        .testTarget(
            name: "KeyperHistoryTests",
            dependencies: ["KeyperHistory"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "KeyperWireTests",
            dependencies: ["KeyperBase", "KeyperRaft", "KeyperWire", "KeyperTestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "KeyperStorageTests",
            dependencies: ["KeyperBase", "KeyperStorage", "KeyperRaft", "KeyperWire", "KeyperTestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "KeyperTransportTests",
            dependencies: [
                "KeyperBase",
                "KeyperTransport",
                "KeyperTestSupport",
                "KeyperRaft",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "KeyperReplicaTests",
            dependencies: ["KeyperBase", "KeyperReplica", "KeyperClusterSimulation", "KeyperRaft", "KeyperStorage", "KeyperWire", "KeyperTestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "KeyperServerTests",
            dependencies: [
                "KeyperBase",
                "KeyperServer",
                "KeyperReplica",
                "KeyperTestSupport",
                "KeyperVerify",
                "KeyperBench",
                "KeyperHistory",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
