import Dispatch
import KeyperWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One change to the replicated state: a key, or the address book of cluster members.
public enum KVOperation: Hashable, Sendable {
    case put(key: [UInt8], value: [UInt8])
    case delete(key: [UInt8])
    /// Records where a member is reached (from its configuration change), so a restarted node or
    /// one installed from a snapshot knows every member's addresses, and whether a learner is
    /// to be promoted to voter once caught up (`promote`; false for one that asked to stay a
    /// learner).
    case setMember(id: String, raftAddress: String, httpAddress: String, promote: Bool)
    case removeMember(id: String)
    /// A new lease (refused at apply if the id is taken: ``KVWriteResult/leaseExists(_:)``).
    case grantLease(id: UInt64, ttlSeconds: UInt64)
    /// Deletes the lease's keys (one revision) and the lease.
    case revokeLease(id: UInt64)
    /// Attaches a key to a lease (0: to none). Not a client's write: applying a put records it.
    case attachLease(key: [UInt8], lease: UInt64)
}

/// A cluster member's addresses as the state machine holds them.
public struct MemberRecord: Hashable, Sendable {
    public var id: String
    public var raftAddress: String
    public var httpAddress: String
    public var promote: Bool
    public init(id: String, raftAddress: String, httpAddress: String, promote: Bool = true) {
        self.id = id
        self.raftAddress = raftAddress
        self.httpAddress = httpAddress
        self.promote = promote
    }
}

/// A write's precondition, checked when it is applied (so every replica decides the same).
public enum KVCondition: Hashable, Sendable {
    /// The key's mod revision must be this; 0: the key must not exist.
    case modRevision(UInt64)
    /// The key must exist (HTTP's `If-Match: *`).
    case exists
}

/// A change with an optional precondition: it changes nothing unless the condition holds.
public struct KVWrite: Hashable, Sendable {
    public enum Change: Hashable, Sendable {
        case one(KVOperation)
        /// Every key that starts with the prefix, deleted in one revision.
        case deletePrefix([UInt8])
        /// Comparisons, then one branch of operations, as one change (one revision).
        case transaction(KVTransaction)
    }

    public var change: Change
    /// Checked against the key of a single operation (a prefix delete or a transaction takes
    /// none: a transaction has its comparisons).
    public var condition: KVCondition?
    /// The client's idempotency key: a write with the key of one the store still remembers
    /// is not applied again, and answers that one's result (``KVWriteResult/replayed(_:)``).
    public var idempotency: IdempotencyToken?
    /// For a put: the lease its key is attached to (the put fails with
    /// ``KVWriteResult/leaseNotFound(_:)`` if there is no such lease). A put without one
    /// detaches the key from any lease, as in etcd.
    public var lease: UInt64?

    public init(_ operation: KVOperation, condition: KVCondition? = nil, idempotency: IdempotencyToken? = nil, lease: UInt64? = nil) {
        self.init(change: .one(operation), condition: condition)
        self.idempotency = idempotency
        self.lease = lease
    }

    private init(change: Change, condition: KVCondition?) {
        self.change = change
        self.condition = condition
    }

    public static func deletePrefix(_ prefix: [UInt8]) -> KVWrite {
        KVWrite(change: .deletePrefix(prefix), condition: nil)
    }

    public static func transaction(_ transaction: KVTransaction) -> KVWrite {
        KVWrite(change: .transaction(transaction), condition: nil)
    }
}

/// What applying a ``KVWrite`` did.
public enum KVWriteResult: Equatable, Sendable {
    /// Applied: the store revision after it, and the key's revisions after it (nil after a
    /// delete, or for a membership change).
    case applied(revision: UInt64, key: KeyRevisions?)
    /// The condition did not hold and nothing changed: the key's mod revision (0: absent).
    case conditionFailed(modRevision: UInt64)
    /// A prefix delete: how many keys it removed, and the store revision after it (one more
    /// than before when it removed any).
    case deletedPrefix(count: Int, revision: UInt64)
    case transaction(KVTransactionResult)
    /// A retry with the idempotency key of a write the store remembers: nothing was applied;
    /// this is what the first attempt did.
    indirect case replayed(KVWriteResult)
    /// A retry whose idempotency key the store remembers for a different change: nothing
    /// was applied.
    case idempotencyKeyReused
    /// What a retry learns of a first attempt whose result was too large to remember (a
    /// transaction that read much): it was applied, at this store revision.
    case alreadyApplied(revision: UInt64)
    /// A put named, or a revoke asked for, a lease that does not exist: nothing changed.
    case leaseNotFound(UInt64)
    /// A grant of an id already taken: nothing changed.
    case leaseExists(UInt64)
    /// A revoke: how many keys it deleted, and the store revision after (one more than
    /// before when it deleted any).
    case revoked(count: Int, revision: UInt64)

    /// The transaction's result (only for a transaction's write).
    public var transactionResult: KVTransactionResult {
        switch self {
        case .transaction(let result): return result
        case .replayed(let result): return result.transactionResult
        default: preconditionFailure("not a transaction's result: \(self)")
        }
    }
}

/// How hard the store works to make each applied batch durable.
public enum KVDurability: Sendable {
    /// Every batch is fsynced before ``KVStore/apply(_:appliedIndex:)`` returns. Standalone
    /// mode, where the store is the only copy of the data.
    case full
    /// Batches reach the file without an fsync; ``KVStore/makeDurable()`` syncs. Raft mode,
    /// where the Raft log is the source of truth and replays everything after the applied index.
    case normal
}

/// A page of an ordered key listing.
public struct KeyPage: Sendable, Equatable {
    public var keys: [[UInt8]]
    /// The last key returned when more keys follow; pass it as `after` to continue.
    public var nextAfter: [UInt8]?
}

/// The store was closed, or a failed replacement left it without files.
public struct KVStoreClosedError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public var description: String { "state machine \(path): the store is closed" }
}

/// A snapshot read into an index of its own, ready to become a store's state
/// (``KVStore/prepareReplacement(moving:)``, ``KVStore/install(_:)``).
public struct PreparedReplacement: Sendable {
    /// The snapshot file, not yet in the store's directory.
    let path: String
    /// The segment id its index entries name.
    let segment: UInt32
    let tables: KVStore.Tables

    /// The key count and the applied index the snapshot holds.
    public var keys: Int { tables.index.count }
    public var appliedIndex: UInt64 { tables.applied }

    /// Removes the file, when it will not be installed.
    public func discard() {
        unlink(path)
    }
}

/// The key-value state machine: a log-structured store (docs/storage-at-scale.md).
///
/// Every applied batch is appended, as one CRC-framed record, to the active segment file of
/// the directory at ``path`` (``StateLog`` has the format). An index in memory (``KeyIndex``)
/// maps each key to where its value lies; a read looks it up and reads the value with `pread`
/// (through the page cache, and a bounded ``ReadCache`` in front). A write costs its own
/// bytes on disk whatever the key count, where a B-tree rewrites a page per random key.
///
/// Segments are sealed at ``segmentBytes``; a sealed segment more than half dead is rewritten
/// (its live values appended again, then the file removed) by ``collectGarbage()``, which a
/// server runs on a thread of its own. Start-up replays the segments to rebuild the index; a
/// torn write at the end of the newest one (a crash mid-append) is cut, and any other damage
/// stops the open with the file and offset.
///
/// Thread-safe. Applies, durability marks, garbage collection and replacements take the
/// writer lock, then the tables lock; reads take the tables lock only for the lookup.
public final class KVStore: Sendable {
    /// The read cache's bound. Small on purpose: it is for hot keys. A read it misses costs an
    /// index lookup and a `pread` from the page cache (a few microseconds), while a cache of
    /// 64 MiB over 10^6 random keys cost more than it saved: every miss filled it, and each
    /// time it started over it freed some 200,000 entries under its lock (reads at 10^6 keys
    /// 8,000–8,700/s with p99 100–150 ms; with 1 MiB, 9,850–10,450/s with p99 11.5 ms).
    public static let cacheBytesDefault = 1 << 20

    /// A segment's size before a new one starts.
    public static let segmentBytesDefault = 64 << 20

