import KeyperStorage

#if canImport(Glibc)
import Glibc
#endif

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
    public var snapshotIndex: UInt64?
    public var lastIndex: UInt64?
    public var role: String?
    public var clusterID: String?
    public var members: [MemberStatus]?
    /// Conditions an operator should know about (e.g. a cluster that tolerates no failure).
    public var warnings: [String]?
    public var dataDirectory: String
    /// Key requests this node answered (for rates: two readings a second apart).
    public var requests: RequestTotals?

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", status, mode, version, uptimeSeconds = "uptime_seconds", keys
        case isLeader = "is_leader", leaderID = "leader_id", leaderAddress = "leader_addr"
        case leaderHTTPAddress = "leader_http_addr", term, commitIndex = "commit_index"
        case appliedIndex = "applied_index", snapshotIndex = "snapshot_index", lastIndex = "last_index"
        case role, clusterID = "cluster_id", members, warnings, dataDirectory = "data_dir", requests
    }
}

/// One member in `GET /v1/status`.
public struct MemberStatus: Codable, Sendable, Equatable {
    public var id: String
    public var raftAddress: String
    public var httpAddress: String
    /// `voter` or `learner`.
    public var role: String
    /// Learners only: `pending` for one the leader promotes to voter once it has caught up,
    /// `none` for one that asked to stay a learner.
    public var promotion: String?
    /// The incarnation of the member's data directory, as the configuration records it.
    public var incarnation: String?
    /// Leader only: the highest log index known to be on that member.
    public var matchIndex: UInt64?

    enum CodingKeys: String, CodingKey {
        case id, raftAddress = "raft_addr", httpAddress = "http_addr", role, promotion, incarnation, matchIndex = "match_index"
    }
}

/// What the HTTP API asks of a node, whatever mode it runs in. Handlers only call these and
/// await; they never touch storage or consensus state directly.
public protocol KeyValueNode: Sendable {
    /// The node id to put in `X-Keyper-Leader`, when a leader is known.
    var leaderHint: String? { get }
    /// The key's value and revisions (nil value: absent), and the store revision the read saw.
    func get(_ key: [UInt8], consistency: ReadConsistency) async throws -> KVStore.VersionedRead
    /// A page of keys with their revisions (and values, when `values`), and the store revision
    /// it was read at: one consistent read.
    func list(prefix: [UInt8], after: [UInt8]?, limit: Int, values: Bool, consistency: ReadConsistency) async throws -> KVStore.VersionedPage
    /// Returns once the write is durable (and, in a cluster, committed on a majority), with
    /// what it did: applied (the revisions it made), or its condition did not hold (nothing
    /// changed; conditions are checked when the write is applied, in log order), or a retry
    /// of one remembered by its idempotency key (nothing applied again).
    func write(_ write: KVWrite) async throws -> KVWriteResult
    /// The node's recent changes and its watchers: what it applied, in revision order (a
    /// follower's too, from its own applied state).
    var changes: ChangeFeed { get }
    /// Runs a transaction that only reads (``KVTransaction/isReadOnly``): no log entry.
    func read(_ transaction: KVTransaction, consistency: ReadConsistency) async throws -> KVTransactionResult
    /// Renews a lease: the leader moves its deadline to a full TTL from now (a follower
    /// forwards to it). Throws `lease_not_found` for a lease that does not exist or is expiring.
    func keepAlive(lease id: UInt64) async throws -> LeaseStatus
    /// A lease with its keys and the time it has left (the leader's; a follower asks it).
    func lease(_ id: UInt64) async throws -> LeaseStatus
    /// Every lease, with its key count.
    func leases(consistency: ReadConsistency) async throws -> [LeaseInfo]
    /// The smallest TTL a lease may be granted with, in seconds.
    var leaseTTLSecondsMin: UInt64 { get }
    /// A consistent copy of the state (`GET /v1/snapshot`), reflecting every write
    /// acknowledged before the call, in a temporary file the caller removes.
    func backup() async throws -> NodeBackup
    func status() async throws -> NodeStatus
    /// Whether the node can serve requests now (`GET /v1/health`).
    func health() async -> Health
    /// Whether the node should get traffic now (`GET /readyz`): stricter than ``health()``.
    func readiness() async -> Health
    /// What `GET /metrics` exports.
    var metrics: NodeMetrics { get }
    /// The applied index a stale read reflects (`X-Keyper-Applied-Index`), when there is one.
    var appliedIndex: UInt64? { get }
    /// Adds a member (`POST /v1/join`): returns `.voter` once it is a voter (or `.learner`
    /// once added, when `learner` asked for one), or `.learnerPromoting` when it was added as
    /// a learner but did not catch up within the request timeout (promotion goes on).
    func join(nodeID: String, raftAddress: String, httpAddress: String?, learner: Bool) async throws -> JoinOutcome
    /// Removes a member (`DELETE /v1/members/{id}`).
    func removeMember(_ nodeID: String) async throws
    /// Moves leadership (`POST /v1/leader/transfer`); returns the new leader's id.
    func transferLeadership(to target: String?) async throws -> String
    /// Test-only: drops peer traffic to and from the named nodes (`POST /v1/debug/faults`).
    func setFaults(dropTo: Set<String>, dropFrom: Set<String>) throws
}

