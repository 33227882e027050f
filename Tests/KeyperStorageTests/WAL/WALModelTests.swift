#if canImport(Glibc)
import Glibc
#endif
import Testing
import KeyperRaft
import KeyperWire
@testable import KeyperStorage

/// Random operations (appends with conflicts, hard states, syncs, compactions, snapshot
/// installs, reopens, crashes with and without torn writes) against a simple in-memory model.
/// After every step the log must equal the model; after a crash it must equal the state after
/// some record written since the last sync (never less than what was synced, never invented).
@Suite("WAL against a model")
struct WALModelTests {
    struct ModelState: Equatable {
        var snapshot = SnapshotMetadata()
        var entries: [Entry] = []
        var hardState = HardState()
        var lastIndex: LogIndex { snapshot.index + UInt64(entries.count) }

        mutating func apply(_ entry: Entry) {
            entries.removeLast(Int(lastIndex.rawValue + 1 - entry.index.rawValue))
            entries.append(entry)
        }
    }

    static func check(_ wal: WriteAheadLog, equals model: ModelState, _ context: String) throws {
        #expect(wal.snapshotMetadata == model.snapshot, "\(context)")
        #expect(wal.hardState == model.hardState, "\(context)")
        #expect(wal.lastIndex == model.lastIndex, "\(context)")
        #expect(try wal.allWALEntries() == model.entries, "\(context)")
        #expect(try wal.term(at: model.snapshot.index) == model.snapshot.term, "\(context)")
    }

    static func state(of wal: WriteAheadLog) throws -> ModelState {
        ModelState(snapshot: wal.snapshotMetadata, entries: try wal.allWALEntries(), hardState: wal.hardState)
    }

    /// 16 seeds by default; `KEYPER_WAL_SEEDS=500 swift test --filter WALModelTests` runs more,
    /// `KEYPER_SEED=n` replays one.
    static let seeds: [UInt64] = {
        if let one = getenv("KEYPER_SEED").flatMap({ UInt64(String(cString: $0)) }) { return [one] }
        let count = getenv("KEYPER_WAL_SEEDS").flatMap { UInt64(String(cString: $0)) } ?? 16
        return Array(1...max(count, 1))
    }()

    @Test("Random operations with crashes and full disks keep the log equal to the model", arguments: seeds)
    func randomOperations(seed: UInt64) throws {
        var rng = WALTestGenerator(seed: seed)
        let options = WALOptions(segmentBytesMax: Int.random(in: 300...2000, using: &rng), cacheBytesMax: Int.random(in: 0...3000, using: &rng))
        let fileSystem = SimulatedFileSystem()
        var wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
        var model = ModelState()
        var durable = model
        // States after each record written since the last sync: what a crash may leave.
        var pending: [ModelState] = []
        var term: UInt64 = 1

        for step in 0..<400 {
            let context = "seed=\(seed) step=\(step)"
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<45:  // append, sometimes overwriting a suffix
                let low = max(model.snapshot.index.rawValue + 1, model.lastIndex.rawValue >= 4 ? model.lastIndex.rawValue - 4 : 1)
                let first = UInt64.random(in: low...(model.lastIndex.rawValue + 1), using: &rng)
                if first <= model.lastIndex.rawValue { term += 1 }
                let count = UInt64.random(in: 1...6, using: &rng)
                let entries = makeWALEntries(first...(first + count - 1), term: term, bytes: Int.random(in: 0...120, using: &rng))
                let hardState = Bool.random(using: &rng)
                    ? HardState(term: Term(term), vote: Bool.random(using: &rng) ? NodeID("n\(step % 5)") : nil, commit: model.hardState.commit + 1)
                    : nil
                if Int.random(in: 0..<10, using: &rng) == 0 {
                    // A full disk: the batch fails whole and the log is unchanged.
                    fileSystem.capacityBytes = fileSystem.usedBytes + Int.random(in: 0...400, using: &rng)
                    defer { fileSystem.capacityBytes = nil }
                    do {
                        try wal.append(entries, hardState: hardState)
                    } catch WALError.diskFull {
                        try Self.check(wal, equals: model, context + " after diskFull")
                        break
                    }
                } else {
                    try wal.append(entries, hardState: hardState)
                }
                for entry in entries {
                    model.apply(entry)
                    pending.append(model)
                }
                if let hardState, hardState != model.hardState {
                    model.hardState = hardState
                    pending.append(model)
                }
            case 45..<65:
                try wal.sync()
                durable = model
                pending = []
            case 65..<72 where model.lastIndex > model.snapshot.index:  // compaction (syncs)
                let index = LogIndex.randomWALIndex(in: (model.snapshot.index + 1)...model.lastIndex, using: &rng)
                let entry = model.entries[Int(index.rawValue - model.snapshot.index.rawValue - 1)]
                let snapshot = SnapshotMetadata(index: index, term: entry.term, configuration: Configuration(voters: [NodeID("n\(step)")]))
                try wal.compact(through: snapshot)
                model.entries.removeFirst(Int(index.rawValue - model.snapshot.index.rawValue))
                model.snapshot = snapshot
                durable = model
                pending = []
            case 72..<75:  // install a snapshot from a leader (syncs)
                let index = model.lastIndex + UInt64.random(in: 0...3, using: &rng) + 1
                term += 1
                let snapshot = SnapshotMetadata(index: index, term: Term(term))
                try wal.applySnapshot(snapshot)
                model.entries = []
                model.snapshot = snapshot
                durable = model
                pending = []
            case 75..<85:  // clean restart: nothing is lost
                wal.close()
                wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
            case 85..<100:  // crash
                wal.close()
                let torn = Bool.random(using: &rng)
                fileSystem.crash(keepingUnsynced: torn ? .randomPrefix(seed: rng.next()) : .nothing)
                wal = try WriteAheadLog(directory: walTestDirectory, options: options, fileSystem: fileSystem)
                let recovered = try Self.state(of: wal)
                #expect(recovered == durable || pending.contains(recovered),
                        "\(context): recovered lastIndex=\(recovered.lastIndex) durable=\(durable.lastIndex) pending=\(pending.map(\.lastIndex)) torn=\(torn)")
                model = recovered
                durable = recovered
                pending = []
            default:
                break
            }
            try Self.check(wal, equals: model, context)
        }
    }
}

extension LogIndex {
    static func randomWALIndex(in range: ClosedRange<LogIndex>, using rng: inout some RandomNumberGenerator) -> LogIndex {
        LogIndex(UInt64.random(in: range.lowerBound.rawValue...range.upperBound.rawValue, using: &rng))
    }
}
