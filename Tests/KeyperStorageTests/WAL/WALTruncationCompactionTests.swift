import Testing
import KeyperRaft
import KeyperWire
@testable import KeyperStorage

@Suite("WAL suffix truncation and compaction")
struct WALTruncationCompactionTests {
    static let options = WALOptions(segmentBytesMax: 600, cacheBytesMax: 0)

    static func reopen(_ fileSystem: SimulatedFileSystem, crash: Bool = false) throws -> WriteAheadLog {
        if crash { fileSystem.crash() }
        return try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
    }

    @Test("A conflicting suffix is replaced across segment boundaries, and stays replaced after reopen and crash (§5.3)")
    func suffixAcrossSegments() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try Self.reopen(fileSystem)
        try wal.save(makeWALEntries(1...50, term: 1))
        let segmentOf20 = wal.table[LogIndex(20)].segment
        #expect(segmentOf20 < UInt64(wal.segmentCount), "index 20 is not in the last segment")
        let replacement = makeWALEntries(20...24, term: 2)
        try wal.save(replacement)
        let expected = makeWALEntries(1...19, term: 1) + replacement
        #expect(wal.lastIndex == LogIndex(24))
        #expect(try wal.allWALEntries() == expected)
        #expect(try wal.term(at: LogIndex(20)) == Term(2))
        wal.close()
        for crash in [false, true] {
            let reopened = try Self.reopen(fileSystem, crash: crash)
            #expect(try reopened.allWALEntries() == expected)
            reopened.close()
        }
        // Then appending continues from the new suffix.
        let again = try Self.reopen(fileSystem)
        try again.save(makeWALEntries(25...30, term: 2))
        again.close()
        #expect(try Self.reopen(fileSystem).allWALEntries() == expected + makeWALEntries(25...30, term: 2))
    }

    @Test("Replacing the suffix from the very first index leaves only the new entries")
    func replaceEverything() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try Self.reopen(fileSystem)
        try wal.save(makeWALEntries(1...30, term: 1))
        try wal.save(makeWALEntries(1...3, term: 5))
        wal.close()
        #expect(try Self.reopen(fileSystem).allWALEntries() == makeWALEntries(1...3, term: 5))
    }

    @Test("Compaction deletes whole segments below the snapshot and survives reopen")
    func compactionAcrossSegments() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try Self.reopen(fileSystem)
        let entries = makeWALEntries(1...60, term: 3)
        try wal.save(entries, hardState: HardState(term: Term(3), vote: NodeID("a"), commit: LogIndex(60)))
        let segmentsBefore = wal.segmentCount
        let configuration = Configuration(voters: [NodeID("a"), NodeID("b"), NodeID("c")])
        let snapshot = SnapshotMetadata(index: LogIndex(40), term: Term(3), configuration: configuration)
        try wal.compact(through: snapshot)
        #expect(wal.segmentCount < segmentsBefore)
        #expect(fileSystem.filePaths.count == wal.segmentCount)
        #expect(wal.firstIndex == LogIndex(41))
        #expect(try wal.term(at: LogIndex(40)) == Term(3))
        #expect(try wal.allWALEntries() == Array(entries[40...]))
        // The first kept segment holds entry 41: no entry after the snapshot was deleted.
        #expect(wal.table[LogIndex(41)].segment == UInt64(segmentsBefore - wal.segmentCount + 1))
        wal.close()
        for crash in [false, true] {
            let reopened = try Self.reopen(fileSystem, crash: crash)
            #expect(reopened.snapshotMetadata == snapshot)
            #expect(reopened.initialState().configuration == configuration)
            #expect(reopened.hardState == HardState(term: Term(3), vote: NodeID("a"), commit: LogIndex(60)))
            #expect(try reopened.allWALEntries() == Array(entries[40...]))
            reopened.close()
        }
    }

    @Test("Compacting everything keeps the last segment and an empty log at the snapshot")
    func compactEverything() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try Self.reopen(fileSystem)
        try wal.save(makeWALEntries(1...40, term: 2))
        try wal.compact(through: SnapshotMetadata(index: LogIndex(40), term: Term(2)))
        #expect(wal.segmentCount == 1)
        #expect(wal.lastIndex == LogIndex(40))
        #expect(try wal.allWALEntries().isEmpty)
        wal.close()
        let reopened = try Self.reopen(fileSystem, crash: true)
        #expect(reopened.firstIndex == LogIndex(41))
        #expect(reopened.lastIndex == LogIndex(40))
        try reopened.save(makeWALEntries(41...42, term: 3))
        #expect(try reopened.allWALEntries() == makeWALEntries(41...42, term: 3))
    }

    @Test("Compaction after a suffix replacement that reached into deleted segments replays correctly")
    func compactionAfterTruncation() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try Self.reopen(fileSystem)
        try wal.save(makeWALEntries(1...50, term: 1))
        try wal.save(makeWALEntries(10...45, term: 2))  // overwrites from a middle segment
        try wal.compact(through: SnapshotMetadata(index: LogIndex(30), term: Term(2)))
        let expected = makeWALEntries(31...45, term: 2)
        #expect(try wal.allWALEntries() == expected)
        wal.close()
        let reopened = try Self.reopen(fileSystem, crash: true)
        #expect(try reopened.allWALEntries() == expected)
        #expect(reopened.firstIndex == LogIndex(31))
    }

    @Test("Installing a snapshot the log does not match discards the whole log")
    func applySnapshotDiscards() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try Self.reopen(fileSystem)
        try wal.save(makeWALEntries(1...20, term: 1))
        try wal.applySnapshot(SnapshotMetadata(index: LogIndex(100), term: Term(4)))
        #expect(wal.firstIndex == LogIndex(101))
        #expect(wal.lastIndex == LogIndex(100))
        #expect(try wal.term(at: LogIndex(100)) == Term(4))
        try wal.save(makeWALEntries(101...105, term: 4))
        wal.close()
        let reopened = try Self.reopen(fileSystem, crash: true)
        #expect(try reopened.allWALEntries() == makeWALEntries(101...105, term: 4))
        #expect(reopened.segmentCount <= 2, "the old segments are gone")
    }

    @Test("Installing a snapshot the log matches keeps the entries after it")
    func applySnapshotRetains() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try Self.reopen(fileSystem)
        try wal.save(makeWALEntries(1...20, term: 1))
        try wal.applySnapshot(SnapshotMetadata(index: LogIndex(15), term: Term(1)))
        #expect(try wal.allWALEntries() == makeWALEntries(16...20, term: 1))
        // A conflicting term at the same index discards everything.
        try wal.applySnapshot(SnapshotMetadata(index: LogIndex(18), term: Term(9)))
        #expect(try wal.allWALEntries().isEmpty)
        #expect(wal.lastIndex == LogIndex(18))
    }

    @Test("A crash in the middle of deleting compacted segments leaves a log that replays to the same state")
    func crashDuringSegmentDeletion() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try Self.reopen(fileSystem)
        try wal.save(makeWALEntries(1...60, term: 1))
        try wal.save(makeWALEntries(35...50, term: 2))
        let paths = wal.segmentPaths
        let snapshot = SnapshotMetadata(index: LogIndex(45), term: Term(2))
        // What deletion would leave after removing only some of the old segments: write the
        // snapshot record, then delete a prefix of the obsolete segments by hand.
        _ = try wal.write([.snapshot(SnapshotRecord(mode: .retainLog, metadata: snapshot))])
        try wal.sync()
        wal.close()
        try fileSystem.removeFile(paths[0])
        try fileSystem.syncDirectory(walTestDirectory)
        let reopened = try Self.reopen(fileSystem, crash: true)
        #expect(reopened.snapshotMetadata == snapshot)
        #expect(try reopened.allWALEntries() == makeWALEntries(46...50, term: 2))
    }
}
