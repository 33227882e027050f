import KeyperStorage
import Logging

/// A single node without Raft: the store, fsynced on every batch, is the only copy, so a write
/// is acknowledged once its group commit is fsynced. Always its own leader.
public final class StandaloneNode: KeyValueNode {
    public let configuration: NodeConfiguration
    private let directory: DataDirectory
    private let store: KVStore
    private let committer: GroupCommitter
    private let started = ContinuousClock.now
    public let metrics = NodeMetrics()
    private let leaseService: LeaseService

    /// Opens (or creates) the data directory and its store.
    public init(configuration: NodeConfiguration) throws {
        self.configuration = configuration
        directory = try DataDirectory(path: configuration.dataDirectory)
        _ = try directory.claim(mode: .standalone, nodeID: configuration.nodeID)
        store = try KVStore(path: directory.statePath, durability: .full, legacyDatabase: directory.legacyDatabasePath,
                            backgroundCompaction: true, changeLimits: configuration.changeLimits)
        committer = GroupCommitter(store: store, metrics: metrics, pendingWritesMax: configuration.pendingWritesMax)
        leaseService = LeaseService(store: store, metrics: metrics, ttlSecondsMin: 1)
        leaseService.start(leadership: { Self.term }, write: { [committer] in try await committer.commit($0) },
                           logger: Logger(label: "keyper.leases"))
    }

    /// A standalone node leads alone, always in this term.
    private static let term: UInt64 = 1

    /// Closes the store. Call after the HTTP server stopped taking requests.
    public func close() {
        leaseService.stop()
        store.close()
        directory.release()
    }

    public var leaderHint: String? { configuration.nodeID }

    public var changes: ChangeFeed { store.changes }

    public func get(_ key: [UInt8], consistency: ReadConsistency) async throws -> KVStore.VersionedRead {
        // A standalone node is its own leader and reads its committed state: every read is
        // linearizable, whatever was asked.
        do { return try await DiskReads.get(key, from: store) } catch { throw StorageFailure.map(error) }
    }

    public func list(prefix: [UInt8], after: [UInt8]?, limit: Int, values: Bool,
                     consistency: ReadConsistency) async throws -> KVStore.VersionedPage {
        do { return try store.listVersioned(prefix: prefix, after: after, limit: limit, values: values) } catch { throw StorageFailure.map(error) }
    }

    public func write(_ write: KVWrite) async throws -> KVWriteResult {
        try await committer.commit(write)
    }

    public func read(_ transaction: KVTransaction, consistency: ReadConsistency) async throws -> KVTransactionResult {
        do { return try await DiskReads.pool.runIfActive { try self.store.read(transaction) } } catch { throw StorageFailure.map(error) }
    }

    public func backup() async throws -> NodeBackup {
        try await NodeBackup.make(of: store)
    }

    public var leaseTTLSecondsMin: UInt64 { leaseService.ttlSecondsMin }

    public func keepAlive(lease id: UInt64) async throws -> LeaseStatus {
        try leaseService.keepAlive(id, term: Self.term)
    }

    public func lease(_ id: UInt64) async throws -> LeaseStatus {
        try leaseService.status(id)
    }

    public func leases(consistency: ReadConsistency) async throws -> [LeaseInfo] {
        try leaseService.all()
    }

    public func status() async throws -> NodeStatus {
        let keys: Int
        do { keys = try store.count() } catch { throw StorageFailure.map(error) }
        let uptime = ContinuousClock.now - started
        return NodeStatus(
            nodeID: configuration.nodeID, status: "ok", mode: "standalone", version: KeyperVersion.current,
            uptimeSeconds: Double(uptime.components.seconds) + Double(uptime.components.attoseconds) / 1e18,
            keys: keys, isLeader: true, leaderID: configuration.nodeID, leaderAddress: nil,
            leaderHTTPAddress: configuration.httpAddress.description, term: nil, commitIndex: nil,
            appliedIndex: nil, dataDirectory: configuration.dataDirectory)
    }

    public func health() async -> Health {
        do {
            _ = try store.get([0])
            return Health(healthy: true, reason: "ok")
        } catch {
            return Health(healthy: false, reason: "storage: \(error)")
        }
    }
}
