#if canImport(Glibc)
import Glibc
#endif
import KeyperRaft
import KeyperStorage

/// WAL append throughput with one fdatasync per batch.
///
///     swift run -c release wal-bench [directory]     (default: ./.bench)
///
/// The directory must be on the disk under test (not tmpfs). Each run uses a fresh log.
@main
struct WALBench {
    static func main() throws {
        let arguments = CommandLine.arguments
        let root = arguments.count > 1 ? arguments[1] : ".bench"
        mkdir(root, 0o755)
        let entryBytes = 256
        print("WAL benchmark: \(entryBytes)-byte entries, one fdatasync per batch, directory \(root)")
        print(pad("batch", 7) + pad("entries", 10) + pad("seconds", 9) + pad("entries/s", 12) + pad("fsyncs/s", 10) + pad("MB/s", 8))
        for (batchSize, batchCount) in [(1, 5000), (16, 2000), (256, 1000)] {
            try run(root: root, batchSize: batchSize, batchCount: batchCount, entryBytes: entryBytes, sync: true)
        }
        print("without fdatasync (CPU + write(2) cost only):")
        try run(root: root, batchSize: 256, batchCount: 2000, entryBytes: entryBytes, sync: false)
    }

    static func run(root: String, batchSize: Int, batchCount: Int, entryBytes: Int, sync: Bool) throws {
        let directory = root + "/wal-\(batchSize)-\(sync ? "sync" : "nosync")"
        FileIO.removeTree(directory)
        let wal = try WriteAheadLog(directory: directory)
        defer { FileIO.removeTree(directory) }
        let payload = [UInt8](repeating: 0xAB, count: entryBytes)
        var batch: [Entry] = []
        batch.reserveCapacity(batchSize)
        var index: UInt64 = 1
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<batchCount {
            batch.removeAll(keepingCapacity: true)
            for _ in 0..<batchSize {
                batch.append(Entry(term: Term(1), index: LogIndex(index), data: payload))
                index += 1
            }
            try wal.append(batch, hardState: HardState(term: Term(1), vote: NodeID("n1"), commit: LogIndex(index - 1)))
            if sync { try wal.sync() }
        }
        try wal.sync()
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let entries = Double(batchSize * batchCount)
        let syncs = sync ? Double(batchCount) / seconds : 0
        let megabytes = entries * Double(entryBytes) / seconds / 1e6
        print(pad("\(batchSize)", 7) + pad("\(Int(entries))", 10) + pad(format(seconds, 2), 9)
              + pad("\(Int(entries / seconds))", 12) + pad(sync ? "\(Int(syncs))" : "-", 10) + pad(format(megabytes, 1), 8))
        wal.close()
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    static func format(_ value: Double, _ decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        return "\(rounded)"
    }
}
