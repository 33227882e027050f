import KeyperWire

#if canImport(Glibc)
import Glibc
#endif

/// Reads the SQLite state machine of an earlier Keyper (`state.db`: tables `kv`, `meta` and
/// `members`) into a segment file: a data directory from before the log-structured store is
/// carried over at its first open, and a snapshot from such a leader can still be installed.
enum LegacyStateImport {
    static let sqliteMagic: [UInt8] = Array("SQLite format 3\u{0}".utf8)

    /// Whether the file at `path` starts as a SQLite database does.
    static func isSQLiteDatabase(_ path: String) throws -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileIOError(operation: "open", path: path, errorNumber: errno) }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: sqliteMagic.count)
        let count = try head.withUnsafeMutableBytes { (buffer) throws(FileIOError) in try FileIO.readFully(fd, into: buffer, at: 0, path: path) }
        return count == sqliteMagic.count && head == sqliteMagic
    }

    /// Writes a base checkpoint (applied index, members) and every key of the database at
    /// `databasePath` into a new, fsynced segment file at `segmentPath`. The database knew no
    /// revisions: the keys, in order, are given revisions 1, 2, ... (created and last changed
    /// there, version 1), and the store revision is the key count.
    static func convert(databaseAt databasePath: String, toSegmentAt segmentPath: String) throws {
        let db = try SQLiteConnection(path: databasePath)
        defer { db.close() }
        let applied = UInt64(try db.scalarInt("SELECT value FROM meta WHERE name = 'applied_index'") ?? 0)
        var members: [MemberRecord] = []
        let memberRows = try db.prepare("SELECT id, raft_addr, http_addr, promote FROM members ORDER BY id")
        defer { memberRows.finalize() }
        while try memberRows.step() {
            members.append(MemberRecord(id: memberRows.columnText(0) ?? "", raftAddress: memberRows.columnText(1) ?? "",
                                        httpAddress: memberRows.columnText(2) ?? "", promote: memberRows.columnInt(3) != 0))
        }
        let output = open(segmentPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw FileIOError(operation: "open", path: segmentPath, errorNumber: errno) }
        defer { close(output) }
        do {
            try FileIO.writeAll(output, StateLog.segmentHeader(base: true, applied: applied, durable: applied, revision: 0, members: members),
                                path: segmentPath)
            let rows = try db.prepare("SELECT key, value FROM kv ORDER BY key")
            defer { rows.finalize() }
            var batch: [KVOperation] = []
            var revisions: [KeyRevisions] = []
            var batchBytes = 0
            var revision: UInt64 = 0
            func flush() throws(FileIOError) {
                guard !batch.isEmpty else { return }
                var record = ByteWriter(capacity: batchBytes + 64)
                StateLog.appendRecord(to: &record) {
                    StateLog.encodeBatch(batch, revisions: revisions, appliedIndex: 0, revision: revision, into: &$0) { _, _ in }
                }
                try FileIO.writeAll(output, record.bytes, path: segmentPath)
                (batch, revisions, batchBytes) = ([], [], 0)
            }
            while try rows.step() {
                let key = rows.columnBytes(0)
                let value = rows.columnBytes(1)
                revision += 1
                batch.append(.put(key: key, value: value))
                revisions.append(KeyRevisions(create: revision, mod: revision, version: 1))
                batchBytes += key.count + value.count + StateLog.operationOverhead
                if batchBytes >= 1 << 20 { try flush() }
            }
            try flush()
            guard fsync(output) == 0 else { throw FileIOError(operation: "fsync", path: segmentPath, errorNumber: errno) }
        } catch {
            unlink(segmentPath)
            throw error
        }
    }
}
