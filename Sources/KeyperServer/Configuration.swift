import KeyperBase
import KeyperStorage
import KeyperTransport
import Logging

/// Everything a node needs to start, validated once (``validate()``).
public struct NodeConfiguration: Sendable {
    public var nodeID: String = "node1"
    public var dataDirectory: String = "./keyper-data"
    public var httpAddress = HostPort(host: "0.0.0.0", port: 8080)
    public var keyBytesMax = 4 * 1024
    public var valueBytesMax = 1024 * 1024
    /// Most keys one listing returns, whatever `limit` asks.
    public var listLimitMax = 1_000
    /// Writes waiting for the next group commit beyond which new writes are refused (503).
    public var pendingWritesMax = 10_000
    /// Watches: the revisions of history kept for watches that start in the past
    /// (`--history-revisions`) and its bytes, a watcher's buffer, and how often an idle watch
    /// stream says it is current.
    public var changeLimits = ChangeFeed.Limits()
    public var watchProgressInterval: Duration = .seconds(5)
    public var logLevel: Logger.Level = .info
    /// Present in Raft mode (`--enable-raft`).
    public var cluster: ClusterConfiguration?

    public init() {}

    /// The largest `POST /v1/txn` body: one value's limit, and 64 KiB for the keys and the
    /// rest of the request.
    public var transactionBytesMax: Int { valueBytesMax + 64 * 1024 }

    /// The largest command an entry carries: a put of the largest key and value, or the
    /// largest transaction (its encoding is never longer than its JSON), with room for the
    /// command's header.
    public var entryBytesMax: Int { max(valueBytesMax + keyBytesMax, transactionBytesMax) + 1024 }

    /// Rejects values that would make the node misbehave, with a message naming the flag.
    public func validate() throws(ConfigurationError) {
        guard !nodeID.isEmpty, nodeID.utf8.count <= 64,
              nodeID.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") }) else {
            throw ConfigurationError("--node-id must be 1-64 printable ASCII characters without spaces or '/' (got \"\(nodeID)\")")
        }
        guard !dataDirectory.isEmpty else { throw ConfigurationError("--data-dir must not be empty") }
        guard keyBytesMax >= 1 && keyBytesMax <= 64 * 1024 else {
            throw ConfigurationError("--max-key-bytes must be between 1 and 65536 (got \(keyBytesMax))")
        }
        guard valueBytesMax >= 0 && valueBytesMax <= 64 * 1024 * 1024 else {
            throw ConfigurationError("--max-value-bytes must be between 0 and 67108864 (got \(valueBytesMax))")
        }
        guard listLimitMax >= 1, pendingWritesMax >= 1 else { throw ConfigurationError("limits must be positive") }
        if let cluster {
            try cluster.validate()
            // An entry travels whole in one peer frame; leave room for the append around it.
            let frameEntryBytesMax = FrameLimits.frameBytesMax / 2
            guard entryBytesMax + 1024 <= frameEntryBytesMax else {
                let valueMax = frameEntryBytesMax - 2 * 1024 - max(keyBytesMax, 64 * 1024)
                throw ConfigurationError("in Raft mode --max-value-bytes must stay under \(valueMax) bytes with this --max-key-bytes (an entry travels in one peer frame)")
            }
        }
    }
}

public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Raft-mode settings. Times are in milliseconds of wall-clock time; the core itself only
/// counts ticks (`electionTicks`, `heartbeatTicks` of one `tickMs` each).
public struct ClusterConfiguration: Sendable {
    /// Where peer traffic is accepted (`--raft-addr`).
    public var raftAddress: HostPort
    /// What other nodes dial to reach this one; `--raft-addr` unless it names every interface.
    public var advertisedRaftAddress: String
    /// What other nodes and clients are told this node's HTTP API is at.
    public var advertisedHTTPAddress: String
    public var tickMs = 100
    /// Election timeout in ticks (randomised in [electionTicks, 2 * electionTicks)).
    public var electionTicks = 10
    public var heartbeatTicks = 1
    /// How long a write or linearizable read waits for a leader and a quorum.
    public var requestTimeoutMs = 5_000
    /// Applied entries between log compactions (`--snapshot-entries`).
    public var snapshotEntries = 10_000
    /// Entries each compaction keeps for followers a little behind (`--snapshot-catch-up-entries`).
    public var catchUpEntries = 5_000
    /// `--wal-truncate-corrupt`: on a checksum failure inside the Raft log, cut the log there
    /// (losing what follows) instead of refusing to start.
    public var walTruncateCorrupt = false
    /// Tests only: the file layer under the Raft log (a simulated disk that can fill up).
    public var walFileSystem: (@Sendable () -> any WALFileSystem)?
    /// `--enable-fault-injection`: accept `POST /v1/debug/faults` (tests only).
    public var faultInjection = false
    /// `--join`: ask the node at this HTTP URL to add this one instead of bootstrapping.
    public var joinURL: String?

    public init(raftAddress: HostPort, advertisedHTTPAddress: String) {
        self.raftAddress = raftAddress
        self.advertisedRaftAddress = raftAddress.advertised().description
        self.advertisedHTTPAddress = advertisedHTTPAddress
    }

    public func validate() throws(ConfigurationError) {
        guard tickMs >= 1 && tickMs <= 10_000 else { throw ConfigurationError("--tick-ms must be between 1 and 10000") }
        guard heartbeatTicks >= 1, electionTicks > heartbeatTicks else {
            throw ConfigurationError("the election timeout must be longer than the heartbeat interval")
        }
        guard requestTimeoutMs >= 1 else { throw ConfigurationError("--request-timeout must be positive") }
        guard snapshotEntries >= 1 else { throw ConfigurationError("--snapshot-entries must be positive") }
        guard catchUpEntries >= 0 else { throw ConfigurationError("--snapshot-catch-up-entries must not be negative") }
    }
}