    /// The state machine's directory.
    public let path: String
    public let durability: KVDurability
    public let segmentBytes: Int
    /// What start-up repaired (a torn write cut off the newest segment), to be logged.
    public let recoveryNote: String?
    private let writer: Mutex<Writer?>
    private let tables: Mutex<Tables>
    private let cache: Mutex<ReadCache>
    private let collector: Mutex<GarbageCollector?>
    /// The recent changes, and the watchers following them.
    public let changes: ChangeFeed

    /// Where a key's value lies.
    struct Location: Equatable, BitwiseCopyable, Sendable {
        var segment: UInt32
        var length: UInt32
        var offset: UInt64
    }

    /// What the index holds for a key: where its value lies, and its revisions.
    struct Entry: Equatable, BitwiseCopyable, Sendable {
        var location: Location
        var revisions: KeyRevisions
    }

    /// A segment and how much of it is still live.
    struct SegmentInfo {
        let file: SegmentFile
        /// The file's length.
        var bytes: Int
        /// Bytes of puts the index still points to (their keys, values and framing).
        var liveBytes = 0
        /// False once garbage collection failed on it (it is then kept as it is).
        var collectable = true
    }

    /// Everything a read needs, and what replay rebuilds.
    struct Tables {
        var index = KeyIndex<Entry>()
        var segments: [UInt32: SegmentInfo] = [:]
        var members: [String: MemberRecord] = [:]
        /// Writes with idempotency keys, remembered for their retries.
        var idempotency = IdempotencyTable()
        var leases = LeaseTable()
        var applied: UInt64 = 0
        var durable: UInt64 = 0
        /// The store revision: one more for every put, and for every delete that removed a key.
        var revision: UInt64 = 0
        var activeID: UInt32 = 0
        var closed = false

        static func cost(_ key: [UInt8], _ length: UInt32) -> Int { StateLog.operationOverhead + key.count + Int(length) }

        mutating func put(_ key: [UInt8], _ entry: Entry) {
            if let old = index.set(key, entry)?.location { segments[old.segment]?.liveBytes -= Self.cost(key, old.length) }
            segments[entry.location.segment]?.liveBytes += Self.cost(key, entry.location.length)
        }

        mutating func delete(_ key: [UInt8]) {
            if let old = index.remove(key)?.location { segments[old.segment]?.liveBytes -= Self.cost(key, old.length) }
            leases.detach(key)
        }

        /// Applies a lease operation, or a membership change (a put or a delete is the caller's).
        mutating func applyMetadata(_ operation: KVOperation) {
            switch operation {
            case let .setMember(id, raftAddress, httpAddress, promote):
                members[id] = MemberRecord(id: id, raftAddress: raftAddress, httpAddress: httpAddress, promote: promote)
            case let .removeMember(id): members[id] = nil
            case let .grantLease(id, ttl): leases.grant(id, ttlSeconds: ttl)
            case let .revokeLease(id): leases.revoke(id)
            case let .attachLease(key, lease): leases.attach(key, to: lease)
            case .put, .delete: preconditionFailure("not metadata: \(operation)")
            }
        }

        /// What a batch does: the operations that go ahead, the revisions each of their puts
        /// gives its key, the store revision after them, and each write's result.
        struct Plan {
            var operations: [KVOperation] = []
            var puts: [KeyRevisions] = []
            var revision: UInt64
            var results: [PlannedResult] = []
            /// The idempotency records the batch's writes make.
            var remembered: [IdempotencyRecord] = []
            /// What watchers see: each put, and each delete of a key that was there, in order.
            var events: [KVEvent] = []
        }

        /// A write's result, with the values a transaction read still to be fetched.
        enum PlannedResult {
            case done(KVWriteResult)
            case transaction(PlannedTransaction)

            func fetch() throws -> KVWriteResult {
                switch self {
                case .done(let result): result
                case .transaction(let planned): .transaction(try planned.fetch())
                }
            }
        }

