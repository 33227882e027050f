#if canImport(Glibc)
import Glibc
#endif
import KeyperRaft
import KeyperStorage

/// A directory under /tmp, created fresh and deleted with everything in it on deinit.
final class WALTestDirectory {
    let path: String

    init() {
        var template = Array("/tmp/keyper-wal-test-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(created != nil, "mkdtemp failed: errno \(errno)")
        path = String(cString: created!)
    }

    deinit { FileIO.removeTree(path) }

}

/// Reads a whole real file.
func readWALTestFile(_ path: String) -> [UInt8] {
    let file = try! GlibcFileSystem().openFile(path, create: false)
    defer { file.close() }
    return try! file.read(at: 0, count: Int(try! file.size()))
}

/// Entries `indexes` with `term`, each with `bytes` of data derived from index and term.
func makeWALEntries(_ indexes: ClosedRange<UInt64>, term: UInt64, bytes: Int = 40) -> [Entry] {
    indexes.map { index in
        let data = (0..<bytes).map { UInt8(truncatingIfNeeded: Int(index) &* 31 &+ Int(term) &* 7 &+ $0) }
        return Entry(term: Term(term), index: LogIndex(index), kind: index % 7 == 0 ? .configChange : .normal, data: data)
    }
}

extension WriteAheadLog {
    /// Every entry in the log.
    func allWALEntries() throws -> [Entry] {
        try entries(from: firstIndex, to: lastIndex.next())
    }
}

let walTestDirectory = "/wal"
