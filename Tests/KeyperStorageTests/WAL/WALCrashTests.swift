import Testing
import KeyperRaft
import KeyperWire
@testable import KeyperStorage

@Suite("WAL crashes and full disks")
struct WALCrashTests {
    @Test("A crash loses exactly the unsynced appends")
    func crashLosesUnsynced() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        try wal.save(makeWALEntries(1...10, term: 1), hardState: HardState(term: Term(1), commit: LogIndex(5)))
        try wal.append(makeWALEntries(11...20, term: 1), hardState: HardState(term: Term(2), commit: LogIndex(15)))
        fileSystem.crash()
        let recovered = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        #expect(try recovered.allWALEntries() == makeWALEntries(1...10, term: 1))
        #expect(recovered.hardState == HardState(term: Term(1), commit: LogIndex(5)))
    }

    @Test("A crash that keeps a torn part of the unsynced appends recovers a prefix that includes everything synced")
    func tornCrash() throws {
        for seed in UInt64(1)...200 {
            let fileSystem = SimulatedFileSystem()
            let wal = try WriteAheadLog(directory: walTestDirectory, options: WALOptions(segmentBytesMax: 700), fileSystem: fileSystem)
            try wal.save(makeWALEntries(1...12, term: 1))
            try wal.append(makeWALEntries(13...30, term: 1))
            fileSystem.crash(keepingUnsynced: .randomPrefix(seed: seed))
            let recovered = try WriteAheadLog(directory: walTestDirectory, options: WALOptions(segmentBytesMax: 700), fileSystem: fileSystem)
            let entries = try recovered.allWALEntries()
            #expect(entries.count >= 12, "seed=\(seed)")
            #expect(entries == makeWALEntries(1...UInt64(max(entries.count, 1)), term: 1).prefix(entries.count).map { $0 }, "seed=\(seed)")
        }
    }

    @Test("ENOSPC on append surfaces as diskFull, leaves the log as it was, and writes resume when space returns")
    func diskFull() throws {
        let fileSystem = SimulatedFileSystem()
        let options = WALOptions(segmentBytesMax: 1024)
        let wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
        try wal.save(makeWALEntries(1...10, term: 1), hardState: HardState(term: Term(1), commit: LogIndex(10)))
        let segmentsBefore = wal.segmentCount
        let usedBefore = fileSystem.usedBytes
        // Room for part of the batch only, and for starting a segment, but not for all of it.
        fileSystem.capacityBytes = usedBefore + 1500
        #expect {
            try wal.append(makeWALEntries(11...60, term: 1), hardState: HardState(term: Term(1), commit: LogIndex(60)))
        } throws: { error in
            guard case WALError.diskFull = error else { return false }
            return true
        }
        #expect(wal.lastIndex == LogIndex(10))
        #expect(wal.hardState.commit == LogIndex(10))
        #expect(wal.segmentCount == segmentsBefore)
        #expect(fileSystem.usedBytes == usedBefore, "the partial batch was truncated away")
        try wal.sync()
        #expect(try wal.allWALEntries() == makeWALEntries(1...10, term: 1))

        // Reopen while still full: the failed batch is not there.
        wal.close()
        let reopened = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
        #expect(reopened.lastIndex == LogIndex(10))
        #expect(reopened.recoveryReport.tornTail == nil)

        // Space returns: the same batch goes through.
        fileSystem.capacityBytes = nil
        try reopened.save(makeWALEntries(11...60, term: 1), hardState: HardState(term: Term(1), commit: LogIndex(60)))
        reopened.close()
        fileSystem.crash()
        let final = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
        #expect(try final.allWALEntries() == makeWALEntries(1...60, term: 1))
        #expect(final.hardState.commit == LogIndex(60))
    }

    @Test("ENOSPC at every possible byte of a batch never corrupts the log")
    func diskFullAtEveryByte() throws {
        let options = WALOptions(segmentBytesMax: 512)
        let base = SimulatedFileSystem()
        do {
            let wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: base)
            try wal.save(makeWALEntries(1...5, term: 1))
        }
        let batch = makeWALEntries(6...25, term: 2)
        for room in stride(from: 0, through: 1500, by: 7) {
            let fileSystem = base.copy()
            fileSystem.capacityBytes = fileSystem.usedBytes + room
            let wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
            var succeeded = true
            do { try wal.save(batch) } catch { succeeded = false }
            let expected = makeWALEntries(1...5, term: 1) + (succeeded ? batch : [])
            #expect(try wal.allWALEntries() == expected, "room=\(room)")
            // After a crash, the log is the same or (if a segment roll had synced part of the
            // failed batch before the truncation was durable) a prefix-extension of it.
            wal.close()
            fileSystem.crash()
            fileSystem.capacityBytes = nil
            let recovered = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
            let entries = try recovered.allWALEntries()
            #expect(entries.count >= expected.count && entries == Array((makeWALEntries(1...5, term: 1) + batch).prefix(entries.count)), "room=\(room)")
            try recovered.save(makeWALEntries(UInt64(entries.count + 1)...UInt64(entries.count + 1), term: 3))
        }
    }

    @Test("A failed fdatasync makes the log unusable until reopened")
    func failedSync() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        try wal.save(makeWALEntries(1...3, term: 1))
        fileSystem.failSyncs = true
        #expect(throws: WALError.self) { try wal.save(makeWALEntries(4...4, term: 1)) }
        #expect {
            try wal.append(makeWALEntries(5...5, term: 1))
        } throws: { error in
            guard case WALError.failed = error else { return false }
            return true
        }
        fileSystem.failSyncs = false
        fileSystem.crash()
        let reopened = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        #expect(reopened.lastIndex == LogIndex(3))
    }
}