        /// What `writes` do, in order, against the state with the earlier ones of the batch
        /// applied. A put is a new revision, and so is a delete of a present key, a prefix
        /// delete that removed any, and a transaction that changed anything (one for all of
        /// its changes). `path` names the store in errors. Reads a value from the files only
        /// for a transaction's comparison of a value.
        func plan(_ writes: [KVWrite], path: String) throws -> Plan {
            var plan = Plan(revision: revision)
            plan.operations.reserveCapacity(writes.count)
            plan.results.reserveCapacity(writes.count)
            // Keys changed earlier in the same batch: their value and revisions (nil: deleted).
            var changed: [[UInt8]: VersionedValue?] = [:]
            func current(_ key: [UInt8]) -> KeyRevisions? {
                if let known = changed[key] { return known?.revisions }
                return index.get(key)?.revisions
            }
            func file(of entry: Entry) throws -> SegmentFile {
                guard let segment = segments[entry.location.segment] else {
                    throw StateLogError(path: path, offset: 0, reason: "the index names segment \(entry.location.segment), which is gone")
                }
                return segment.file
            }
            /// The key's revisions and where its value is, at this point of the batch.
            func source(_ key: [UInt8]) throws -> (KeyRevisions, ValueSource)? {
                if let known = changed[key] { return known.map { ($0.revisions, .inline($0.value)) } }
                guard let entry = index.get(key) else { return nil }
                return (entry.revisions, .stored(try file(of: entry), entry.location))
            }
            /// The keys under `prefix` at this point of the batch, in order.
            func keys(under prefix: [UInt8]) -> [[UInt8]] {
                var keys = Set<[UInt8]>()
                index.forEach(from: prefix) { key, _ in
                    guard key.starts(with: prefix) else { return false }
                    if changed[key] == nil { keys.insert(key) }
                    return true
                }
                for (key, state) in changed where state != nil && key.starts(with: prefix) { keys.insert(key) }
                return keys.sorted { $0.lexicographicallyPrecedes($1) }
            }
            // Leases granted and revoked earlier in the batch, and keys whose lease it changed (0: none).
            var granted: Set<UInt64> = []
            var revoked: Set<UInt64> = []
            var owners: [[UInt8]: UInt64] = [:]
            func leaseExists(_ id: UInt64) -> Bool {
                !revoked.contains(id) && (granted.contains(id) || leases.ttl(of: id) != nil)
            }
            func owner(_ key: [UInt8]) -> UInt64 { (owners.isEmpty ? nil : owners[key]) ?? leases.owner(of: key) ?? 0 }
            /// The keys attached to `id` at this point of the batch, in order.
            func keys(of id: UInt64) -> [[UInt8]] {
                var keys = leases.keys(of: id).filter { owners[$0] == nil }
                for (key, lease) in owners where lease == id { keys.insert(key) }
                return keys.sorted { $0.lexicographicallyPrecedes($1) }
            }
            /// Puts the key, attached to `lease` (0: to none, detaching it from any it had).
            func put(_ key: [UInt8], _ value: [UInt8], at revision: UInt64, lease: UInt64 = 0) -> KeyRevisions {
                let previous = current(key)
                let revisions = KeyRevisions(create: previous?.create ?? revision, mod: revision, version: (previous?.version ?? 0) + 1)
                plan.operations.append(.put(key: key, value: value))
                plan.puts.append(revisions)
                plan.events.append(KVEvent(kind: .put, key: key, value: value, revisions: revisions))
                changed[key] = .some(VersionedValue(value: value, revisions: revisions))
                if owner(key) != lease {
                    plan.operations.append(.attachLease(key: key, lease: lease))
                    owners[key] = lease
                }
                return revisions
            }
            /// Deletes the key (a change at `revision` if it was there); whether it was there.
            /// A deleted key belongs to no lease (applying the delete detaches it).
            func delete(_ key: [UInt8], at revision: UInt64) -> Bool {
                let present = current(key) != nil
                plan.operations.append(.delete(key: key))
                if present { plan.events.append(KVEvent(kind: .delete, key: key, value: [], revisions: KeyRevisions(create: 0, mod: revision, version: 0))) }
                changed[key] = .some(nil)
                if owner(key) != 0 { owners[key] = 0 }
                return present
            }
            /// A transaction's listing: the index's entries with the batch's changes over them.
            func list(prefix: [UInt8], after: [UInt8]?, limit: Int, values: Bool) throws -> PlannedTransaction.Result {
                let inRange = changed.filter { key, _ in
                    key.starts(with: prefix) && after.map { KeyIndex<Entry>.compare(key, $0) > 0 } ?? true
                }
                // Each changed key hides at most one stored entry: with that many more, the
                // first `limit` of the merge are all at or before the last entry fetched.
                let (stored, more) = index.entries(prefix: prefix, after: after, limit: limit + inRange.count)
                var merged = try stored.compactMap { key, entry -> (key: [UInt8], revisions: KeyRevisions, value: ValueSource?)? in
                    guard inRange[key] == nil else { return nil }
                    return (key, entry.revisions, values ? .stored(try file(of: entry), entry.location) : nil)
                }
                for case let (key, state?) in inRange { merged.append((key, state.revisions, values ? .inline(state.value) : nil)) }
                merged.sort { $0.key.lexicographicallyPrecedes($1.key) }
                let truncated = more || merged.count > limit
                if merged.count > limit { merged.removeLast(merged.count - limit) }
                return .list(merged, nextAfter: truncated ? merged.last?.key : nil)
            }

            /// What `write` does, against the batch so far.
            func planned(_ write: KVWrite) throws -> PlannedResult {
                let operation: KVOperation
                switch write.change {
                case .one(let one):
                    operation = one
                case .deletePrefix(let prefix):
                    let keys = keys(under: prefix)
                    for key in keys { _ = delete(key, at: plan.revision + 1) }
                    if !keys.isEmpty { plan.revision += 1 }
                    return .done(.deletedPrefix(count: keys.count, revision: plan.revision))
                case .transaction(let transaction):
                    let succeeded = try transaction.compare.allSatisfy { comparison in
                        try comparison.holds(for: current(comparison.key)) { try source(comparison.key)!.1.read() }
                    }
                    let next = plan.revision + 1
                    var changes = false
                    var results: [PlannedTransaction.Result] = []
                    for operation in succeeded ? transaction.success : transaction.failure {
                        switch operation {
                        case let .put(key, value):
                            results.append(.done(.put(put(key, value, at: next))))
                            changes = true
                        case let .delete(key):
                            let removed = delete(key, at: next)
                            changes = changes || removed
                            results.append(.done(.delete(count: removed ? 1 : 0)))
                        case let .deletePrefix(prefix):
                            let keys = keys(under: prefix)
                            for key in keys { _ = delete(key, at: next) }
                            changes = changes || !keys.isEmpty
                            results.append(.done(.deletePrefix(count: keys.count)))
                        case let .get(key):
                            results.append(try source(key).map { .get($0.0, $0.1) } ?? .done(.get(nil)))
                        case let .list(prefix, after, limit, values):
                            results.append(try list(prefix: prefix, after: after, limit: limit, values: values))
                        }
                    }
                    if changes { plan.revision = next }
                    return .transaction(PlannedTransaction(succeeded: succeeded, revision: plan.revision, results: results))
                }
                switch operation {
                case let .put(key, _), let .delete(key):
                    if case .put = operation, let lease = write.lease, !leaseExists(lease) { return .done(.leaseNotFound(lease)) }
                    let previous = current(key)
                    let holds = switch write.condition {
                    case nil: true
                    case .modRevision(let expected): (previous?.mod ?? 0) == expected
                    case .exists: previous != nil
                    }
                    guard holds else { return .done(.conditionFailed(modRevision: previous?.mod ?? 0)) }
                    if case let .put(_, value) = operation {
                        plan.revision += 1
                        let revisions = put(key, value, at: plan.revision, lease: write.lease ?? 0)
                        return .done(.applied(revision: plan.revision, key: revisions))
                    }
                    if delete(key, at: plan.revision + 1) { plan.revision += 1 }
                    return .done(.applied(revision: plan.revision, key: nil))
                case .setMember, .removeMember:
                    plan.operations.append(operation)
                    return .done(.applied(revision: plan.revision, key: nil))
                case let .grantLease(id, _):
                    guard id != 0, !leaseExists(id) else { return .done(.leaseExists(id)) }
                    plan.operations.append(operation)
                    granted.insert(id)
                    revoked.remove(id)
                    return .done(.applied(revision: plan.revision, key: nil))
                case let .revokeLease(id):
                    guard leaseExists(id) else { return .done(.leaseNotFound(id)) }
                    let keys = keys(of: id)
                    for key in keys { _ = delete(key, at: plan.revision + 1) }
                    if !keys.isEmpty { plan.revision += 1 }
                    plan.operations.append(operation)
                    revoked.insert(id)
                    granted.remove(id)
                    return .done(.revoked(count: keys.count, revision: plan.revision))
                case .attachLease:
                    preconditionFailure("an attach is not a client's write: \(write)")
                }
            }

            // The idempotency records the batch made so far, and where the log is with them.
            var counters = idempotency.counters
            var remembered: [[UInt8]: IdempotencyRecord] = [:]
            for write in writes {
                guard let token = write.idempotency else {
                    plan.results.append(try planned(write))
                    continue
                }
                let fingerprint = write.fingerprint
                if let record = remembered[token.key].flatMap({ counters.counts($0, at: token.time) ? $0 : nil })
                    ?? idempotency.lookUp(token.key, at: token.time, counters: counters) {
                    guard record.fingerprint == fingerprint else {
                        plan.results.append(.done(.idempotencyKeyReused))
                        continue
                    }
                    do {
                        plan.results.append(.done(.replayed(try KVWriteResult(decoding: record.result))))
                    } catch {
                        throw StateLogError(path: path, offset: 0, reason: "a remembered result does not decode: \(error)")
                    }
                    continue
                }
                // The result is remembered whole: a transaction's reads are fetched now.
                let result = try planned(write).fetch()
                let record = counters.record(key: token.key, fingerprint: fingerprint, time: token.time, result: result)
                remembered[token.key] = record
                plan.remembered.append(record)
                plan.results.append(.done(result))
            }
            return plan
        }

        /// Replays a decoded record of segment `segment`.
        mutating func replay(_ record: StateLog.Record, segment: UInt32) {
            switch record {
            case let .batch(applied, revision, operations):
                for operation in operations {
                    switch operation {
                    case let .put(key, revisions, valueOffset, valueRange):
                        put(key, Entry(location: Location(segment: segment, length: UInt32(valueRange.count), offset: UInt64(valueOffset)),
                                       revisions: revisions))
                    case let .delete(key): delete(key)
                    case let .setMember(member): members[member.id] = member
                    case let .removeMember(id): members[id] = nil
                    case let .remember(record): idempotency.insert(record)
                    case let .lease(operation): applyMetadata(operation)
                    }
                }
                if applied != 0 { self.applied = applied }
                if revision != 0 { self.revision = revision }
                idempotency.prune()
            case let .checkpoint(_, applied, durable, revision, members, idempotency, leases):
                self.applied = applied
                self.durable = durable
                self.revision = revision
                self.members = Dictionary(members.map { ($0.id, $0) }, uniquingKeysWith: { $1 })
                self.idempotency = idempotency
                self.leases.replace(with: leases)
            case let .durable(index):
                durable = index
            }
        }
    }

    /// The active segment, where appends go.
    struct Writer {
        var active: SegmentFile
        var length: Int
        /// How much of the file an fsync has covered.
        var syncedLength: Int
        /// How much of the file writeback was started for (``SegmentFile/startWriteback(at:count:)``).
        var writebackLength: Int

        init(active: SegmentFile, length: Int) {
            self.active = active
            self.length = length
            syncedLength = length
            writebackLength = length
        }

        var unsynced: Bool { length > syncedLength }
    }

    /// Appended bytes after which writeback of them is started, so that no fsync (at a
    /// segment's seal, or ``makeDurable()``) finds much left to write, however much memory the
    /// kernel would let dirty pages take.
    static let writebackStepBytes = 1 << 20

