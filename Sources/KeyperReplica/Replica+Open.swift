import KeyperBase
import KeyperRaft
import KeyperStorage
import KeyperWire
import Logging

/// A data directory opened for a replica: the identity claimed, the state machine opened, the
/// Raft log recovered, and a log that lost entries turned into a new incarnation. Nothing else
/// is written yet: a server opens this before it listens for peers (whose bound address goes
/// into a bootstrap entry), then makes the replica with ``Replica/init(opening:options:environment:logger:metrics:)``.
package final class OpenedDataDirectory {
    package let directory: DataDirectory
    package let store: KVStore
    /// The recovered Raft log.
    let log: RaftLogStorage
    package private(set) var identity: NodeIdentity
    let walFileSystem: @Sendable () -> any WALFileSystem
    let truncateCorrupt: Bool

    /// Opens `path` for node `nodeID`. `truncateCorrupt` is `--wal-truncate-corrupt`: cut the
    /// log at a corrupt record rather than refuse to start. `newIncarnation` draws a new
    /// incarnation when one is needed (a simulation's is seeded). `backgroundCompaction`: see
    /// ``KVStore`` (a server's; a simulation runs nothing in the background).
    package init(path: String, nodeID: String, walFileSystem: @escaping @Sendable () -> any WALFileSystem, truncateCorrupt: Bool,
                 backgroundCompaction: Bool = false, changeLimits: ChangeFeed.Limits = ChangeFeed.Limits(),
                 logger: Logger, newIncarnation: () -> UInt64 = NodeIdentity.newIncarnation) throws {
        let directory = try DataDirectory(path: path)
        if let existing = try directory.identity(), let problem = directory.missingMemberData(existing, logFiles: walFileSystem()) {
            throw DataDirectoryError(path: directory.path, message: problem)
        }
        let store = try KVStore(path: directory.statePath, durability: .normal, legacyDatabase: directory.legacyDatabasePath,
                                backgroundCompaction: backgroundCompaction, changeLimits: changeLimits)
        if let note = store.recoveryNote { logger.warning("state machine repaired at start-up", metadata: ["detail": "\(note)"]) }
        do {
            if try directory.identity() == nil, try store.count() > 0 {
                throw DataDirectoryError(path: directory.path,
                                         message: "holds standalone data but no Raft log; use a new --data-dir for Raft mode")
            }
            var identity = try directory.claim(mode: .raft, nodeID: nodeID, newIncarnation: newIncarnation)
            if identity.clusterID.isEmpty, !((try? walFileSystem().contentsOfDirectory(directory.walPath)) ?? []).isEmpty {
                // A node of no cluster holds no log worth keeping: at most the bootstrap it was
                // giving up when an adoption was interrupted (see Replica.resetForAdoption).
                try Replica.removeLog(at: directory.walPath, fileSystem: walFileSystem())
                try store.reset()
            }
            let log: RaftLogStorage
            do {
                log = RaftLogStorage(wal: try WriteAheadLog(directory: directory.walPath,
                                                            options: WALOptions(truncateCorruptTail: truncateCorrupt),
                                                            fileSystem: walFileSystem()))
            } catch {
                throw DataDirectoryError(path: directory.walPath, message: "\(error)")
            }
            let report = try log.withLog { $0.recoveryReport }
            if let corruption = report.corruption {
                logger.critical("cut the Raft log at a corrupt record (--wal-truncate-corrupt); what followed is lost here",
                                metadata: ["detail": "\(corruption)"])
            }
            if let torn = report.tornTail {
                logger.warning("truncated a torn write at the end of the Raft log (a crash mid-write)", metadata: ["detail": "\(torn)"])
            }
            // A log that lost entries (cut now, or cut by an earlier start that failed before it
            // finished: the state machine is then ahead of the log) may have lost entries this
            // node acknowledged: it is no longer the member that promised them. The new
            // incarnation is recorded before anything else can fail, so a retry cannot forget it.
            let appliedAtOpen = try store.appliedIndex()
            let logLost = report.corruption != nil || appliedAtOpen > log.lastIndex.rawValue
            if logLost && !identity.clusterID.isEmpty && !Self.isOnlyMember(NodeID(nodeID), log: log, store: store) {
                identity.incarnation = newIncarnation()
                try directory.saveIdentity(identity)
                logger.critical("the Raft log lost entries: this node takes a new incarnation and rejoins the cluster as a learner",
                                metadata: ["incarnation": "\(NodeIdentity.describe(identity.incarnation))"])
            }
            self.directory = directory
            self.store = store
            self.log = log
            self.identity = identity
            self.walFileSystem = walFileSystem
            self.truncateCorrupt = truncateCorrupt
        } catch {
            store.close()
            directory.release()
            throw error
        }
    }

    /// Closes what was opened, when no replica was made of it.
    package func close() {
        log.close()
        store.close()
        directory.release()
    }

    /// Whether everything this node holds says it is its cluster's only member: the members
    /// its state machine applied, the configuration at the log's start and every configuration
    /// entry left in the log. A sole voter whose log was cut keeps its incarnation (there is
    /// nobody to rejoin; the operator who cut the log accepted the loss). Any trace of another
    /// member means the cut log may be stale: the node must not elect itself on it.
    private static func isOnlyMember(_ id: NodeID, log: RaftLogStorage, store: KVStore) -> Bool {
        guard let applied = try? store.members(), applied.allSatisfy({ $0.id == id.rawValue }),
              log.snapshotMetadata.configuration.members.isSubset(of: [id]) else { return false }
        guard log.lastIndex >= log.firstIndex else { return true }
        guard let entries = try? log.entries(from: log.firstIndex, to: log.lastIndex.next(), bytesMax: .max) else { return false }
        return entries.allSatisfy { entry in
            entry.kind != .configChange || (try? ConfChange(decoding: entry.data))?.node == id
        }
    }
}

