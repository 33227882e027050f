import KeyperTestSupport
import Testing
import KeyperRaft
import KeyperWire
@testable import KeyperStorage

/// Truncating the log at every byte offset of its last records must recover exactly the records
/// wholly written before that offset: nothing synced-and-complete lost, nothing invented.
@Suite("WAL torn tail recovery")
struct WALTornTailTests {
    /// A state of the log after some record, and the size of the last segment right after it.
    struct Checkpoint {
        var segmentCount: Int
        var tailSize: Int
        var lastIndex: LogIndex
        var hardState: HardState
    }

    /// Writes one record per save (an entry or a hard state, alternating irregularly), so every
    /// record boundary is a checkpoint. Returns the checkpoints and all entries.
    static func buildLog(_ wal: WriteAheadLog, until done: ([Checkpoint]) -> Bool, tailSize: () -> Int) throws -> ([Checkpoint], [Entry]) {
        var checkpoints = [Checkpoint(segmentCount: wal.segmentCount, tailSize: tailSize(), lastIndex: wal.lastIndex, hardState: wal.hardState)]
        var entries: [Entry] = []
        var index: UInt64 = 1
        var step = 0
        while !done(checkpoints) {
            defer { step += 1 }
            if step % 4 == 3 {
                try wal.save([], hardState: HardState(term: Term(1), vote: NodeID("n\(step)"), commit: LogIndex(index - 1)))
            } else {
                let entry = makeWALEntries(index...index, term: 1, bytes: step % 5 * 13)[0]
                try wal.save([entry])
                entries.append(entry)
                index += 1
            }
            checkpoints.append(Checkpoint(segmentCount: wal.segmentCount, tailSize: tailSize(), lastIndex: wal.lastIndex, hardState: wal.hardState))
        }
        return (checkpoints, entries)
    }

    static func checkRecovered(_ wal: WriteAheadLog, cut: Int, checkpoints: [Checkpoint], entries: [Entry]) throws {
        let expected = checkpoints.last { $0.tailSize <= cut }!
        #expect(wal.lastIndex == expected.lastIndex, "cut=\(cut)")
        #expect(wal.hardState == expected.hardState, "cut=\(cut)")
        #expect(try wal.allWALEntries() == Array(entries.prefix(Int(expected.lastIndex.rawValue))), "cut=\(cut)")
        let onBoundary = checkpoints.contains { $0.tailSize == cut }
        #expect((wal.recoveryReport.tornTail == nil) == onBoundary, "cut=\(cut) report=\(wal.recoveryReport)")
        #expect(wal.recoveryReport.corruption == nil)
    }

