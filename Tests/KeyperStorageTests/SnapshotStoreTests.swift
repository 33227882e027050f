import Glibc
import KeyperRaft
import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("Snapshots of the state machine")
struct SnapshotStoreTests {
    static func metadata(_ index: UInt64) -> SnapshotMetadata {
        SnapshotMetadata(index: LogIndex(index), term: Term(2), configuration: Configuration(voters: [NodeID("n1")]))
    }

    /// A store with `count` keys applied through `applied`.
    static func makeStore(_ dir: String, count: Int, applied: UInt64) throws -> KVStore {
        let store = try KVStore(path: dir + "/state.db", durability: .normal)
        try store.apply((0..<count).map { .put(key: Array("k\($0)".utf8), value: Array("v\($0)".utf8)) }, appliedIndex: applied)
        return store
    }

    @Test("a snapshot is a consistent copy that knows its index, and replaces a state machine whole")
    func createAndReplace() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 50, applied: 7)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            let snapshot = try snapshots.create(from: store) { index in
                #expect(index == LogIndex(7))
                return Self.metadata(index.rawValue)
            }
            #expect(snapshot.metadata == Self.metadata(7))
            #expect(snapshots.latest() == snapshot)

            let other = try KVStore(path: dir + "/other.db", durability: .normal)
            try other.apply([.put(key: Array("stale".utf8), value: [1])], appliedIndex: 3)
            try other.replace(with: snapshot.databasePath, durability: .normal)
            #expect(try other.appliedIndex() == 7)
            #expect(try other.count() == 50)
            #expect(try other.get(Array("stale".utf8)) == nil)
            #expect(try other.get(Array("k42".utf8)) == Array("v42".utf8))
            // The snapshot file itself is untouched by later writes to the replaced store.
            try other.apply([.put(key: Array("new".utf8), value: [2])], appliedIndex: 8)
            #expect(snapshots.latest()?.metadata.index == LogIndex(7))
        }
    }

    @Test("a crash after the temporary copy leaves the previous snapshot, and the stray file is removed")
    func crashAfterTemporaryWrite() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 5, applied: 5)
            var snapshots = try SnapshotStore(directory: dir + "/snapshots")
            _ = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            // The crash: a capture that never got further.
            _ = try store.copy(to: dir + "/snapshots/capture-1.db.tmp")
            snapshots = try SnapshotStore(directory: dir + "/snapshots")
            #expect(snapshots.latest()?.metadata.index == LogIndex(5))
            #expect(try FileIO.listDirectory(dir + "/snapshots").allSatisfy { !$0.hasSuffix(".tmp") })
        }
    }

    @Test("a crash after the database rename but before the metadata leaves the previous snapshot")
    func crashBeforeMetadata() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 5, applied: 5)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            _ = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            try store.apply([.put(key: [1], value: [1])], appliedIndex: 9)
            let second = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            // The crash: the newest metadata file never made it.
            unlink(second.databasePath.replacingSuffix(".db", with: ".meta"))
            #expect(SnapshotStore.baseName(LogIndex(9), Term(2)) == "snap-0000000000000009-0000000000000002")
            #expect(snapshots.latest()?.metadata.index == LogIndex(5))
        }
    }

    @Test("a damaged database or metadata file is never used; an older valid snapshot is")
    func damagedSnapshot() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 20, applied: 5)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            _ = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            try store.apply([.put(key: [1], value: [1])], appliedIndex: 9)
            let newest = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            var bytes = try FileIO.readFile(newest.databasePath)
            bytes[bytes.count / 2] ^= 0x40
            try FileIO.writeBytes(bytes, to: newest.databasePath, at: 0)
            #expect(snapshots.latest()?.metadata.index == LogIndex(5))

            let metaPath = newest.databasePath.replacingSuffix(".db", with: ".meta")
            var meta = try FileIO.readFile(metaPath)
            meta[0] ^= 1
            try FileIO.writeBytes(meta, to: metaPath, at: 0)
            #expect(snapshots.snapshot(at: LogIndex(9)) == nil)
        }
    }

    @Test("only the newest two snapshots are kept")
    func pruning() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 1, applied: 1)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            for applied in [2, 3, 4, 5] as [UInt64] {
                try store.apply([.put(key: [UInt8(applied)], value: [1])], appliedIndex: applied)
                _ = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            }
            #expect(snapshots.all().map(\.metadata.index.rawValue) == [5, 4])
            #expect(try FileIO.listDirectory(dir + "/snapshots").count == 4)
        }
    }
}

extension String {
    func replacingSuffix(_ suffix: String, with replacement: String) -> String {
        precondition(hasSuffix(suffix))
        return String(dropLast(suffix.count)) + replacement
    }
}