    /// Opens (or creates) the state machine in the directory `path`. When the directory holds
    /// no segment and `legacyDatabase` names a SQLite database of an earlier Keyper, its keys,
    /// members and applied index are carried over and the database is removed.
    /// `cacheBytes`: how much memory recently read or written values may hold (``ReadCache``).
    /// `backgroundCompaction`: run ``collectGarbage()`` on a thread of its own (a server's; a
    /// simulation calls nothing in the background).
    public init(path: String, durability: KVDurability, cacheBytes: Int = KVStore.cacheBytesDefault,
                segmentBytes: Int = KVStore.segmentBytesDefault, legacyDatabase: String? = nil,
                backgroundCompaction: Bool = false, changeLimits: ChangeFeed.Limits = ChangeFeed.Limits()) throws {
        self.path = path
        self.durability = durability
        self.segmentBytes = segmentBytes
        try FileIO.makeDirectories(path)
        var imported = false
        if let legacyDatabase, try Self.segmentIDs(in: path).isEmpty, access(legacyDatabase, F_OK) == 0 {
            let temporary = path + "/import.tmp"
            try LegacyStateImport.convert(databaseAt: legacyDatabase, toSegmentAt: temporary)
            try FileIO.renameDurably(from: temporary, to: path + "/" + StateLog.fileName(1))
            imported = true
        }
        let recovered = try Self.recover(path)
        writer = Mutex(recovered.writer)
        tables = Mutex(recovered.tables)
        cache = Mutex(ReadCache(bytesMax: cacheBytes, revision: recovered.tables.revision))
        changes = ChangeFeed(revision: recovered.tables.revision, limits: changeLimits)
        recoveryNote = recovered.note
        collector = Mutex(nil)
        // New records go to a segment of this build's format: an older release then refuses
        // the files by their format, rather than at a record it cannot decode.
        if try SegmentScanner.formatVersion(of: recovered.writer.active) < StateLog.formatVersion {
            try writer.withLock { (writer: inout Writer?) throws in
                guard var active = writer else { return }
                try startSegment(&active)
                writer = active
            }
        }
        if imported, let legacyDatabase {
            // The segment is fsynced and named durably: the database can go.
            for suffix in ["", "-wal", "-shm"] { unlink(legacyDatabase + suffix) }
            try FileIO.syncDirectory(containing: legacyDatabase)
        }
        if backgroundCompaction { collector.withLock { $0 = GarbageCollector(store: self) } }
    }

    /// Stops garbage collection and closes the files. Later calls throw.
    public func close() {
        stopCollector()
        writer.withLock { writer in
            tables.withLock { tables in
                tables.closed = true
                tables.segments = [:]
                tables.index = KeyIndex()
            }
            writer = nil
        }
        cache.withLock { $0.invalidate(revision: 0) }
        changes.close()
    }

    private func stopCollector() {
        let running = collector.withLock { collector in
            defer { collector = nil }
            return collector
        }
        running?.stop()
    }

    // MARK: Reads

    public func get(_ key: [UInt8]) throws -> [UInt8]? {
        finishRead(try beginRead(key))
    }

    /// A value with its key's revisions.
    public struct VersionedValue: Equatable, Sendable {
        public var value: [UInt8]
        public var revisions: KeyRevisions

        public init(value: [UInt8], revisions: KeyRevisions) {
            self.value = value
            self.revisions = revisions
        }
    }

    /// What a read found: the key's value and revisions (nil: absent), and the store revision
    /// it is current at (the read saw the state as of that revision).
    public struct VersionedRead: Equatable, Sendable {
        public var value: VersionedValue?
        public var revision: UInt64
    }

    /// The key's value, its revisions and the store revision the read saw.
    public func getVersioned(_ key: [UInt8]) throws -> VersionedRead {
        let read = try beginRead(key)
        _ = finishRead(read)
        return read.found
    }

    /// A read between its two steps: what was found (in the cache or the files), and the
    /// cache's version when it was looked up.
    public struct PendingRead: Sendable {
        public let key: [UInt8]
        public let found: VersionedRead
        public var value: [UInt8]? { found.value?.value }
        let version: UInt64
        let fromCache: Bool
    }

    /// The first step of ``get(_:)``: looks in the cache, and on a miss in the index and the
    /// segment it names. A simulation runs the two steps apart, so applies can fall between
    /// them as they do between threads.
    public func beginRead(_ key: [UInt8]) throws -> PendingRead {
        // Never nil: a read allowed to wait always ends with a value or its absence.
        try beginRead(key, waitingForDisk: true)!
    }

    /// What ``getIfCached(_:)`` found.
    public enum CachedRead: Sendable, Equatable {
        /// What the read found, without waiting for the disk.
        case done(VersionedRead)
        /// The value is not in memory: ``getVersioned(_:)`` would wait for the disk.
        case wouldBlock
    }

    /// ``getVersioned(_:)``, but only if it needs no disk read: from the read cache, or from the
    /// page cache (`preadv2` with `RWF_NOWAIT`). A server tries this where the request is
    /// handled and sends only the reads that would block to threads of their own.
    public func getIfCached(_ key: [UInt8]) throws -> CachedRead {
        guard let read = try beginRead(key, waitingForDisk: false) else { return .wouldBlock }
        _ = finishRead(read)
        return .done(read.found)
    }

    /// ``beginRead(_:)``; without `waitingForDisk`, nil when the value is not in memory.
    private func beginRead(_ key: [UInt8], waitingForDisk: Bool) throws -> PendingRead? {
        let (cached, version, cachedRevision) = cache.withLock { ($0.lookup(key), $0.version, $0.revision) }
        switch cached {
        case let .value(value, revisions):
            return PendingRead(key: key, found: VersionedRead(value: VersionedValue(value: value, revisions: revisions), revision: cachedRevision),
                               version: version, fromCache: true)
        case .absent:
            return PendingRead(key: key, found: VersionedRead(value: nil, revision: cachedRevision), version: version, fromCache: true)
        case nil: break
        }
        let (found, revision) = try lookUp(key)
        guard let (file, entry) = found else {
            return PendingRead(key: key, found: VersionedRead(value: nil, revision: revision), version: version, fromCache: false)
        }
        let (offset, count) = (Int(entry.location.offset), Int(entry.location.length))
        let value: [UInt8]
        if waitingForDisk {
            value = try file.read(at: offset, count: count)
        } else {
            guard let cached = file.readIfCached(at: offset, count: count) else { return nil }
            value = cached
        }
        return PendingRead(key: key, found: VersionedRead(value: VersionedValue(value: value, revisions: entry.revisions), revision: revision),
                           version: version, fromCache: false)
    }

    /// The key's entry and the file its value is in, and the store revision, under the lock.
    /// The value is read outside it: the bytes at a location never change, and the file stays
    /// open while it is held, even if garbage collection removes it meanwhile.
    private func lookUp(_ key: [UInt8]) throws -> (found: (file: SegmentFile, entry: Entry)?, revision: UInt64) {
        try tables.withLock { (tables: inout Tables) throws -> ((file: SegmentFile, entry: Entry)?, UInt64) in
            guard !tables.closed else { throw KVStoreClosedError(path: path) }
            guard let entry = tables.index.get(key) else { return (nil, tables.revision) }
            return ((try file(of: entry, in: tables), entry), tables.revision)
        }
    }

    /// The segment file `entry`'s value lies in (call it under the tables lock).
    private func file(of entry: Entry, in tables: Tables) throws -> SegmentFile {
        guard let segment = tables.segments[entry.location.segment] else {
            throw StateLogError(path: path, offset: 0, reason: "the index names segment \(entry.location.segment), which is gone")
        }
        return segment.file
    }

    /// The store revision: how many changes to keys have been applied (puts, and deletes that
    /// removed a key).
    public func revision() throws -> UInt64 {
        try readTables { $0.revision }
    }

    /// The second step: a value read from the files fills the cache, unless a batch was
    /// applied since the lookup (see ``ReadCache``). Returns the value read.
    public func finishRead(_ read: PendingRead) -> [UInt8]? {
        if !read.fromCache {
            let state = read.found.value.map { ReadCache.Cached.value($0.value, $0.revisions) } ?? .absent
            cache.withLock { $0.fill(read.key, state, readAt: read.version) }
        }
        return read.value
    }

    /// Keys in byte order that start with `prefix` and sort after `after`, at most `limit`.
    public func list(prefix: [UInt8], after: [UInt8]?, limit: Int) throws -> KeyPage {
        precondition(limit > 0, "limit=\(limit)")
        let (keys, more) = try readTables { $0.index.keys(prefix: prefix, after: after, limit: limit) }
        return KeyPage(keys: keys, nextAfter: more ? keys.last : nil)
    }

    /// A page of keys with their values and revisions, and the store revision it was read at:
    /// one consistent read (the entries are taken under one lock; the values read after are the
    /// bytes those entries name, which never change).
    public struct VersionedPage: Sendable {
        public var entries: [(key: [UInt8], value: VersionedValue)]
        public var nextAfter: [UInt8]?
        public var revision: UInt64
    }

