import KeyperBase
import ArgumentParser
import KeyperServer
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `keyper`: runs a Keyper node (`serve`, the default subcommand, so `keyper --data-dir …`
/// works as it always did), or one of the client and tool subcommands.
@main
struct Keyper: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyper",
        abstract: "A replicated key-value store: an HTTP API in front of a Raft log.",
        discussion: """
            With no subcommand, runs one node (keyper serve; see keyper serve --help for its flags) \
            with its data in ./keyper-data and HTTP on port 8080:
              curl -X PUT localhost:8080/v1/keys/foo -d hello
              curl localhost:8080/v1/keys/foo
            """,
        version: KeyperVersion.current,
        subcommands: [Serve.self, Get.self, Put.self, Del.self, Ls.self, Txn.self, Watch.self, LeaseCommand.self, Lock.self, Elect.self,
                      Status.self, Member.self, Leader.self, SnapshotCommand.self, Verify.self, Bench.self],
        defaultSubcommand: Serve.self)

    /// Parses the command line with the node's settings from `--config` and `KEYPER_*`
    /// inserted before it (``ConfigurationSources``), then runs the command.
    static func main() async {
        let arguments: [String]
        do {
            arguments = try ConfigurationSources.expand(Array(CommandLine.arguments.dropFirst()), environment: processEnvironment())
        } catch {
            printError("keyper: \(error)")
            Glibc.exit(ExitCode.validationFailure.rawValue)
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    /// The process's environment variables.
    static func processEnvironment() -> [String: String] {
        var variables: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") { variables[String(text[..<equals])] = String(text[text.index(after: equals)...]) }
            entry += 1
        }
        return variables
    }

    /// "100ms", "1s", "2m" or a bare number of milliseconds.
    static func milliseconds(_ text: String) -> Int? {
        let units: [(suffix: String, factor: Int)] = [("ms", 1), ("s", 1_000), ("m", 60_000)]
        for unit in units where text.hasSuffix(unit.suffix) {
            guard let value = Int(text.dropLast(unit.suffix.count)), value > 0 else { return nil }
            return value * unit.factor
        }
        return Int(text).flatMap { $0 > 0 ? $0 : nil }
    }
}