/// How a replica is made from its opened data directory.
package struct ReplicaOptions: Sendable {
    package var settings: ReplicaSettings
    /// Bootstrap a single-node cluster when the log is empty (false: wait to be adopted by a
    /// cluster through a join).
    package var bootstrapIfEmpty: Bool
    package var heartbeatTicks: Int
    /// The largest entry the core accepts.
    package var entryBytesMax: Int
    /// Seeds the core's and the replica's random numbers (election timeouts, round numbers).
    package var randomSeed: UInt64

    package init(settings: ReplicaSettings, bootstrapIfEmpty: Bool, heartbeatTicks: Int, entryBytesMax: Int, randomSeed: UInt64) {
        self.settings = settings
        self.bootstrapIfEmpty = bootstrapIfEmpty
        self.heartbeatTicks = heartbeatTicks
        self.entryBytesMax = entryBytesMax
        self.randomSeed = randomSeed
    }
}

extension Replica {
    /// Makes the replica of an opened data directory: bootstraps if it is fresh (and asked
    /// to), finishes a snapshot install a crash interrupted, rewinds a state machine that is
    /// ahead of a cut log (with `--wal-truncate-corrupt`), and rebuilds the address book from
    /// the state machine and the log's configuration entries.
    package convenience init(opening disk: OpenedDataDirectory, options: ReplicaOptions, environment: ReplicaEnvironment,
                             logger: Logger, metrics: ReplicaMetrics) throws {
        let settings = options.settings
        let directory = disk.directory
        let store = disk.store
        let id = NodeID(disk.identity.nodeID)
        var identity = disk.identity
        let selfAddresses = MemberAddresses(raft: settings.advertisedRaftAddress, http: settings.advertisedHTTPAddress)
        let log = disk.log
        let fresh = log.lastIndex == .zero && log.initialState() == HardState() && log.snapshotMetadata.index == .zero
        if fresh && options.bootstrapIfEmpty && !identity.adopted {
            // The cluster id is recorded first: a crash before the bootstrap entry is durable
            // bootstraps again, into the same cluster id.
            if identity.clusterID.isEmpty {
                var random = SplitMix64(seed: options.randomSeed ^ 0xC1_05_7E_21)
                identity.clusterID = Self.randomClusterID(&random)
                try directory.saveIdentity(identity)
            }
            try Self.bootstrap(log: log, id: id, incarnation: identity.incarnation, addresses: selfAddresses)
            logger.notice("bootstrapped a new single-node cluster", metadata: ["cluster": "\(identity.clusterID)"])
        }
        let hardState = log.initialState()
        let logStart = log.snapshotMetadata
        let snapshots = try SnapshotStore(directory: directory.path + "/snapshots")

        // A crash after the log recorded an installed snapshot but before the database was
        // replaced leaves the state machine behind the log's start: finish the install.
        if try store.appliedIndex() < logStart.index.rawValue {
            guard let snapshot = snapshots.snapshot(at: logStart.index) else {
                throw DataDirectoryError(path: directory.path, message:
                    "the Raft log starts after index \(logStart.index.rawValue) but no snapshot at that index is in snapshots/")
            }
            try store.replace(with: snapshot.databasePath)
            logger.notice("finished installing a snapshot interrupted by a crash", metadata: ["index": "\(logStart.index.rawValue)"])
        }
        if try store.appliedIndex() > log.lastIndex.rawValue {
            try Self.rewindStateMachine(store: store, log: log, snapshots: snapshots, directory: directory,
                                        allowed: disk.truncateCorrupt, logger: logger)
        }
        let applied = LogIndex(try store.appliedIndex())
        if applied > hardState.commit {
            // The state machine applied entries the saved commit index does not cover (a crash
            // came before the commit index was saved again). Only committed entries are
            // applied, and the log holds them (checked above), so they are committed: the
            // commit index is raised to them, durably. Otherwise a leader restarted so would
            // hold a state machine newer than anything its core may snapshot, and could not
            // send a snapshot to a follower that needs one until a new entry commits, which
            // may need that very follower.
            try log.save([], hardState: HardState(term: hardState.term, vote: hardState.vote, commit: applied), sync: true)
        }
        var addressBook: [NodeID: MemberAddresses] = [:]
        for record in try store.members() {
            addressBook[NodeID(record.id)] = MemberAddresses(raft: record.raftAddress, http: record.httpAddress, promote: record.promote)
        }
        try Self.learnAddresses(from: log, after: applied, into: &addressBook)
        addressBook[id] = MemberAddresses(raft: selfAddresses.raft, http: selfAddresses.http, promote: addressBook[id]?.promote ?? true)

        var raftConfig = Config(id: id, randomSeed: options.randomSeed)
        raftConfig.incarnation = identity.incarnation
        raftConfig.electionTicks = settings.electionTicks
        raftConfig.heartbeatTicks = options.heartbeatTicks
        raftConfig.applied = min(applied, log.initialState().commit)
        raftConfig.entryBytesMax = options.entryBytesMax
        let raw = try RawNode(config: raftConfig, storage: log)
        environment.peers.setIdentity(clusterID: identity.clusterID, incarnation: identity.incarnation,
                                      raftAddress: settings.advertisedRaftAddress)
        self.init(raw: raw, log: log, store: store, directory: directory, walFileSystem: disk.walFileSystem, snapshots: snapshots,
                  identity: identity, raftConfig: raftConfig, settings: settings, addressBook: addressBook, appliedIndex: applied,
                  environment: environment, logger: logger, metrics: metrics)
    }

