import KeyperStorage

/// How fresh a read must be.
public enum ReadConsistency: String, Sendable {
    /// Reflects every write acknowledged before the read began (the default).
    case linearizable
    /// The node's local copy, possibly behind the leader; never blocks on the cluster.
    case stale
}

/// What `GET /v1/status` reports. Fields that do not apply to a mode are left out.
public struct NodeStatus: Codable, Sendable, Equatable {
    public var nodeID: String
    public var status: String
    public var mode: String
    public var version: String
    public var uptimeSeconds: Double
    public var keys: Int
    public var isLeader: Bool
    public var leaderID: String?
    public var leaderAddress: String?
    public var leaderHTTPAddress: String?
    public var term: UInt64?
    public var commitIndex: UInt64?
    public var appliedIndex: UInt64?
    public var dataDirectory: String

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", status, mode, version, uptimeSeconds = "uptime_seconds", keys
        case isLeader = "is_leader", leaderID = "leader_id", leaderAddress = "leader_addr"
        case leaderHTTPAddress = "leader_http_addr", term, commitIndex = "commit_index"
        case appliedIndex = "applied_index", dataDirectory = "data_dir"
    }
}

/// What the HTTP API asks of a node, whatever mode it runs in. Handlers only call these and
/// await; they never touch storage or consensus state directly.
public protocol KeyValueNode: Sendable {
    /// The node id to put in `X-Keyper-Leader`, when a leader is known.
    var leaderHint: String? { get }
    func get(_ key: [UInt8], consistency: ReadConsistency) async throws -> [UInt8]?
    func list(prefix: [UInt8], after: [UInt8]?, limit: Int, consistency: ReadConsistency) async throws -> KeyPage
    /// Returns once the write is durable (and, in a cluster, committed on a majority).
    func put(_ key: [UInt8], value: [UInt8]) async throws
    func delete(_ key: [UInt8]) async throws
    func status() async throws -> NodeStatus
    /// Whether the node can serve requests now (`GET /v1/health`).
    func health() async -> Health
    /// What `GET /metrics` exports.
    var metrics: NodeMetrics { get }
}

public struct Health: Sendable {
    public var healthy: Bool
    public var reason: String
    public init(healthy: Bool, reason: String) {
        self.healthy = healthy
        self.reason = reason
    }
}

public enum KeyperVersion {
    public static let current = "0.1.0"
}
