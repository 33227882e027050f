import Glibc
import KeyperRaft
import KeyperTestSupport
import KeyperWire
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
            try other.replace(with: snapshot.databasePath)
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
            let reopened = try SnapshotStore(directory: dir + "/snapshots")
            #expect(reopened.latest()?.metadata.index == LogIndex(5))
            // The stray database goes with the next prune.
            reopened.prune()
            #expect(!(try FileIO.listDirectory(dir + "/snapshots")).contains { $0.hasPrefix("snap-0000000000000009") })
        }
    }

    @Test("a damaged database or metadata file is found at open and never used; an older valid snapshot is")
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
            #expect(try SnapshotStore(directory: dir + "/snapshots").latest()?.metadata.index == LogIndex(5))

            bytes[bytes.count / 2] ^= 0x40  // repaired: valid again
            try FileIO.writeBytes(bytes, to: newest.databasePath, at: 0)
            #expect(try SnapshotStore(directory: dir + "/snapshots").latest()?.metadata.index == LogIndex(9))
            let metaPath = newest.databasePath.replacingSuffix(".db", with: ".meta")
            var meta = try FileIO.readFile(metaPath)
            meta[0] ^= 1
            try FileIO.writeBytes(meta, to: metaPath, at: 0)
            #expect(try SnapshotStore(directory: dir + "/snapshots").snapshot(at: LogIndex(9)) == nil)
        }
    }

    @Test("lookups answer from the index built at open and never read a database file")
    func lookupsUseTheIndex() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 20, applied: 5)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            let first = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            try store.apply([.put(key: [1], value: [1])], appliedIndex: 9)
            let second = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            let opened = try SnapshotStore(directory: dir + "/snapshots")
            #expect(opened.all() == [second, first])

            // Both databases gone or damaged behind the store's back: lookups still answer (they
            // never read a database), and only a fresh open, which checks them, drops them.
            unlink(first.databasePath)
            try FileIO.writeBytes([0xFF, 0xFF], to: second.databasePath, at: 100)
            #expect(opened.snapshot(at: LogIndex(5)) == first)
            #expect(opened.snapshot(at: LogIndex(9)) == second)
            #expect(opened.latest() == second)
            #expect(opened.all().count == 2)
            let fresh = try SnapshotStore(directory: dir + "/snapshots")
            #expect(fresh.all().isEmpty)
            #expect(fresh.snapshot(at: LogIndex(9)) == nil)
        }
    }

    @Test("committing updates the index: a newer snapshot leads, the same index is not listed twice")
    func commitUpdatesIndex() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 3, applied: 4)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            #expect(snapshots.latest() == nil)
            _ = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            let again = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            #expect(snapshots.all() == [again])
            // A snapshot received for an older index than one held is kept in order.
            let received = dir + "/snapshots/recv-x.db.tmp"
            _ = try store.copy(to: received)
            let older = try snapshots.commit(databaseAt: received, metadata: Self.metadata(2))
            #expect(snapshots.all() == [again, older])
            #expect(try SnapshotStore(directory: dir + "/snapshots").all() == [again, older])
        }
    }

    @Test("the streamed checksum equals the checksum of the whole file")
    func streamingChecksum() throws {
        try withTemporaryDirectory { dir in
            for size in [0, 1, SnapshotStore.checksumChunkBytes - 1, SnapshotStore.checksumChunkBytes,
                         3 * SnapshotStore.checksumChunkBytes + 17] {
                let bytes = (0..<size).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
                let path = dir + "/file-\(size)"
                try FileIO.writeBytes(bytes, to: path, at: 0)
                let streamed = try SnapshotStore.checksum(ofFileAt: path)
                #expect(streamed.bytes == size)
                #expect(streamed.crc == CRC32C.checksum(bytes), "size \(size)")
            }
        }
    }

    @Test("chunks read at their offsets, in any order, reassemble the database; a pruned snapshot still reads")
    func chunkedReads() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state.db", durability: .normal)
            try store.apply((0..<300).map { .put(key: Array("key\($0)".utf8), value: [UInt8](repeating: UInt8($0 & 0xFF), count: 700)) },
                            appliedIndex: 3)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            let snapshot = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            let whole = try FileIO.readFile(snapshot.databasePath)
            #expect(whole.count == snapshot.databaseBytes)
            let reader = try snapshots.reader(for: snapshot)
            // Pruned while it is being sent: the open file still reads whole.
            unlink(snapshot.databasePath)
            let chunkBytes = 4096 + 7
            let offsets = Array(stride(from: 0, to: whole.count, by: chunkBytes)).shuffled()
            var assembled = [UInt8](repeating: 0, count: whole.count)
            for offset in offsets {
                let chunk = try reader.read(at: offset, count: min(chunkBytes, whole.count - offset))
                assembled.replaceSubrange(offset..<(offset + chunk.count), with: chunk)
            }
            #expect(assembled == whole)
            #expect(try reader.read(at: whole.count, count: 0).isEmpty)
        }
    }

    @Test("a prepared install (a hard link, or a copy) replaces the state machine by a rename and leaves the snapshot as it was")
    func preparedInstall() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 40, applied: 12)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            let snapshot = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            let prepared = try snapshots.prepareInstall(of: snapshot)
            #expect(try FileIO.readFile(prepared) == FileIO.readFile(snapshot.databasePath))

            let other = try KVStore(path: dir + "/other.db", durability: .normal)
            try other.apply([.put(key: Array("stale".utf8), value: [1])], appliedIndex: 3)
            try other.replace(moving: prepared)
            #expect(access(prepared, F_OK) != 0)
            #expect(try other.appliedIndex() == 12)
            #expect(try other.count() == 40)
            #expect(try other.get(Array("stale".utf8)) == nil)
            // Writes to the installed copy leave the snapshot as it was.
            try other.apply([.put(key: Array("new".utf8), value: [2])], appliedIndex: 13)
            #expect(try SnapshotStore(directory: dir + "/snapshots").latest() == snapshot)
            // A copy left by a crash goes at the next open.
            let stray = try snapshots.prepareInstall(of: snapshot)
            _ = try SnapshotStore(directory: dir + "/snapshots")
            #expect(access(stray, F_OK) != 0)
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

    @Test("snapshots older than the log's start are removed, the one at its start is kept")
    func pruningBeforeTheLog() throws {
        try withTemporaryDirectory { dir in
            let store = try Self.makeStore(dir, count: 1, applied: 1)
            let snapshots = try SnapshotStore(directory: dir + "/snapshots")
            for applied in [2, 3] as [UInt64] {
                try store.apply([.put(key: [UInt8(applied)], value: [1])], appliedIndex: applied)
                _ = try snapshots.create(from: store) { Self.metadata($0.rawValue) }
            }
            snapshots.prune(before: LogIndex(3))
            #expect(snapshots.all().map(\.metadata.index.rawValue) == [3])
            #expect(try FileIO.listDirectory(dir + "/snapshots").count == 2)
            snapshots.prune(before: LogIndex(4))
            #expect(snapshots.all().isEmpty)
            #expect(try FileIO.listDirectory(dir + "/snapshots").isEmpty)
            // What is on disk is what the index says: a reopened store agrees.
            #expect(try SnapshotStore(directory: dir + "/snapshots").all().isEmpty)
        }
    }

    @Test("making the state machine durable returns its applied index and records it")
    func durableBarrier() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state.db", durability: .normal)
            #expect(try store.makeDurable() == 0)
            try store.apply([.put(key: [1], value: [2])], appliedIndex: 7)
            #expect(try store.durableIndex() == 0)
            #expect(try store.makeDurable() == 7)
            #expect(try store.durableIndex() == 7)
            // The barrier leaves the data and the applied index as they were.
            #expect(try store.get([1]) == [2])
            #expect(try store.appliedIndex() == 7)
            store.close()
        }
    }
}

extension String {
    func replacingSuffix(_ suffix: String, with replacement: String) -> String {
        precondition(hasSuffix(suffix))
        return String(dropLast(suffix.count)) + replacement
    }
}
