import KeyperStorage
import Logging
import Synchronization

/// A lease as a node reports it: its TTL, how long it has left (known to the leader only),
/// and its keys (when asked for one lease).
public struct LeaseStatus: Sendable, Equatable {
    public var id: UInt64
    public var ttlSeconds: UInt64
    /// Time left before the leader revokes it.
    public var remaining: Duration
    public var keys: [[UInt8]]?

    public init(id: UInt64, ttlSeconds: UInt64, remaining: Duration, keys: [[UInt8]]? = nil) {
        self.id = id
        self.ttlSeconds = ttlSeconds
        self.remaining = remaining
        self.keys = keys
    }
}

/// The lease side of a node: the ``LeaseKeeper`` and the task running it, and what the
/// leader answers for keepalives and lease reads. Both kinds of node use it; a Raft node
/// forwards keepalives to its leader, a standalone node is always leader (of term 1).
final class LeaseService: Sendable {
    /// The largest TTL a lease may have: a year.
    static let ttlSecondsMax: UInt64 = 365 * 24 * 3600

    let keeper: LeaseKeeper
    let store: KVStore
    let metrics: NodeMetrics
    /// The smallest TTL a lease may have, in seconds (tied to the election timeout).
    let ttlSecondsMin: UInt64
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(store: KVStore, metrics: NodeMetrics, ttlSecondsMin: UInt64) {
        self.keeper = LeaseKeeper(store: store)
        self.store = store
        self.metrics = metrics
        self.ttlSecondsMin = ttlSecondsMin
    }

    /// Starts the expiry clock. `leadership`: this node's term while it leads, else nil;
    /// `write`: how the node proposes a revoke.
    func start(leadership: @escaping @Sendable () -> UInt64?, write: @escaping @Sendable (KVWrite) async throws -> KVWriteResult,
               logger: Logger) {
        let metrics = self.metrics
        let running = LeaseKeeperTask.start(keeper: keeper, leadership: leadership) { id in
            do {
                switch try await write(KVWrite(.revokeLease(id: id))) {
                case let .revoked(count, revision):
                    metrics.leasesExpired.increment()
                    logger.info("lease expired", metadata: ["lease": "\(id)", "keys": "\(count)", "revision": "\(revision)"])
                    return true
                case .leaseNotFound: return true
                default: return false
                }
            } catch {
                logger.debug("lease revoke failed; retried while this node leads", metadata: ["lease": "\(id)", "error": "\(error)"])
                return false
            }
        }
        task.withLock { $0 = running }
    }

    func stop() {
        task.withLock { task in
            task?.cancel()
            task = nil
        }
    }

    /// The leader's keepalive, after a read barrier (so the lease's existence is current).
    func keepAlive(_ id: UInt64, term: UInt64) throws -> LeaseStatus {
        let ttl: UInt64
        do {
            guard let found = try store.lease(id)?.ttlSeconds else { throw APIError.leaseNotFound(id) }
            ttl = found
        } catch let error as APIError {
            throw error
        } catch {
            throw StorageFailure.map(error)
        }
        switch keeper.keepAlive(id, ttlSeconds: ttl, term: term, now: .now) {
        case .renewed(let ttl):
            metrics.leaseKeepAlives.increment()
            return LeaseStatus(id: id, ttlSeconds: ttl, remaining: .seconds(ttl))
        case .expired: throw APIError.leaseNotFound(id, expiring: true)
        case .notLeader:
            throw APIError(.serviceUnavailable, code: "not_leader", "leadership changed during the keepalive; retry")
        }
    }

    /// The lease with its keys and, on the leader, the time it has left (a full TTL when the
    /// clock has not taken it in yet).
    func status(_ id: UInt64) throws -> LeaseStatus {
        let found: LeaseInfo
        do {
            guard let lease = try store.lease(id) else { throw APIError.leaseNotFound(id) }
            found = lease
        } catch let error as APIError {
            throw error
        } catch {
            throw StorageFailure.map(error)
        }
        let remaining = keeper.remaining(id, now: .now) ?? .seconds(found.ttlSeconds)
        return LeaseStatus(id: id, ttlSeconds: found.ttlSeconds, remaining: remaining, keys: found.keys)
    }

    func all() throws -> [LeaseInfo] {
        do { return try store.leases() } catch { throw StorageFailure.map(error) }
    }
}

extension APIError {
    static func leaseNotFound(_ id: UInt64, expiring: Bool = false) -> APIError {
        APIError(.notFound, code: "lease_not_found", expiring ? "lease \(id) has expired (its keys are being deleted)" : "lease \(id) not found")
    }
}
