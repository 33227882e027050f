import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// Runs a node until SIGTERM or SIGINT, then shuts down in order: stop accepting connections,
/// let in-flight requests finish, close the store.
public enum KeyperServer {
    public static func run(configuration: NodeConfiguration, logger: Logger) async throws {
        try configuration.validate()
        var logger = logger
        logger[metadataKey: "node"] = "\(configuration.nodeID)"
        logger.info("opening data directory", metadata: [
            "path": "\(configuration.dataDirectory)", "mode": "\(configuration.cluster == nil ? "standalone" : "raft")",
        ])
        if configuration.cluster != nil {
            let node = try await RaftNode.open(configuration: configuration, logger: logger)
            do {
                try await serve(node, configuration: configuration, logger: logger)
            } catch {
                await node.close()
                throw error
            }
            await node.close()
        } else {
            let node = try StandaloneNode(configuration: configuration)
            defer { node.close() }
            try await serve(node, configuration: configuration, logger: logger)
        }
        logger.info("stopped")
    }

    /// Serves the HTTP API until a shutdown signal; returns once in-flight requests finished.
    static func serve(_ node: some KeyValueNode, configuration: NodeConfiguration, logger: Logger) async throws {
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
        let progress = WatchProgress(feed: node.changes, interval: configuration.watchProgressInterval)
        let group = ServiceGroup(configuration: .init(
            services: [app, progress], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