    @Test("Cutting the last segment at every byte of its last records recovers exactly the whole records before the cut")
    func everyByteOffsetSimulated() throws {
        let fileSystem = SimulatedFileSystem()
        let options = WALOptions(segmentBytesMax: 2048)
        let wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
        let tailPath = { wal.segmentPaths.last! }
        // Several segments, and at least 9 record boundaries inside the last one.
        var (checkpoints, entries) = try Self.buildLog(wal, until: { checkpoints in
            let last = checkpoints.last!.segmentCount
            return last >= 3 && checkpoints.filter { $0.segmentCount == last }.count >= 9
        }, tailSize: { fileSystem.contents(of: tailPath())!.count })
        let path = tailPath()
        let full = fileSystem.contents(of: path)!
        wal.close()
        // Only checkpoints inside the last segment are cut points of that file.
        let finalSegmentCount = checkpoints.last!.segmentCount
        checkpoints = checkpoints.filter { $0.segmentCount == finalSegmentCount }
        let lowCut = checkpoints[checkpoints.count - 9].tailSize
        #expect(full.count - lowCut > 150, "covers the last 8 records byte by byte")
        for cut in lowCut...full.count {
            let copy = fileSystem.copy()
            copy.setContents(Array(full[0..<cut]), of: path)
            let recovered = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: copy)
            try Self.checkRecovered(recovered, cut: cut, checkpoints: checkpoints, entries: entries)
            // The repaired log accepts appends and reopens cleanly.
            let next = recovered.lastIndex.next()
            try recovered.save(makeWALEntries(next.rawValue...next.rawValue, term: 2))
            recovered.close()
            let again = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: copy)
            #expect(again.recoveryReport.tornTail == nil, "cut=\(cut)")
            #expect(again.lastIndex == next)
        }
    }

    @Test("Cutting a real segment file at every byte of its last records recovers exactly the whole records before the cut")
    func everyByteOffsetRealFiles() throws {
        let directory = WALTestDirectory()
        let path = directory.path + "/wal"
        let wal = try WriteAheadLog(directory: path)
        let segment = wal.segmentPaths[0]
        let (checkpoints, entries) = try Self.buildLog(wal, until: { $0.count > 24 }, tailSize: { readWALTestFile(segment).count })
        wal.close()
        let full = readWALTestFile(segment)
        let fileSystem = GlibcFileSystem()
        #expect(full.count - checkpoints[checkpoints.count - 9].tailSize > 150)
        for cut in checkpoints[checkpoints.count - 9].tailSize...full.count {
            let file = try fileSystem.openFile(segment, create: false)
            try file.write(full, at: 0)
            try file.truncate(to: Int64(cut))
            file.close()
            let recovered = try WriteAheadLog(directory: path)
            try Self.checkRecovered(recovered, cut: cut, checkpoints: checkpoints, entries: entries)
            #expect(readWALTestFile(segment).count == checkpoints.last { $0.tailSize <= cut }!.tailSize, "torn bytes truncated on disk")
        }
    }

    @Test("A zero-filled or garbage tail after the last record is a torn write, truncated and reported")
    func zeroAndGarbageTails() throws {
        var rng = WALTestGenerator(seed: 99)
        let tails: [[UInt8]] = [[UInt8](repeating: 0, count: 1), [UInt8](repeating: 0, count: 4096), rng.bytes(3), rng.bytes(5000)]
        for tail in tails {
            let fileSystem = SimulatedFileSystem()
            let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
            try wal.save(makeWALEntries(1...10, term: 3), hardState: HardState(term: Term(3), vote: NodeID("a"), commit: LogIndex(4)))
            let path = wal.segmentPaths[0]
            wal.close()
            let good = fileSystem.contents(of: path)!
            fileSystem.setContents(good + tail, of: path)
            let recovered = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
            #expect(recovered.lastIndex == LogIndex(10))
            #expect(recovered.hardState.commit == LogIndex(4))
            #expect(recovered.recoveryReport.tornTail?.offset == Int64(good.count))
            #expect(recovered.recoveryReport.tornTail?.bytesDiscarded == Int64(tail.count))
            #expect(fileSystem.contents(of: path)! == good)
        }
    }

    @Test("A torn record whose data embeds a well-formed record is still a torn tail, not corruption")
    func embeddedRecordInTornData() throws {
        // User data that is itself a framed WAL record (here framed with salt 0, the only salt
        // a user could guess): the per-segment salt keeps it from validating.
        var fake = ByteWriter()
        WALRecordFrame.append(.hardState, salt: 0, to: &fake) { HardState(term: Term(99)).encode(to: &$0) }
        let data = [UInt8](repeating: 7, count: 20) + fake.bytes + [UInt8](repeating: 7, count: 20)
        let fileSystem = SimulatedFileSystem()
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        try wal.save(makeWALEntries(1...3, term: 1))
        let path = wal.segmentPaths[0]
        let before = fileSystem.contents(of: path)!.count
        try wal.save([Entry(term: Term(1), index: LogIndex(4), data: data)])
        wal.close()
        let full = fileSystem.contents(of: path)!
        fileSystem.setContents(Array(full[0..<(full.count - 5)]), of: path)
        let recovered = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        #expect(recovered.lastIndex == LogIndex(3))
        #expect(recovered.recoveryReport.tornTail?.offset == Int64(before))
    }

    @Test("A leftover temporary segment from an interrupted creation is removed")
    func temporarySegment() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        try wal.save(makeWALEntries(1...3, term: 1))
        wal.close()
        fileSystem.setContents([1, 2, 3], of: "/wal/0000000000000002-0000000000000004.wal.tmp")
        let recovered = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        #expect(recovered.recoveryReport.removedTemporaryFiles == ["0000000000000002-0000000000000004.wal.tmp"])
        #expect(recovered.lastIndex == LogIndex(3))
        #expect(fileSystem.filePaths.count == 1)
    }
}
