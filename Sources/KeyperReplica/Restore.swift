import KeyperBase
import KeyperRaft
import KeyperStorage
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `keyper snapshot restore`: a new data directory made from a backup (`GET /v1/snapshot`).
///
/// For Raft mode, the directory is that of a new single-node cluster whose log starts with a
/// snapshot of the backup, as if the cluster had compacted its log there: the state machine
/// holds the backup's keys, revisions, leases and remembered idempotency keys, with this node as
/// its only member (at the backup's applied index plus one), a Raft snapshot of it at that
/// index (term 1, this node the only voter), and the log starting after it. So the node elects
/// itself on start, and a node that joins later is sent that snapshot, like any follower too far
/// behind, instead of entries the log never had.
package enum Restore {
    package struct Report: Sendable {
        package var keys: Int
        package var revision: UInt64
        package var clusterID: String?
    }

    /// Makes `path` (absent or empty) a Raft data directory for `nodeID`, a new single-node
    /// cluster holding the backup at `backupPath`. The backup is read whole first: a damaged
    /// one stops the restore with the file and offset, leaving nothing behind.
    package static func raft(backup backupPath: String, into path: String, nodeID: String, raftAddress: String,
                             httpAddress: String, logger: Logger) throws -> Report {
        let existed = try refuseNonEmpty(path)
        do {
            let disk = try OpenedDataDirectory(path: path, nodeID: nodeID, walFileSystem: { GlibcFileSystem() }, truncateCorrupt: false,
                                               logger: logger)
            defer { disk.close() }
            var random = SplitMix64(seed: UInt64.random(in: 0...UInt64.max))
            var identity = disk.identity
            identity.clusterID = Replica.randomClusterID(&random)
            try disk.directory.saveIdentity(identity)
            let store = disk.store
            try replace(store, with: backupPath)
            // This node becomes the only member, one index after what the backup applied.
            let index = try store.appliedIndex() + 1
            let id = NodeID(nodeID)
            let old = try store.members().map { KVOperation.removeMember(id: $0.id) }
            try store.apply(old + [.setMember(id: nodeID, raftAddress: raftAddress, httpAddress: httpAddress, promote: true)],
                            appliedIndex: index)
            try store.makeDurable()
            let metadata = SnapshotMetadata(index: LogIndex(index), term: Term(1),
                                            configuration: Configuration(voters: [id], incarnations: [id: identity.incarnation]))
            let snapshots = try SnapshotStore(directory: disk.directory.path + "/snapshots")
            _ = try snapshots.create(from: store) { _ in metadata }
            try disk.log.applySnapshot(metadata)
            try disk.log.save([], hardState: HardState(term: Term(1), vote: nil, commit: LogIndex(index)), sync: true)
            return Report(keys: try store.count(), revision: try store.revision(), clusterID: identity.clusterID)
        } catch {
            removeContents(of: path, andItself: !existed)
            throw error
        }
    }

    /// Makes `path` (absent or empty) a standalone data directory holding the backup.
    package static func standalone(backup backupPath: String, into path: String, nodeID: String) throws -> Report {
        let existed = try refuseNonEmpty(path)
        do {
            let directory = try DataDirectory(path: path)
            defer { directory.release() }
            _ = try directory.claim(mode: .standalone, nodeID: nodeID)
            let store = try KVStore(path: directory.statePath, durability: .full)
            defer { store.close() }
            try replace(store, with: backupPath)
            try store.makeDurable()
            return Report(keys: try store.count(), revision: try store.revision(), clusterID: nil)
        } catch {
            removeContents(of: path, andItself: !existed)
            throw error
        }
    }

    /// The store's state replaced by the backup's; damage is reported in the backup's name (the
    /// store reads a copy of it, byte for byte: the offsets are the backup's).
    private static func replace(_ store: KVStore, with backupPath: String) throws {
        do {
            try store.replace(with: backupPath)
        } catch let error as StateLogError {
            throw StateLogError(path: backupPath, offset: error.offset, reason: error.reason)
        }
    }

    /// Throws unless `path` is absent or an empty directory; returns whether it exists.
    private static func refuseNonEmpty(_ path: String) throws -> Bool {
        guard let entries = try? FileIO.listDirectory(path) else { return false }
        guard entries.filter({ $0 != "." && $0 != ".." }).isEmpty else {
            throw DataDirectoryError(path: path, message: "is not empty: a restore makes a new data directory (give an absent or empty --data-dir)")
        }
        return true
    }

    /// Removes what a failed restore made (the directory was absent or empty before).
    private static func removeContents(of path: String, andItself: Bool) {
        for entry in (try? FileIO.listDirectory(path)) ?? [] where entry != "." && entry != ".." {
            let child = path + "/" + entry
            var info = stat()
            if lstat(child, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
                removeContents(of: child, andItself: true)
            } else {
                unlink(child)
            }
        }
        if andItself { rmdir(path) }
    }
}
