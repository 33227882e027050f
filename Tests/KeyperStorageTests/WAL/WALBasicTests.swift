import Testing
import KeyperRaft
import KeyperWire
@testable import KeyperStorage

@Suite("WAL basics")
struct WALBasicTests {
    @Test("A new log is empty, with a zero hard state, in a directory created with its parents")
    func newLog() throws {
        let directory = WALTestDirectory()
        let wal = try WriteAheadLog(directory: directory.path + "/data/node1/wal")
        #expect(wal.recoveryReport.createdNew)
        #expect(wal.firstIndex == LogIndex(1))
        #expect(wal.lastIndex == LogIndex(0))
        #expect(wal.hardState == HardState())
        #expect(try wal.term(at: .zero) == .zero)
        #expect(try wal.allWALEntries().isEmpty)
    }

    @Test("Appended entries read back, from cache and from disk, and survive reopening")
    func roundTrip() throws {
        let directory = WALTestDirectory()
        let path = directory.path + "/wal"
        let entries = makeWALEntries(1...100, term: 1) + makeWALEntries(101...150, term: 2, bytes: 1000)
        do {
            let wal = try WriteAheadLog(directory: path, options: WALOptions(segmentBytesMax: 8192, cacheBytesMax: 4096))
            for batch in stride(from: 0, to: entries.count, by: 10) {
                try wal.save(Array(entries[batch..<min(batch + 10, entries.count)]))
            }
            #expect(wal.segmentCount > 5)
            #expect(try wal.allWALEntries() == entries)
            #expect(try wal.term(at: LogIndex(100)) == Term(1))
            #expect(try wal.term(at: LogIndex(101)) == Term(2))
        }
        let reopened = try WriteAheadLog(directory: path, options: WALOptions(segmentBytesMax: 8192, cacheBytesMax: 0))
        #expect(reopened.recoveryReport.tornTail == nil)
        #expect(reopened.lastIndex == LogIndex(150))
        #expect(try reopened.allWALEntries() == entries)
        #expect(try reopened.entries(from: LogIndex(37), to: LogIndex(42)) == Array(entries[36..<41]))
    }

    @Test("Reads stop at bytesMax but always return at least one entry")
    func bytesMax() throws {
        let fileSystem = SimulatedFileSystem()
        for cacheBytesMax in [0, 1 << 20] {
            let wal = try WriteAheadLog(directory: walTestDirectory + "\(cacheBytesMax)", options: WALOptions(cacheBytesMax: cacheBytesMax), fileSystem: fileSystem)
            let entries = makeWALEntries(1...20, term: 1, bytes: 100)
            try wal.save(entries)
            let size = entries[0].wireSize
            #expect(try wal.entries(from: LogIndex(1), to: LogIndex(21), bytesMax: size * 3).count == 3)
            #expect(try wal.entries(from: LogIndex(1), to: LogIndex(21), bytesMax: size * 3 + size - 1).count == 3)
            #expect(try wal.entries(from: LogIndex(5), to: LogIndex(21), bytesMax: 1) == [entries[4]])
            #expect(try wal.entries(from: LogIndex(5), to: LogIndex(5)).isEmpty)
        }
    }