    /// ``list(prefix:after:limit:)`` with revisions, and with values when `values` (else each
    /// value is empty and nothing is read from the files).
    public func listVersioned(prefix: [UInt8], after: [UInt8]?, limit: Int, values: Bool = true) throws -> VersionedPage {
        precondition(limit > 0, "limit=\(limit)")
        let (found, more, revision) = try tables.withLock { (tables: inout Tables) throws in
            guard !tables.closed else { throw KVStoreClosedError(path: path) }
            let (entries, more) = tables.index.entries(prefix: prefix, after: after, limit: limit)
            let found = try entries.map { key, entry in (key: key, file: try file(of: entry, in: tables), entry: entry) }
            return (found, more, tables.revision)
        }
        let entries = try found.map { key, file, entry in
            let value = values ? try file.read(at: Int(entry.location.offset), count: Int(entry.location.length)) : []
            return (key: key, value: VersionedValue(value: value, revisions: entry.revisions))
        }
        return VersionedPage(entries: entries, nextAfter: more ? entries.last?.key : nil, revision: revision)
    }

    /// Runs a transaction that writes nothing (``KVTransaction/isReadOnly``) against the state
    /// as of one store revision: its comparisons and the entries it reads are taken under one
    /// lock, the values read after.
    public func read(_ transaction: KVTransaction) throws -> KVTransactionResult {
        precondition(transaction.isReadOnly, "a transaction that writes is applied, not read")
        let plan = try tables.withLock { (tables: inout Tables) throws in
            guard !tables.closed else { throw KVStoreClosedError(path: path) }
            return try tables.plan([.transaction(transaction)], path: path)
        }
        return try plan.results[0].fetch().transactionResult
    }

    public func count() throws -> Int {
        try readTables { $0.index.count }
    }

    /// Every member's addresses, by id.
    public func members() throws -> [MemberRecord] {
        try readTables { $0.members.values.sorted { $0.id < $1.id } }
    }

    /// Every lease, by id, with its key count (not its keys).
    public func leases() throws -> [LeaseInfo] {
        try readTables { tables in tables.leases.all.map { LeaseInfo(id: $0.id, ttlSeconds: $0.ttlSeconds, keys: [], keyCount: tables.leases.keys(of: $0.id).count) } }
    }

    /// The lease with its keys, or nil when there is no such lease.
    public func lease(_ id: UInt64) throws -> LeaseInfo? {
        try readTables { $0.leases.info(id, withKeys: true) }
    }

    /// The lease a key is attached to, if any.
    public func lease(ofKey key: [UInt8]) throws -> UInt64? {
        try readTables { $0.leases.owner(of: key) }
    }

    /// A number that changes whenever a lease is granted or revoked, or the leases are
    /// replaced (a snapshot installed): a reader of ``leaseTTLs()`` rereads only then.
    public func leaseGeneration() throws -> UInt64 {
        try readTables { $0.leases.generation }
    }

    /// Every lease's id, TTL and grant (a number that differs between two leases granted
    /// under the same id), by id, and the ``leaseGeneration()`` they are of.
    public func leaseTTLs() throws -> (leases: [(id: UInt64, ttlSeconds: UInt64, grant: UInt64)], generation: UInt64) {
        try readTables { ($0.leases.grants, $0.leases.generation) }
    }

    /// The Raft index of the last entry applied.
    public func appliedIndex() throws -> UInt64 {
        try readTables { $0.applied }
    }

    /// The applied index the last ``makeDurable()`` made durable (0 before the first).
    public func durableIndex() throws -> UInt64 {
        try readTables { $0.durable }
    }

    /// Bytes the index holds in memory (the one structure that grows with the key count).
    public func indexBytes() throws -> Int {
        try readTables { $0.index.bytesHeld }
    }

    /// The segments' total size, and how much of it live keys take.
    public func diskUsage() throws -> (bytes: Int, liveBytes: Int) {
        try readTables { tables in
            tables.segments.values.reduce((0, 0)) { ($0.0 + $1.bytes, $0.1 + $1.liveBytes) }
        }
    }

    private func readTables<T>(_ body: (Tables) -> T) throws -> T {
        try tables.withLock { (tables: inout Tables) throws -> T in
            guard !tables.closed else { throw KVStoreClosedError(path: path) }
            return body(tables)
        }
    }

    // MARK: Writes

    /// Applies `operations` as one record, and records `appliedIndex` in it when given, so
    /// the data and the index that covers it are on disk together or not at all.
    public func apply(_ operations: [KVOperation], appliedIndex: UInt64? = nil) throws {
        _ = try apply(operations.map { KVWrite($0) }, appliedIndex: appliedIndex)
    }

    /// Applies `writes` in order as one record (those whose condition does not hold change
    /// nothing), recording `appliedIndex` in it when given; returns what each did.
    @discardableResult
    public func apply(_ writes: [KVWrite], appliedIndex: UInt64? = nil) throws -> [KVWriteResult] {
        try writer.withLock { (writer: inout Writer?) throws in
            guard var active = writer else { throw KVStoreClosedError(path: path) }
            cache.withLock { $0.beginApply() }
            do {
                // Only this lock's holder changes the tables: what they say now holds until
                // the batch is in them.
                let plan = try tables.withLock { try $0.plan(writes, path: path) }
                let (operations, revisions, revision) = (plan.operations, plan.puts, plan.revision)
                // A transaction's reads, from locations whose bytes never change.
                let results = try plan.results.map { try $0.fetch() }
                var record = ByteWriter(capacity: 64 + operations.reduce(0) { $0 + Self.estimatedBytes($1) })
                var values: [(offset: Int, length: Int)] = []
                StateLog.appendRecord(to: &record) { payload in
                    StateLog.encodeBatch(operations, revisions: revisions, remembered: plan.remembered, appliedIndex: appliedIndex ?? 0,
                                         revision: revision, into: &payload) { offset, length in values.append((offset, length)) }
                }
                let start = try append(record.bytes, to: &active, sync: durability == .full)
                tables.withLock { tables in
                    var nextValue = 0
                    for operation in operations {
                        switch operation {
                        case let .put(key, _):
                            let value = values[nextValue]
                            let location = Location(segment: active.active.id, length: UInt32(value.length), offset: UInt64(start + value.offset))
                            tables.put(key, Entry(location: location, revisions: revisions[nextValue]))
                            nextValue += 1
                        case let .delete(key): tables.delete(key)
                        default: tables.applyMetadata(operation)
                        }
                    }
                    if let appliedIndex { tables.applied = appliedIndex }
                    tables.revision = revision
                    if !plan.remembered.isEmpty {
                        for record in plan.remembered { tables.idempotency.insert(record) }
                        tables.idempotency.prune()
                    }
                }
                writer = active
                // Appended: now, still holding the write lock, the cache learns the same changes.
                var nextPut = 0
                let changes = operations.compactMap { operation -> (key: [UInt8], state: ReadCache.Cached)? in
                    switch operation {
                    case let .put(key, value):
                        defer { nextPut += 1 }
                        return (key, .value(value, revisions[nextPut]))
                    case let .delete(key): return (key, .absent)
                    default: return nil
                    }
                }
                cache.withLock { $0.applied(changes, revision: revision) }
                // And the watchers, in revision order (still in the write lock).
                self.changes.publish(Self.numbered(plan.events), revision: revision)
                return results
            } catch {
                writer = active
                cache.withLock { $0.applyFailed() }
                throw error
            }
        }
    }

    /// `events` with each one's place among the events of its revision.
    private static func numbered(_ events: [KVEvent]) -> [KVEvent] {
        var events = events
        var start = 0
        while start < events.count {
            var end = start + 1
            while end < events.count, events[end].revision == events[start].revision { end += 1 }
            for position in start..<end {
                events[position].index = position - start
                events[position].count = end - start
            }
            start = end
        }
        return events
    }

    private static func estimatedBytes(_ operation: KVOperation) -> Int {
        switch operation {
        case let .put(key, value): StateLog.operationOverhead + key.count + value.count
        case let .delete(key): StateLog.operationOverhead + key.count
        default: 256
        }
    }

