import Testing
import KeyperRaft
import KeyperWire
@testable import KeyperStorage

@Suite("WAL corruption detection")
struct WALCorruptionTests {
    /// A log over several segments; returns it closed, with its entries and every hard state written.
    static func buildLog(_ fileSystem: SimulatedFileSystem, options: WALOptions) throws -> (entries: [Entry], hardStates: [HardState], paths: [String]) {
        let wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
        var entries: [Entry] = []
        var hardStates = [HardState()]
        for batch in 0..<12 {
            let first = UInt64(batch * 5 + 1)
            let batchEntries = makeWALEntries(first...(first + 4), term: UInt64(batch / 3 + 1), bytes: 30)
            let state = HardState(term: Term(UInt64(batch / 3 + 1)), vote: NodeID("n\(batch % 3)"), commit: LogIndex(first))
            try wal.save(batchEntries, hardState: state)
            entries += batchEntries
            hardStates.append(state)
        }
        let paths = wal.segmentPaths
        wal.close()
        return (entries, hardStates, paths)
    }

    @Test("Random byte flips are detected as a torn tail or corruption, never returned as data")
    func randomFlips() throws {
        let seed: UInt64 = 0xF11B_5EED
        var rng = WALTestGenerator(seed: seed)
        let options = WALOptions(segmentBytesMax: 1024)
        let original = SimulatedFileSystem()
        let (entries, hardStates, paths) = try Self.buildLog(original, options: options)
        #expect(paths.count >= 3)
        var corruptions = 0
        for iteration in 0..<300 {
            let fileSystem = original.copy()
            let path = paths.randomElement(using: &rng)!
            var bytes = fileSystem.contents(of: path)!
            let position = Int.random(in: 0..<bytes.count, using: &rng)
            bytes[position] ^= UInt8.random(in: 1...255, using: &rng)
            fileSystem.setContents(bytes, of: path)
            let context = "seed=\(seed) iteration=\(iteration) path=\(path) position=\(position)"
            do {
                let wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
                // Only a flip in the last segment's last record can be a "torn tail".
                #expect(path == paths.last!, "\(context)")
                let recovered = try wal.allWALEntries()
                #expect(recovered == Array(entries.prefix(recovered.count)), "\(context)")
                #expect(hardStates.contains(wal.hardState), "\(context)")
                #expect(wal.recoveryReport.tornTail != nil, "\(context)")
            } catch let error as WALError {
                guard case .corrupt(let corruptPath, let offset, _) = error else {
                    Issue.record("unexpected \(error) \(context)")
                    continue
                }
                #expect(corruptPath == path, "\(context)")
                #expect(offset <= Int64(position), "\(context)")
                #expect(error.description.contains(path) && error.description.contains("byte offset \(offset)"))
                corruptions += 1
            }
        }
        #expect(corruptions > 200, "most flips are before the tail: seed=\(seed)")
    }

    @Test("A bad record before the tail refuses to open, naming file and offset; truncateCorruptTail recovers the prefix")
    func corruptionInTheMiddle() throws {
        let fileSystem = SimulatedFileSystem()
        let wal = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        try wal.save(makeWALEntries(1...5, term: 1))
        let path = wal.segmentPaths[0]
        let damagedOffset = fileSystem.contents(of: path)!.count
        try wal.save(makeWALEntries(6...6, term: 1))
        try wal.save(makeWALEntries(7...10, term: 1))
        wal.close()
        var bytes = fileSystem.contents(of: path)!
        bytes[damagedOffset + 12] ^= 0x40  // inside entry 6's payload
        fileSystem.setContents(bytes, of: path)

        #expect(throws: WALError.corrupt(path: path, offset: Int64(damagedOffset), reason: "checksum mismatch")) {
            try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        }
        let repaired = try WriteAheadLog(directory: walTestDirectory, options: WALOptions(truncateCorruptTail: true), fileSystem: fileSystem)
        #expect(repaired.lastIndex == LogIndex(5))
        #expect(repaired.recoveryReport.corruption?.offset == Int64(damagedOffset))
        #expect(repaired.recoveryReport.description.contains("CORRUPTION TRUNCATED"))
        try repaired.save(makeWALEntries(6...6, term: 2))
        repaired.close()
        let reopened = try WriteAheadLog(directory: walTestDirectory, fileSystem: fileSystem)
        #expect(try reopened.allWALEntries() == makeWALEntries(1...5, term: 1) + makeWALEntries(6...6, term: 2))
    }

    @Test("Damage in an earlier segment is corruption even at its end; truncation drops the later segments")
    func corruptionInEarlierSegment() throws {
        let fileSystem = SimulatedFileSystem()
        let options = WALOptions(segmentBytesMax: 1024)
        let (entries, _, paths) = try Self.buildLog(fileSystem, options: options)
        var bytes = fileSystem.contents(of: paths[1])!
        bytes[bytes.count - 1] ^= 1  // last byte of the second segment
        fileSystem.setContents(bytes, of: paths[1])
        #expect(throws: WALError.self) { try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem) }
        var truncating = options
        truncating.truncateCorruptTail = true
        let wal = try WriteAheadLog(directory: walTestDirectory, options: truncating, fileSystem: fileSystem)
        #expect(wal.segmentCount == 2)
        #expect(wal.recoveryReport.removedSegments.count == paths.count - 2)
        #expect(try wal.allWALEntries() == Array(entries.prefix(Int(wal.lastIndex.rawValue))))
    }

    @Test("A missing middle segment is corruption")
    func missingSegment() throws {
        let fileSystem = SimulatedFileSystem()
        let options = WALOptions(segmentBytesMax: 1024)
        let (_, _, paths) = try Self.buildLog(fileSystem, options: options)
        try fileSystem.removeFile(paths[1])
        #expect(throws: WALError.self) { try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem) }
    }

    @Test("A damaged segment header is corruption, even in the last segment")
    func damagedHeader() throws {
        let fileSystem = SimulatedFileSystem()
        let options = WALOptions(segmentBytesMax: 1024)
        let (_, _, paths) = try Self.buildLog(fileSystem, options: options)
        var bytes = fileSystem.contents(of: paths.last!)!
        bytes[10] ^= 0xFF
        fileSystem.setContents(bytes, of: paths.last!)
        #expect(throws: WALError.corrupt(path: paths.last!, offset: 0, reason: "bad segment header")) {
            try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
        }
    }
}