    @Test("Reads outside the log throw compacted or unavailable")
    func outOfRange() throws {
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: SimulatedFileSystem())
        try wal.save(makeWALEntries(1...10, term: 1))
        #expect(throws: WALError.unavailable(index: LogIndex(11), lastIndex: LogIndex(10))) { try wal.term(at: LogIndex(11)) }
        #expect(throws: WALError.unavailable(index: LogIndex(11), lastIndex: LogIndex(10))) {
            try wal.entries(from: LogIndex(5), to: LogIndex(12))
        }
        try wal.compact(through: SnapshotMetadata(index: LogIndex(4), term: Term(1)))
        #expect(throws: WALError.compacted(index: LogIndex(3), firstIndex: LogIndex(5))) { try wal.term(at: LogIndex(3)) }
        #expect(throws: WALError.compacted(index: LogIndex(4), firstIndex: LogIndex(5))) {
            try wal.entries(from: LogIndex(4), to: LogIndex(6))
        }
        #expect(try wal.term(at: LogIndex(4)) == Term(1))
    }

    @Test("The latest hard state wins after reopening, even once its segment is gone")
    func hardStateLatestWins() throws {
        let directory = WALTestDirectory()
        let path = directory.path + "/wal"
        let options = WALOptions(segmentBytesMax: 1024)
        let states = (1...30).map { HardState(term: Term(UInt64($0)), vote: $0 % 3 == 0 ? nil : NodeID("node\($0)"), commit: LogIndex(UInt64($0))) }
        do {
            let wal = try WriteAheadLog(directory: path, options: options)
            for (offset, state) in states.enumerated() {
                try wal.save(makeWALEntries(UInt64(offset * 3 + 1)...UInt64(offset * 3 + 3), term: state.term.rawValue), hardState: state)
                #expect(wal.hardState == state)
            }
            // Hard state alone, with no entries, is a record of its own.
            try wal.save([], hardState: HardState(term: Term(31), vote: NodeID("x"), commit: LogIndex(90)))
            try wal.compact(through: SnapshotMetadata(index: LogIndex(85), term: Term(29)))
        }
        let reopened = try WriteAheadLog(directory: path, options: options)
        #expect(reopened.hardState == HardState(term: Term(31), vote: NodeID("x"), commit: LogIndex(90)))
        #expect(reopened.initialState().hardState == reopened.hardState)
        #expect(reopened.firstIndex == LogIndex(86))
        #expect(reopened.lastIndex == LogIndex(90))
    }

    @Test("Group commit: several appends are made durable by one fdatasync")
    func groupCommit() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        let before = fileSystem.fileSyncCount
        try wal.append(makeWALEntries(1...5, term: 1))
        try wal.append(makeWALEntries(6...9, term: 1), hardState: HardState(term: Term(1), commit: LogIndex(3)))
        try wal.append(makeWALEntries(10...10, term: 1))
        #expect(wal.hasUnsyncedWrites)
        try wal.sync()
        try wal.sync()  // nothing pending: no second fdatasync
        #expect(fileSystem.fileSyncCount == before + 1)
        fileSystem.crash()
        let reopened = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        #expect(reopened.lastIndex == LogIndex(10))
    }

    @Test("An unchanged hard state and an empty batch write nothing")
    func noOpAppend() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        try wal.save([], hardState: HardState())
        #expect(!wal.hasUnsyncedWrites)
        #expect(fileSystem.usedBytes == fileSystem.contents(of: wal.segmentPaths[0])!.count)
    }

    @Test("An entry larger than recordBytesMax is refused before anything is written")
    func entryTooLarge() throws {
        let wal = try WriteAheadLog(directory: walTestDirectory, options: WALOptions(recordBytesMax: 1024), fileSystem: SimulatedFileSystem())
        #expect(throws: WALError.self) { try wal.append([Entry(term: Term(1), index: LogIndex(1), data: [UInt8](repeating: 1, count: 2000))]) }
        #expect(wal.lastIndex == .zero)
        try wal.save(makeWALEntries(1...1, term: 1))
    }

    @Test("Segment file names carry sequence and first index in hex")
    func segmentNames() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try WriteAheadLog(directory: walTestDirectory, options: WALOptions(segmentBytesMax: 512), fileSystem: fileSystem)
        try wal.save(makeWALEntries(1...40, term: 1))
        #expect(wal.segmentPaths[0] == "/wal/0000000000000001-0000000000000001.wal")
        for path in wal.segmentPaths {
            #expect(SegmentName.parse(path.walLastPathComponent) != nil)
        }
    }
}

@Suite("WAL ownership and edge cases")
struct WALEdgeTests {
    @Test("A second log on the same directory is refused while the first is open")
    func directoryLock() throws {
        let directory = WALTestDirectory()
        let path = directory.path + "/wal"
        let first = try WriteAheadLog(directory: path)
        #expect(throws: WALError.locked(path: path + "/LOCK")) { try WriteAheadLog(directory: path) }
        first.close()
        let second = try WriteAheadLog(directory: path)
        #expect(second.lastIndex == .zero)

        let fileSystem = SimulatedFileSystem()
        let simulated = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        #expect(throws: WALError.self) { try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem) }
        fileSystem.crash()  // the process died: its lock is gone
        _ = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        _ = simulated
    }

    @Test("Appended entries already covered by the compaction point are skipped")
    func appendBelowSnapshot() throws {
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: SimulatedFileSystem())
        try wal.save(makeWALEntries(1...10, term: 1))
        try wal.compact(through: SnapshotMetadata(index: LogIndex(8), term: Term(1)))
        try wal.save(makeWALEntries(5...12, term: 1))
        #expect(try wal.allWALEntries() == makeWALEntries(9...12, term: 1))
        try wal.save(makeWALEntries(3...6, term: 1))  // wholly covered: nothing to do
        #expect(wal.lastIndex == LogIndex(12))
    }
}