    /// Appends a framed record to the active segment (starting a new one first when it would
    /// overflow), fsyncing it when `sync`; returns the offset it was written at. A failed write
    /// is cut off again, so the file never keeps half a record the index does not know of.
    private func append(_ record: [UInt8], to writer: inout Writer, sync: Bool) throws -> Int {
        let header = StateLog.magic.count
        if writer.length + record.count > segmentBytes, writer.length > header + 512 {
            try startSegment(&writer)
        }
        let start = writer.length
        do {
            try writer.active.write(record, at: start)
            if sync { try writer.active.sync() }
        } catch {
            try? writer.active.truncate(to: start)
            throw error
        }
        writer.length = start + record.count
        if sync {
            writer.syncedLength = writer.length
            writer.writebackLength = writer.length
        } else if writer.length - writer.writebackLength >= Self.writebackStepBytes {
            writer.active.startWriteback(at: writer.writebackLength, count: writer.length - writer.writebackLength)
            writer.writebackLength = writer.length
        }
        let (id, length) = (writer.active.id, writer.length)
        tables.withLock { $0.segments[id]?.bytes = length }
        return start
    }

    /// Seals the active segment (fsynced, so no sealed segment ever has a torn end) and starts
    /// the next, whose checkpoint carries the members and indexes.
    private func startSegment(_ writer: inout Writer) throws {
        // Writeback of all but the last step's bytes is under way or done: a short wait.
        try writer.active.sync()
        writer.syncedLength = writer.length
        let (applied, durable, revision, members, idempotency, leases) = tables.withLock {
            ($0.applied, $0.durable, $0.revision, Array($0.members.values), $0.idempotency, $0.leases)
        }
        let id = writer.active.id + 1
        let header = StateLog.segmentHeader(base: false, applied: applied, durable: durable, revision: revision, members: members,
                                            idempotency: idempotency, leases: leases)
        let file = try createSegment(id: id, bytes: header)
        tables.withLock { tables in
            tables.segments[id] = SegmentInfo(file: file, bytes: header.count)
            tables.activeID = id
        }
        writer = Writer(active: file, length: header.count)
    }

    /// A new segment file holding `bytes`, durable with its name.
    private func createSegment(id: UInt32, bytes: [UInt8]) throws -> SegmentFile {
        let file = try SegmentFile(id: id, path: path + "/" + StateLog.fileName(id), create: true)
        do {
            try file.write(bytes, at: 0)
            try file.sync()
            try FileIO.syncDirectory(containing: file.path)
        } catch {
            unlink(file.path)
            throw error
        }
        return file
    }

    /// Makes everything applied so far durable, and returns the applied index that now is.
    ///
    /// In raft mode an apply reaches the file without an fsync, so the last batches may be
    /// lost on power failure: harmless while the Raft log still holds the entries, since the
    /// log replays everything after the stored applied index. Log compaction may only drop
    /// entries the state machine holds durably, and this is the barrier it waits for: a small
    /// mark appended, and one fdatasync of the active segment (sealed ones were synced when
    /// sealed). No file-sized work, whatever the data size.
    @discardableResult
    public func makeDurable() throws -> UInt64 {
        // The fsync runs outside the writer lock, so applies go on meanwhile (the next call
        // covers them). What it covers: the file up to its length when the applied index was read.
        let pending = try writer.withLock { (writer: inout Writer?) throws -> (SegmentFile, Int, UInt64)? in
            guard let active = writer else { throw KVStoreClosedError(path: path) }
            let (applied, durable) = tables.withLock { ($0.applied, $0.durable) }
            if applied == durable && !active.unsynced { return nil }
            return (active.active, active.length, applied)
        }
        guard let (file, length, applied) = pending else { return try durableIndex() }
        try syncAppended(file, through: length)
        let advanced = tables.withLock { tables in
            defer { tables.durable = max(tables.durable, applied) }
            return applied > tables.durable
        }
        if advanced {
            // A mark for the next start (after the data it speaks of is synced, never before);
            // it is itself made durable by the next fsync.
            try writer.withLock { (writer: inout Writer?) throws in
                guard var active = writer else { throw KVStoreClosedError(path: path) }
                var record = ByteWriter(capacity: 32)
                StateLog.appendRecord(to: &record) { payload in
                    payload.writeUInt8(StateLog.Kind.durable.rawValue)
                    payload.writeUInt64(applied)
                }
                defer { writer = active }
                _ = try append(record.bytes, to: &active, sync: false)
            }
        }
        return applied
    }

    /// fsyncs `file`, outside the writer lock, and records that its first `length` bytes are
    /// durable (a segment sealed meanwhile was synced whole when sealed).
    private func syncAppended(_ file: SegmentFile, through length: Int) throws {
        try file.sync()
        writer.withLock { writer in
            guard var active = writer, active.active === file else { return }
            active.syncedLength = max(active.syncedLength, length)
            writer = active
        }
    }

    /// Empties the state machine: keys, members and the applied index, durably. Used when a
    /// node that only ever bootstrapped itself is adopted by another cluster.
    public func reset() throws {
        try writer.withLock { (writer: inout Writer?) throws in
            guard let active = writer else { throw KVStoreClosedError(path: path) }
            let id = active.active.id + 1
            let header = StateLog.segmentHeader(base: true, applied: 0, durable: 0, revision: 0, members: [])
            // The base is the commit point: from here a restart ignores every older segment.
            let file = try createSegment(id: id, bytes: header)
            let old = tables.withLock { tables in
                defer {
                    tables.index = KeyIndex()
                    tables.segments = [id: SegmentInfo(file: file, bytes: header.count)]
                    tables.members = [:]
                    tables.idempotency = IdempotencyTable()
                    tables.leases.replace(with: LeaseTable())
                    (tables.applied, tables.durable, tables.revision, tables.activeID) = (0, 0, 0, id)
                }
                return tables.segments.values.map(\.file)
            }
            writer = Writer(active: file, length: header.count)
            cache.withLock { $0.invalidate(revision: 0) }
            changes.replaced(revision: 0)
            try removeSegments(old)
        }
    }

    private func removeSegments(_ files: [SegmentFile]) throws {
        guard !files.isEmpty else { return }
        for file in files { unlink(file.path) }
        try FileIO.syncDirectory(containing: path + "/x")
    }

    // MARK: Snapshots

    /// Writes a consistent copy of the state to `path`, a file in the segment format (a base
    /// checkpoint, then the records of every segment), and returns the applied index it
    /// reflects. The writer lock is held only to note which segments and how much of the
    /// active one; the bytes are copied after (sealed segments never change, and the active
    /// one only grows). The copy is not yet fsynced.
    public func copy(to destination: String) throws -> UInt64 {
        try copyState(to: destination).appliedIndex
    }

    /// ``copy(to:)`` for a backup: the copy, and the applied index and store revision it holds.
    public func backup(to destination: String) throws -> (appliedIndex: UInt64, revision: UInt64) {
        try copyState(to: destination)
    }