    /// The state machine is ahead of the log: the log lost its end (an operator cut it with
    /// `--wal-truncate-corrupt`, or it was replaced). Entries the log will now be given again
    /// (by the leader, or new proposals) would be skipped as "already applied", so the state
    /// machine goes back to the newest snapshot the log still continues, or to empty when the
    /// log still starts at index 1, and the log is replayed onto it.
    private static func rewindStateMachine(store: KVStore, log: RaftLogStorage, snapshots: SnapshotStore,
                                           directory: DataDirectory, allowed: Bool, logger: Logger) throws {
        let applied = try store.appliedIndex()
        let last = log.lastIndex
        guard allowed else {
            throw DataDirectoryError(path: directory.path, message:
                "the state machine has applied index \(applied) but the Raft log ends at \(last.rawValue); the log was lost or cut. "
                + "Start with --wal-truncate-corrupt to rebuild the state machine from what the log and snapshots still hold")
        }
        let logStart = log.snapshotMetadata.index
        if let snapshot = snapshots.all().first(where: { $0.metadata.index <= last && $0.metadata.index >= logStart }) {
            try store.replace(with: snapshot.databasePath)
        } else if logStart == .zero {
            try store.reset()
        } else {
            throw DataDirectoryError(path: directory.path, message:
                "the Raft log starts after index \(logStart.rawValue) and ends at \(last.rawValue), behind the state machine (\(applied)), and no snapshot bridges them")
        }
        let now = try store.appliedIndex()
        logger.critical("rewound the state machine to match the cut Raft log; it will be replayed", metadata: [
            "was_applied": "\(applied)", "now_applied": "\(now)", "log_last": "\(last.rawValue)",
        ])
    }

    /// The founding entry of a single-node cluster: this node as the only voter, with its
    /// addresses in the change's context, committed at term 1 (as etcd bootstraps).
    private static func bootstrap(log: RaftLogStorage, id: NodeID, incarnation: UInt64, addresses: MemberAddresses) throws {
        let change = ConfChange(kind: .addVoter, node: id, incarnation: incarnation, context: addresses.encoded())
        let entry = Entry(term: Term(1), index: LogIndex(1), kind: .configChange, data: change.encoded())
        try log.save([entry], hardState: HardState(term: Term(1), vote: nil, commit: LogIndex(1)), sync: true)
    }

    /// Addresses from configuration entries not yet applied (they are not in the state machine).
    private static func learnAddresses(from log: RaftLogStorage, after applied: LogIndex,
                                       into addressBook: inout [NodeID: MemberAddresses]) throws {
        let low = max(applied.next(), log.firstIndex)
        guard low <= log.lastIndex else { return }
        for entry in try log.entries(from: low, to: log.lastIndex.next(), bytesMax: .max) where entry.kind == .configChange {
            guard let change = try? ConfChange(decoding: entry.data), change.kind != .removeNode,
                  let addresses = try? MemberAddresses(decoding: change.context) else { continue }
            addressBook[change.node] = addresses
        }
    }

    static func randomClusterID(_ random: inout SplitMix64) -> String {
        let hex = Array("0123456789abcdef")
        return String((0..<16).map { _ in hex[random.next(below: 16)] })
    }
}
