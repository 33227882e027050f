import FoundationEssentials
import NIOHTTP1

/// A lease: its TTL, the time it has left (the leader's clock), and its keys when asked for one.
public struct Lease: Sendable, Equatable, Decodable {
    public var id: UInt64
    public var ttlSeconds: UInt64
    public var remainingSeconds: Double?
    /// The attached keys (one lease read), or their count (a listing).
    public var keys: [String]?
    public var keyCount: Int?

    enum CodingKeys: String, CodingKey {
        case id, ttlSeconds = "ttl_seconds", remainingSeconds = "remaining_seconds", keys
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(UInt64.self, forKey: .id)
        ttlSeconds = try container.decode(UInt64.self, forKey: .ttlSeconds)
        remainingSeconds = try container.decodeIfPresent(Double.self, forKey: .remainingSeconds)
        if let count = try? container.decodeIfPresent(Int.self, forKey: .keys) {
            keyCount = count
        } else {
            keys = try container.decodeIfPresent([String].self, forKey: .keys)
            keyCount = keys?.count
        }
    }
}

/// A lock's holder or an election's leader.
public struct Holder: Sendable, Equatable, Decodable {
    public var name: String
    public var key: String
    /// The fencing token: larger for every later holder.
    public var revision: UInt64
    public var lease: UInt64
    public var waiters: Int
    /// An election leader's value.
    public var value: String?
}

/// What a node says of itself and, on a leader, of every member (`GET /v1/status`).
public struct NodeStatus: Sendable, Decodable {
    public struct Member: Sendable, Decodable {
        public var id: String
        public var raftAddress: String
        public var httpAddress: String
        public var role: String
        public var promotion: String?
        public var matchIndex: UInt64?

        enum CodingKeys: String, CodingKey {
            case id, raftAddress = "raft_addr", httpAddress = "http_addr", role, promotion, matchIndex = "match_index"
        }
    }

    public var nodeID: String
    public var status: String
    public var mode: String
    public var keys: Int
    public var isLeader: Bool
    public var leaderID: String?
    public var role: String?
    public var term: UInt64?
    public var commitIndex: UInt64?
    public var appliedIndex: UInt64?
    public var clusterID: String?
    public var members: [Member]?
    public var warnings: [String]?

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", status, mode, keys, isLeader = "is_leader", leaderID = "leader_id", role, term
        case commitIndex = "commit_index", appliedIndex = "applied_index", clusterID = "cluster_id", members, warnings
    }
}

extension KeyperClient {
    // MARK: Leases

    /// Grants a lease of `ttlSeconds`.
    public func grantLease(ttlSeconds: UInt64) async throws(KeyperError) -> Lease {
        try decode(Lease.self, from: try await request(.POST, "/v1/leases", body: Array(#"{"ttl":\#(ttlSeconds)}"#.utf8)))
    }

    /// Moves the lease's expiry to a full TTL from now.
    @discardableResult
    public func keepAlive(lease id: UInt64) async throws(KeyperError) -> Lease {
        try decode(Lease.self, from: try await request(.POST, "/v1/leases/\(id)/keepalive"))
    }

    /// The lease with its keys and the time it has left.
    public func lease(_ id: UInt64) async throws(KeyperError) -> Lease {
        try decode(Lease.self, from: try await request(.GET, "/v1/leases/\(id)"))
    }

    /// Every lease with its key count.
    public func leases() async throws(KeyperError) -> [Lease] {
        struct Body: Decodable { var leases: [Lease] }
        return try decode(Body.self, from: try await request(.GET, "/v1/leases")).leases
    }

    /// Revokes the lease: its keys are deleted in one revision.
    public func revokeLease(_ id: UInt64) async throws(KeyperError) -> (deleted: Int, revision: UInt64) {
        struct Body: Decodable { var deleted: Int; var revision: UInt64 }
        let body = try decode(Body.self, from: try await request(.DELETE, "/v1/leases/\(id)"))
        return (body.deleted, body.revision)
    }

    // MARK: Locks and elections

    /// Takes the lock `name` with `lease`, waiting up to `wait` (nil: the server's default of
    /// 30 s). Throws `lock_held` when it was not taken in time.
    public func lock(_ name: String, lease: UInt64, wait: Duration? = nil) async throws(KeyperError) -> Holder {
        var path = "/v1/locks/\(Self.query(name))?lease=\(lease)"
        if let wait { path += "&wait=\(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000)ms" }
        return try decode(Holder.self, from: try await request(.POST, path, timeout: (wait ?? .seconds(30)) + requestTimeout))
    }

    /// Releases the lock (or leaves its line).
    public func unlock(_ name: String, lease: UInt64) async throws(KeyperError) {
        _ = try await request(.DELETE, "/v1/locks/\(Self.query(name))?lease=\(lease)")
    }

    /// The lock's holder, or nil when no one holds it.
    public func lockHolder(_ name: String) async throws(KeyperError) -> Holder? {
        let answer = try await send(.GET, "/v1/locks/\(Self.query(name))")
        if answer.status == 404 { return nil }
        if let error = answer.error { throw error }
        return try decode(Holder.self, from: answer)
    }

    // MARK: Cluster

    /// What the node at `endpoint` (default: any) says of itself and the cluster.
    public func status(endpoint: String? = nil) async throws(KeyperError) -> NodeStatus {
        let answer = try await send(.GET, "/v1/status", endpoint: endpoint)
        if let error = answer.error { throw error }
        return try decode(NodeStatus.self, from: answer)
    }

    /// Whether the node at `endpoint` can serve (`GET /v1/health`), with the reason.
    public func health(endpoint: String) async -> (healthy: Bool, reason: String) {
        do {
            let answer = try await send(.GET, "/v1/health", timeout: .seconds(3), endpoint: endpoint)
            struct Body: Decodable { var reason: String?; var status: String? }
            let body = try? JSONDecoder().decode(Body.self, from: Data(answer.body))
            return (answer.status == 200, body?.reason ?? body?.status ?? answer.text)
        } catch {
            return (false, "unreachable")
        }
    }

    /// Adds a member (`POST /v1/join`): answers `voter`, `learner`, or `learner, promotion pending`.
    public func addMember(id: String, raftAddress: String, httpAddress: String? = nil, learner: Bool = false) async throws(KeyperError) -> String {
        struct Body: Encodable {
            var node_id: String
            var raft_addr: String
            var http_addr: String?
            var learner: Bool
        }
        let body = (try? JSONEncoder().encode(Body(node_id: id, raft_addr: raftAddress, http_addr: httpAddress, learner: learner))).map(Array.init) ?? []
        let answer = try await request(.POST, "/v1/join", body: body, timeout: requestTimeout + .seconds(30))
        if answer.status == 202 { return "learner, promotion pending" }
        return learner ? "learner" : "voter"
    }

    /// Removes a member.
    public func removeMember(_ id: String) async throws(KeyperError) {
        _ = try await request(.DELETE, "/v1/members/\(Self.query(id))")
    }

    /// Moves leadership (to `target`, or to the most caught-up voter); answers the new leader.
    public func transferLeadership(to target: String? = nil) async throws(KeyperError) -> String {
        struct Body: Decodable { var leader: String }
        let body = target.map { Array(#"{"target":"\#($0)"}"#.utf8) }
        return try decode(Body.self, from: try await request(.POST, "/v1/leader/transfer", body: body)).leader
    }
}
