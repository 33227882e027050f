import ArgumentParser
import KeyperServer
import Logging

/// `keyper`: runs a Keyper node. The flags `--data-dir`, `--http-addr`, `--node-id`,
/// `--enable-raft` and `--raft-addr` keep the original prototype's spelling and meaning.
@main
struct Keyper: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyper",
        abstract: "A replicated key-value store: an HTTP API in front of a Raft log.",
        discussion: """
            With no flags, runs one node with its data in ./keyper-data and HTTP on port 8080:
              curl -X PUT localhost:8080/v1/keys/foo -d hello
              curl localhost:8080/v1/keys/foo
            """,
        version: KeyperVersion.current)

    @Option(name: .customLong("data-dir"), help: "Directory for this node's data; created when absent.")
    var dataDirectory = "./keyper-data"

    @Option(name: .customLong("http-addr"),
            help: "HTTP listen address: ':8080' (all interfaces), '127.0.0.1:8080' (one), port 0 picks a free port.")
    var httpAddress = ":8080"

    @Option(name: .customLong("node-id"), help: "This node's name, unique in its cluster.")
    var nodeID = "node1"

    @Flag(name: .customLong("enable-raft"), help: "Run as a Raft cluster member (not available in this build yet).")
    var enableRaft = false

    @Option(name: .customLong("raft-addr"), help: "Address for Raft peer traffic, e.g. 127.0.0.1:12000 (with --enable-raft).")
    var raftAddress: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(name: .customLong("max-value-bytes"), help: "Largest value accepted; larger PUTs get 413.")
    var valueBytesMax = 1024 * 1024

    @Option(name: .customLong("max-key-bytes"), help: "Longest key accepted, in bytes after percent-decoding; longer keys get 400.")
    var keyBytesMax = 4 * 1024

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard ListenAddress(parsing: httpAddress) != nil else {
            throw ValidationError("--http-addr must look like ':8080' or '127.0.0.1:8080' (got '\(httpAddress)')")
        }
        if raftAddress != nil && !enableRaft {
            throw ValidationError("--raft-addr needs --enable-raft")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "keyper")
        if enableRaft {
            // Never pretend: without the cluster runtime, a "Raft" node would be a standalone
            // node that silently ignores --raft-addr.
            logger.critical("Raft mode (--enable-raft) is not available in this build yet; run without it for a standalone node")
            throw ExitCode(2)
        }
        var configuration = NodeConfiguration()
        configuration.nodeID = nodeID
        configuration.dataDirectory = dataDirectory
        configuration.httpAddress = ListenAddress(parsing: httpAddress)!
        configuration.keyBytesMax = keyBytesMax
        configuration.valueBytesMax = valueBytesMax
        configuration.logLevel = level
        do {
            try await KeyperServer.run(configuration: configuration, logger: logger)
        } catch let error as ConfigurationError {
            throw ValidationError(error.description)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
    }
}
