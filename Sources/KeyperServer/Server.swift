import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// Runs a node until SIGTERM or SIGINT, then shuts down in order: stop accepting connections,
/// let in-flight requests finish, close the store.
public enum KeyperServer {
    public static func run(configuration: NodeConfiguration, logger: Logger) async throws {
        try configuration.validate()
        let node = try StandaloneNode(configuration: configuration)
        defer { node.close() }
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.nodeID)"
        logger.info("opened data directory", metadata: ["path": "\(configuration.dataDirectory)", "mode": "standalone"])

        let router = KeyperAPI(node: node, configuration: configuration).makeRouter()
        let app = Application(
            router: router,
            configuration: .init(
                address: .hostname(configuration.httpAddress.host, port: configuration.httpAddress.port),
                serverName: "keyper/\(KeyperVersion.current)"),
            onServerRunning: { [logger] channel in
                // Tests and scripts read this line to learn the port when started with port 0.
                let address = channel.localAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                logger.notice("listening on http://\(address)")
            },
            logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("stopped; closing the store")
    }
}