/// `keyper serve`: runs a node. The flags `--data-dir`, `--http-addr`, `--node-id`,
/// `--enable-raft` and `--raft-addr` keep the original prototype's spelling and meaning. Its
/// own subcommand (the default), so the client subcommands may take flags of the same names.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Keyper node (the default: `keyper --data-dir …` is `keyper serve --data-dir …`).")

    @Option(help: ArgumentHelp("A JSON file of settings by flag name, such as {\"data-dir\": \"/var/lib/keyper\", \"enable-raft\": true} (also $KEYPER_CONFIG). Flags win over KEYPER_* environment variables (KEYPER_DATA_DIR, KEYPER_ENABLE_RAFT=true, …), which win over the file.", valueName: "file"))
    var config: String?

    @Option(name: .customLong("data-dir"), help: "Directory for this node's data; created when absent.")
    var dataDirectory = "./keyper-data"

    @Option(name: .customLong("http-addr"),
            help: "HTTP listen address: ':8080' (all interfaces), '127.0.0.1:8080' (one), port 0 picks a free port.")
    var httpAddress = ":8080"

    @Option(name: .customLong("node-id"), help: "This node's name, unique in its cluster.")
    var nodeID = "node1"

    @Flag(name: .customLong("enable-raft"), help: "Run as a Raft cluster member. On an empty data directory, bootstraps a single-node cluster (unless --join is given).")
    var enableRaft = false

    @Option(name: .customLong("raft-addr"), help: "Address for Raft peer traffic (with --enable-raft).")
    var raftAddress = "127.0.0.1:12000"

    @Option(name: .customLong("join"), help: "Ask the cluster member at this URL (e.g. http://127.0.0.1:8080) to add this node, instead of bootstrapping; retried until it answers.")
    var joinURL: String?

    @Option(name: .customLong("tick-interval"), help: "Raft clock tick, e.g. 100ms.")
    var tickInterval = "100ms"

    @Option(name: .customLong("election-timeout"), help: "Time without a leader before an election (randomised up to twice this), e.g. 1s.")
    var electionTimeout = "1s"

    @Option(name: .customLong("heartbeat-interval"), help: "How often a leader asserts itself, e.g. 100ms.")
    var heartbeatInterval = "100ms"

    @Option(name: .customLong("snapshot-entries"), help: "Applied entries between Raft log compactions.")
    var snapshotEntries = 10_000

    @Option(name: .customLong("snapshot-catch-up-entries"), help: "Entries a compaction keeps, so a follower that far behind catches up from the log without a snapshot.")
    var snapshotCatchUpEntries = 5_000

    @Flag(name: .customLong("wal-truncate-corrupt"), help: "If the Raft log has a corrupt record (not a torn tail), cut it there and start, losing what follows, instead of refusing to start.")
    var walTruncateCorrupt = false

    @Flag(name: .customLong("enable-fault-injection"), help: "Tests only: accept POST /v1/debug/faults, which drops peer traffic to simulate partitions.")
    var enableFaultInjection = false

    @Option(name: .customLong("request-timeout"), help: "How long a write or linearizable read waits for a leader and a quorum before 503.")
    var requestTimeout = "5s"

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(name: .customLong("log-format"), help: "text, or json (one object per line, for log shippers).")
    var logFormat = "text"

    @Option(name: .customLong("max-value-bytes"), help: "Largest value accepted; larger PUTs get 413.")
    var valueBytesMax = 1024 * 1024

    @Option(name: .customLong("max-key-bytes"), help: "Longest key accepted, in bytes after percent-decoding; longer keys get 400.")
    var keyBytesMax = 4 * 1024

    @Option(name: .customLong("history-revisions"), help: "Revisions of change history kept for watches that start in the past (also bounded to 64 MiB).")
    var historyRevisions = 1_000_000

    @Option(name: .customLong("watch-progress-interval"), help: "How often an idle watch stream says it is current, e.g. 5s.")
    var watchProgressInterval = "5s"

    func validate() throws {
        guard logFormat == "text" || logFormat == "json" else { throw ValidationError("--log-format must be text or json") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard HostPort(parsing: httpAddress, listening: true) != nil else {
            throw ValidationError("--http-addr must look like ':8080' or '127.0.0.1:8080' (got '\(httpAddress)')")
        }
        guard historyRevisions >= 1 else { throw ValidationError("--history-revisions must be at least 1") }
        for (flag, value) in [("--tick-interval", tickInterval), ("--election-timeout", electionTimeout),
                              ("--heartbeat-interval", heartbeatInterval), ("--request-timeout", requestTimeout),
                              ("--watch-progress-interval", watchProgressInterval)] {
            guard Keyper.milliseconds(value) != nil else {
                throw ValidationError("\(flag) must be a duration like 100ms, 1s or 2m (got '\(value)')")
            }
        }
        if let joinURL {
            guard enableRaft else { throw ValidationError("--join needs --enable-raft") }
            guard HostPort.parseURL(joinURL) != nil else {
                throw ValidationError("--join must look like http://host:port (got '\(joinURL)')")
            }
        }
        if enableRaft {
            guard HostPort(parsing: raftAddress, listening: true) != nil else {
                throw ValidationError("--raft-addr must look like '127.0.0.1:12000' (got '\(raftAddress)')")
            }
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "keyper")
        var configuration = NodeConfiguration()
        configuration.nodeID = nodeID
        configuration.dataDirectory = dataDirectory
        configuration.httpAddress = HostPort(parsing: httpAddress, listening: true)!
        configuration.keyBytesMax = keyBytesMax
        configuration.valueBytesMax = valueBytesMax
        configuration.logLevel = level
        configuration.changeLimits.historyRevisions = historyRevisions
        configuration.watchProgressInterval = .milliseconds(Keyper.milliseconds(watchProgressInterval)!)
        if enableRaft {
            let listen = HostPort(parsing: raftAddress, listening: true)!
            let http = configuration.httpAddress
            var cluster = ClusterConfiguration(
                raftAddress: listen,
                advertisedHTTPAddress: http.advertised().description)
            let tickMs = Keyper.milliseconds(tickInterval)!
            cluster.tickMs = tickMs
            cluster.electionTicks = max(2, Keyper.milliseconds(electionTimeout)! / tickMs)
            cluster.heartbeatTicks = max(1, Keyper.milliseconds(heartbeatInterval)! / tickMs)
            cluster.requestTimeoutMs = Keyper.milliseconds(requestTimeout)!
            cluster.snapshotEntries = snapshotEntries
            cluster.catchUpEntries = snapshotCatchUpEntries
            cluster.joinURL = joinURL
            cluster.walTruncateCorrupt = walTruncateCorrupt
            cluster.faultInjection = enableFaultInjection
            configuration.cluster = cluster
        }
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