    private func copyState(to destination: String) throws -> (appliedIndex: UInt64, revision: UInt64) {
        let (files, activeLength, applied, revision, members, idempotency, leases) = try writer.withLock { (writer: inout Writer?) throws in
            guard let active = writer else { throw KVStoreClosedError(path: path) }
            return tables.withLock { tables in
                (tables.segments.values.sorted { $0.file.id < $1.file.id }.map { ($0.file, $0.bytes) },
                 active.length, tables.applied, tables.revision, Array(tables.members.values), tables.idempotency, tables.leases)
            }
        }
        let output = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw FileIOError(operation: "open", path: destination, errorNumber: errno) }
        defer { Glibc.close(output) }
        try FileIO.writeAll(output, StateLog.segmentHeader(base: true, applied: applied, durable: 0, revision: revision, members: members,
                                                           idempotency: idempotency, leases: leases), path: destination)
        for (file, bytes) in files {
            let end = file === files.last?.0 ? activeLength : bytes
            var offset = off_t(StateLog.magic.count)
            while offset < off_t(end) {
                let count = sendfile(output, file.descriptor, &offset, min(end - Int(offset), 64 << 20))
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { throw FileIOError(operation: "sendfile", path: file.path, errorNumber: count < 0 ? errno : EIO) }
            }
        }
        return (applied, revision)
    }

    /// Replaces the whole state with the snapshot file at `snapshotPath` (from ``copy(to:)``,
    /// taken here or received from a leader; a SQLite database from an earlier Keyper is
    /// converted). The file is copied, so the snapshot stays.
    public func replace(with snapshotPath: String) throws {
        let temporary = path + "/install-\(UInt64.random(in: 0...UInt64.max)).tmp"
        do {
            try FileIO.copyFile(from: snapshotPath, to: temporary)
            try replace(moving: temporary)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Replaces the whole state with `preparedPath`, a complete, fsynced copy of a snapshot
    /// (``SnapshotStore/prepareInstall(of:)``) on this file system: ``prepareReplacement(moving:)``
    /// then ``install(_:)``. The file is consumed.
    public func replace(moving preparedPath: String) throws {
        try install(try prepareReplacement(moving: preparedPath))
    }

    /// Reads `preparedPath`, a complete, fsynced copy of a snapshot on this file system, into
    /// an index of its own, for ``install(_:)``. File-sized work (the index of every key in the
    /// snapshot is built here: tens of seconds at 10^7 keys), so it runs on a blocking-I/O
    /// thread while the store goes on serving and applying; the install is then a rename and
    /// a swap. Memory: the new index beside the current one until the install. The file is
    /// consumed (on failure, removed; a SQLite database from an earlier Keyper is converted).
    public func prepareReplacement(moving preparedPath: String) throws -> PreparedReplacement {
        var prepared = preparedPath
        do {
            if try LegacyStateImport.isSQLiteDatabase(prepared) {
                let converted = path + "/import-\(UInt64.random(in: 0...UInt64.max)).tmp"
                try LegacyStateImport.convert(databaseAt: prepared, toSegmentAt: converted)
                unlink(prepared)
                prepared = converted
            }
            // The id it will most likely get (the install renumbers it if segments were started meanwhile).
            let id = try writer.withLock { (writer: inout Writer?) throws in
                guard let active = writer else { throw KVStoreClosedError(path: path) }
                return active.active.id + 1
            }
            var tables = Tables()
            _ = try Self.replay(try SegmentFile(id: id, path: prepared, create: false), into: &tables, tornTailAllowed: false,
                                requireBase: true)
            // The file is fsynced whole: everything it holds is durable.
            tables.durable = tables.applied
            return PreparedReplacement(path: prepared, segment: id, tables: tables)
        } catch {
            unlink(prepared)
            throw error
        }
    }

    /// Makes `prepared` the state: renamed into place as the newest segment (its base
    /// checkpoint is the commit point: a restart from here on ignores the older segments), its
    /// index swapped in, the older segments removed. Applies wait for as long; reads go on
    /// against the old state until the new one is whole.
    public func install(_ prepared: PreparedReplacement) throws {
        try writer.withLock { (writer: inout Writer?) throws in
            guard let active = writer else {
                prepared.discard()
                throw KVStoreClosedError(path: path)
            }
            let id = active.active.id + 1
            var installed = prepared.tables
            guard let info = installed.segments.removeValue(forKey: prepared.segment) else {
                preconditionFailure("a prepared replacement without its segment")
            }
            if id != prepared.segment {
                installed.index.updateValues { entry in entry.location.segment = id }
            }
            let target = path + "/" + StateLog.fileName(id)
            do {
                try FileIO.renameDurably(from: prepared.path, to: target)
            } catch {
                prepared.discard()
                throw error
            }
            do {
                installed.segments[id] = SegmentInfo(file: try SegmentFile(id: id, path: target, create: false), bytes: info.bytes,
                                                     liveBytes: info.liveBytes)
            } catch {
                unlink(target)
                try? FileIO.syncDirectory(containing: target)
                throw error
            }
            let nextID = id + 1
            let header = StateLog.segmentHeader(base: false, applied: installed.applied, durable: installed.durable,
                                                revision: installed.revision, members: Array(installed.members.values),
                                                idempotency: installed.idempotency, leases: installed.leases)
            let next = try createSegment(id: nextID, bytes: header)
            installed.segments[nextID] = SegmentInfo(file: next, bytes: header.count)
            installed.activeID = nextID
            let old = tables.withLock { tables in
                defer {
                    // The lease generation only moves forward, so the expiry clock sees the change.
                    var leases = tables.leases
                    leases.replace(with: installed.leases)
                    installed.leases = leases
                    tables = installed
                }
                return tables.segments.values.map(\.file)
            }
            writer = Writer(active: next, length: header.count)
            cache.withLock { $0.invalidate(revision: installed.revision) }
            changes.replaced(revision: installed.revision)
            try removeSegments(old)
        }
    }

    static func decode(_ payload: [UInt8], payloadOffset: Int, path: String) throws -> StateLog.Record {
        do {
            return try StateLog.decode(payload, payloadOffset: payloadOffset)
        } catch {
            throw StateLogError(path: path, offset: payloadOffset - StateLog.recordHeaderBytes,
                                reason: "a record with a good checksum does not decode: \(error)")
        }
    }

    // MARK: Garbage collection

    /// Rewrites the oldest sealed segment that is more than half dead, if there is one: its
    /// live values are appended to the active segment in batches (each under the writer lock,
    /// checked against the index there), made durable, and the file is removed. Returns
    /// whether it collected one. Deletes are carried forward while an older segment might
    /// still hold the key; the oldest segment drops them.
    @discardableResult
    public func collectGarbage() throws -> Bool {
        let candidate = tables.withLock { tables -> (SegmentFile, Int)? in
            guard !tables.closed else { return nil }
            return tables.segments.values
                .filter { $0.file.id != tables.activeID && $0.collectable && $0.liveBytes * 2 < $0.bytes - StateLog.magic.count }
                .min { $0.file.id < $1.file.id }
                .map { ($0.file, $0.bytes) }
        }
        guard let (file, length) = candidate else { return false }
        do {
            var scanner = try SegmentScanner(file: file, length: length)
            var puts: [(key: [UInt8], value: [UInt8], location: Location)] = []
            var deletes: [[UInt8]] = []
            var pendingBytes = 0
            scanning: while true {
                switch try scanner.next() {
                case .end: break scanning
                case let .bad(reason, _): throw StateLogError(path: file.path, offset: scanner.offset, reason: reason)
                case let .record(payload, payloadOffset):
                    guard case let .batch(_, _, operations) = try Self.decode(payload, payloadOffset: payloadOffset, path: file.path) else { continue }
                    for operation in operations {
                        switch operation {
                        case let .put(key, _, valueOffset, valueRange):
                            puts.append((key, Array(payload[valueRange]),
                                         Location(segment: file.id, length: UInt32(valueRange.count), offset: UInt64(valueOffset))))
                            pendingBytes += key.count + valueRange.count
                        case let .delete(key):
                            deletes.append(key)
                            pendingBytes += key.count
                        case .setMember, .removeMember, .remember, .lease:
                            break  // every later segment's checkpoint holds the members, the idempotency table and the leases
                        }
                    }
                    if pendingBytes >= 1 << 20 {
                        guard try relocate(from: file.id, puts: puts, deletes: deletes) else { return false }
                        (puts, deletes, pendingBytes) = ([], [], 0)
                    }
                }
            }
            guard try relocate(from: file.id, puts: puts, deletes: deletes) else { return false }
            // The relocated values durable before the file they came from goes.
            guard let (active, length) = writer.withLock({ writer in writer.map { ($0.active, $0.length) } }) else { return false }
            try syncAppended(active, through: length)
            guard tables.withLock({ $0.segments.removeValue(forKey: file.id) != nil }) else { return false }
            try removeSegments([file])
            return true
        } catch {
            tables.withLock { $0.segments[file.id]?.collectable = false }
            throw error
        }
    }

    /// Appends the puts still live at their old location, and the deletes still needed, as
    /// one batch that changes no applied index. False when the segment is no longer there (a
    /// reset or replacement came first).
    private func relocate(from segment: UInt32, puts: [(key: [UInt8], value: [UInt8], location: Location)],
                          deletes: [[UInt8]]) throws -> Bool {
        try writer.withLock { (writer: inout Writer?) throws -> Bool in
            guard var active = writer else { return false }
            let found = tables.withLock { tables -> (operations: [KVOperation], revisions: [KeyRevisions])? in
                guard tables.segments[segment] != nil else { return nil }
                let oldest = tables.segments.keys.min() == segment
                var operations: [KVOperation] = []
                var revisions: [KeyRevisions] = []
                for put in puts {
                    guard let entry = tables.index.get(put.key), entry.location == put.location else { continue }
                    operations.append(.put(key: put.key, value: put.value))
                    revisions.append(entry.revisions)
                }
                if !oldest { operations += deletes.filter { tables.index.get($0) == nil }.map { KVOperation.delete(key: $0) } }
                return (operations, revisions)
            }
            guard let (kept, revisions) = found else { return false }
            guard !kept.isEmpty else { return true }
            var record = ByteWriter(capacity: 1 << 20)
            var values: [(offset: Int, length: Int)] = []
            StateLog.appendRecord(to: &record) { payload in
                // Revision 0: the store revision does not change; each value keeps its key's.
                StateLog.encodeBatch(kept, revisions: revisions, appliedIndex: 0, revision: 0, into: &payload) { offset, length in
                    values.append((offset, length))
                }
            }
            let start: Int
            do {
                start = try append(record.bytes, to: &active, sync: false)
            } catch {
                writer = active
                throw error
            }
            writer = active
            tables.withLock { tables in
                var nextValue = 0
                for case let .put(key, _) in kept {
                    let value = values[nextValue]
                    let location = Location(segment: active.active.id, length: UInt32(value.length), offset: UInt64(start + value.offset))
                    tables.put(key, Entry(location: location, revisions: revisions[nextValue]))
                    nextValue += 1
                }
            }
            return true
        }
    }

    // MARK: Opening

    static func segmentIDs(in directory: String) throws -> [UInt32] {
        try FileIO.listDirectory(directory).compactMap(StateLog.segmentID(fileName:)).sorted()
    }

    /// Reads every segment from the newest base on, rebuilding the tables; creates the first
    /// segment of an empty directory.
    private static func recover(_ path: String) throws -> (tables: Tables, writer: Writer, note: String?) {
        for name in try FileIO.listDirectory(path) where name.hasSuffix(".tmp") { unlink(path + "/" + name) }
        var ids = try segmentIDs(in: path)
        var note: String?
        // A crash while creating a segment can leave one without its whole header (whose
        // idempotency table may be large): nothing was ever written to it, since it becomes
        // active only once its header is synced.
        if let last = ids.last {
            let lastPath = path + "/" + StateLog.fileName(last)
            let file = try SegmentFile(id: last, path: lastPath, create: false)
            let size = try file.size()
            let head = try file.read(at: 0, count: min(size, StateLog.magic.count))
            if StateLog.magic.starts(with: head), try SegmentScanner.headerIsTorn(file) {
                unlink(lastPath)
                ids.removeLast()
                note = "removed \(lastPath), a segment whose creation a crash interrupted"
            }
        }
        if ids.isEmpty {
            let header = StateLog.segmentHeader(base: true, applied: 0, durable: 0, revision: 0, members: [])
            let file = try SegmentFile(id: 1, path: path + "/" + StateLog.fileName(1), create: true)
            try file.write(header, at: 0)
            try file.sync()
            try FileIO.syncDirectory(containing: file.path)
            ids = [1]
        }
        let files = try ids.map { id throws in try SegmentFile(id: id, path: path + "/" + StateLog.fileName(id), create: false) }
        // The newest segment that begins with a base checkpoint: nothing older counts (a
        // reset or an install was interrupted before it removed them).
        var first = 0
        for position in files.indices.reversed() where try SegmentScanner.startsWithBase(files[position]) {
            first = position
            break
        }
        if first > 0 {
            for file in files[..<first] { unlink(file.path) }
            try FileIO.syncDirectory(containing: files[first].path)
        }
        var tables = Tables()
        var active: Writer?
        for file in files[first...] {
            let isLast = file === files.last
            let (length, cut) = try replay(file, into: &tables, tornTailAllowed: isLast)
            if let cut { note = cut }
            if isLast {
                active = Writer(active: file, length: length)
                tables.activeID = file.id
            }
        }
        guard let active else { preconditionFailure("no segment after recovery of \(path)") }
        return (tables, active, note)
    }

    /// Replays `file` into `tables`. A bad record at the end of a file whose tail may be torn
    /// (`tornTailAllowed`: the newest segment) is cut off, and what was cut is returned; any
    /// other damage throws with the file and offset. `requireBase`: the first record must be
    /// a base checkpoint (a snapshot). Returns the file's length after any cut.
    private static func replay(_ file: SegmentFile, into tables: inout Tables, tornTailAllowed: Bool,
                               requireBase: Bool = false) throws -> (length: Int, cut: String?) {
        let length = try file.size()
        tables.segments[file.id] = SegmentInfo(file: file, bytes: length)
        var scanner = try SegmentScanner(file: file, length: length)
        var first = true
        while true {
            switch try scanner.next() {
            case .end:
                return (length, nil)
            case let .record(payload, payloadOffset):
                let record = try decode(payload, payloadOffset: payloadOffset, path: file.path)
                if first, requireBase {
                    guard case .checkpoint(base: true, _, _, _, _, _, _) = record else {
                        throw StateLogError(path: file.path, offset: StateLog.magic.count, reason: "a snapshot must begin with a base checkpoint")
                    }
                }
                first = false
                tables.replay(record, segment: file.id)
            case let .bad(reason, claimed):
                // A torn write is the end of the file: damage followed by a whole record is
                // not a crash mid-append.
                let next = claimed.map { scanner.offset + StateLog.recordHeaderBytes + $0 }
                guard tornTailAllowed, !(next.map(scanner.recordIsValid(at:)) ?? false) else {
                    throw StateLogError(path: file.path, offset: scanner.offset, reason: reason)
                }
                let cut = "cut a torn write at offset \(scanner.offset) of \(file.path) (\(length - scanner.offset) bytes: \(reason))"
                try file.truncate(to: scanner.offset)
                try file.sync()
                tables.segments[file.id]?.bytes = scanner.offset
                return (scanner.offset, cut)
            }
        }
    }
}

extension SegmentScanner {
    /// Whether the file's first record is a base checkpoint.
    static func startsWithBase(_ file: SegmentFile) throws -> Bool {
        guard var scanner = try? SegmentScanner(file: file, length: file.size()),
              case let .record(payload, offset) = try scanner.next(),
              case .checkpoint(base: true, _, _, _, _, _, _) = try? StateLog.decode(payload, payloadOffset: offset) else { return false }
        return true
    }

    /// Whether the file holds the magic and one whole record.
    static func startsWithRecord(_ file: SegmentFile) throws -> Bool {
        guard var scanner = try? SegmentScanner(file: file, length: file.size()),
              case .record = try scanner.next() else { return false }
        return true
    }

    /// The format the segment's magic names.
    static func formatVersion(of file: SegmentFile) throws -> Int {
        let magic = try file.read(at: 0, count: StateLog.magic.count)
        return Int(String(decoding: magic.dropFirst(StateLog.magicPrefix.count), as: UTF8.self)) ?? 0
    }

    /// Whether the file is a segment whose creation a crash interrupted: at most the magic
    /// and a first record that is not whole and runs to the end of the file. A bad first
    /// record with more after it is damage, not a torn creation, and is left for replay to
    /// report.
    static func headerIsTorn(_ file: SegmentFile) throws -> Bool {
        let size = try file.size()
        guard size >= StateLog.magic.count else { return true }
        var scanner = try SegmentScanner(file: file, length: size)
        switch try scanner.next() {
        case .record: return false
        case .end: return true
        case .bad(_, let claimed):
            guard let claimed else { return true }
            return StateLog.magic.count + StateLog.recordHeaderBytes + claimed >= size
        }
    }
}

/// Runs ``KVStore/collectGarbage()`` on a thread of its own until stopped.
final class GarbageCollector: Sendable {
    private let stopped = Mutex(false)
    private let finished = DispatchSemaphore(value: 0)

    init(store: KVStore, everyMilliseconds interval: UInt32 = 200) {
        DispatchQueue(label: "keyper.state-gc").async { [self] in
            defer { finished.signal() }
            while !stopped.withLock({ $0 }) {
                // A failure (a full disk) marks the segment and is retried with the next one.
                let collected = (try? store.collectGarbage()) ?? false
                if !collected { usleep(interval * 1_000) }
            }
        }
    }

    /// Waits for a collection under way to finish; none starts after.
    func stop() {
        stopped.withLock { $0 = true }
        finished.wait()
    }
}