extension KeyValueNode {
    public var appliedIndex: UInt64? { nil }

    public func readiness() async -> Health { await health() }

    @discardableResult
    public func put(_ key: [UInt8], value: [UInt8], condition: KVCondition? = nil) async throws -> KVWriteResult {
        try await write(KVWrite(.put(key: key, value: value), condition: condition))
    }

    @discardableResult
    public func delete(_ key: [UInt8], condition: KVCondition? = nil) async throws -> KVWriteResult {
        try await write(KVWrite(.delete(key: key), condition: condition))
    }

    /// Deletes every key that starts with `prefix`, as one change (one revision).
    public func deletePrefix(_ prefix: [UInt8]) async throws -> KVWriteResult {
        try await write(.deletePrefix(prefix))
    }

    /// Runs a transaction: one that writes as one change (committed and durable when this
    /// returns), one that only reads as a read of the given consistency.
    public func transaction(_ transaction: KVTransaction, consistency: ReadConsistency = .linearizable) async throws -> KVTransactionResult {
        guard transaction.isReadOnly else { return try await write(.transaction(transaction)).transactionResult }
        return try await read(transaction, consistency: consistency)
    }

    public func join(nodeID: String, raftAddress: String, httpAddress: String?, learner: Bool) async throws -> JoinOutcome {
        throw APIError.raftDisabled()
    }

    public func removeMember(_ nodeID: String) async throws {
        throw APIError.raftDisabled()
    }

    public func transferLeadership(to target: String?) async throws -> String {
        throw APIError.raftDisabled()
    }

    public func setFaults(dropTo: Set<String>, dropFrom: Set<String>) throws {
        throw APIError.faultInjectionDisabled()
    }
}

extension APIError {
    static func faultInjectionDisabled() -> APIError {
        APIError(.forbidden, code: "fault_injection_disabled",
                 "fault injection is for tests; start the node with --enable-raft --enable-fault-injection to use it")
    }

    static func raftDisabled() -> APIError {
        APIError(.conflict, code: "raft_disabled", "this node runs without Raft (start it with --enable-raft to form a cluster)")
    }
}

/// A backup in a temporary file: what ``KeyValueNode/backup()`` made.
public struct NodeBackup: Sendable {
    public var path: String
    public var appliedIndex: UInt64
    public var revision: UInt64

    /// A copy of `store` next to its files (a `.tmp` name: a crash leaves nothing behind, as
    /// the store removes such files when it opens).
    static func make(of store: KVStore) async throws -> NodeBackup {
        let path = store.path + "/backup-\(UInt64.random(in: 0...UInt64.max)).tmp"
        do {
            let (applied, revision) = try await DiskReads.pool.runIfActive { try store.backup(to: path) }
            return NodeBackup(path: path, appliedIndex: applied, revision: revision)
        } catch {
            unlink(path)
            throw StorageFailure.map(error)
        }
    }
}

/// Where a join left the node.
public enum JoinOutcome: Sendable, Equatable {
    case voter
    /// A learner, as asked (`{"learner": true}`): it stays one.
    case learner
    /// A learner still catching up; the leader promotes it to voter once it has.
    case learnerPromoting
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
