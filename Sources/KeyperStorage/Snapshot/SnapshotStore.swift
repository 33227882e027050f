import KeyperRaft
import KeyperWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Durable snapshots of the state machine: consistent copies of the SQLite database, each
/// with a metadata file naming the Raft index, term and configuration it covers.
///
/// A snapshot is two files, `snap-<index>-<term>.db` and `.meta` (16 hex digits each). The
/// database is written to a temporary name, fsynced and renamed first; the metadata file,
/// which carries CRC32Cs of itself and of the database, is renamed last and is the commit
/// point; then the directory is fsynced. A crash at any step leaves either no snapshot or a
/// whole one; temporary files are removed on open. The newest valid snapshot wins; older
/// ones are pruned (two are kept).
public final class SnapshotStore: Sendable {
    public let directory: String
    /// Snapshots kept after pruning.
    public let keepCount = 2

    public init(directory: String) throws(FileIOError) {
        self.directory = directory
        try FileIO.makeDirectories(directory)
        for name in try FileIO.listDirectory(directory) where name.hasSuffix(".tmp") {
            unlink(directory + "/" + name)
        }
    }

    /// One snapshot on disk.
    public struct Snapshot: Sendable, Equatable {
        public var metadata: SnapshotMetadata
        public var databasePath: String
        public var databaseBytes: Int
    }

    static func baseName(_ index: LogIndex, _ term: Term) -> String {
        "snap-" + hex16(index.rawValue) + "-" + hex16(term.rawValue)
    }

    static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    // MARK: Reading

    /// Every valid snapshot, newest first. Invalid ones (a crash mid-write, a damaged file) are
    /// skipped: the log still holds what they would have covered, or an older one does.
    public func all() -> [Snapshot] {
        let names = (try? FileIO.listDirectory(directory)) ?? []
        return names.filter { $0.hasPrefix("snap-") && $0.hasSuffix(".meta") }
            .compactMap { try? load(metaName: $0) }
            .sorted { $0.metadata.index > $1.metadata.index }
    }

    public func latest() -> Snapshot? { all().first }

    public func snapshot(at index: LogIndex) -> Snapshot? {
        all().first { $0.metadata.index == index }
    }

    /// Why a snapshot's files do not check out.
    public struct SnapshotError: Error, CustomStringConvertible, Sendable {
        public let path: String
        public let reason: String
        public var description: String { "snapshot \(path): \(reason)" }
    }

    private func load(metaName: String) throws -> Snapshot {
        let metaPath = directory + "/" + metaName
        let bytes = try FileIO.readFile(metaPath)
        guard bytes.count > 4 else { throw SnapshotError(path: metaPath, reason: "truncated") }
        let body = Array(bytes[..<(bytes.count - 4)])
        let stored = UInt32(bytes[bytes.count - 4]) | UInt32(bytes[bytes.count - 3]) << 8
            | UInt32(bytes[bytes.count - 2]) << 16 | UInt32(bytes[bytes.count - 1]) << 24
        guard CRC32C.checksum(body) == stored else { throw SnapshotError(path: metaPath, reason: "metadata checksum mismatch") }
        var reader = ByteReader(body)
        let metadata = try SnapshotMetadata(from: &reader)
        let size = Int(try reader.readUInt64())
        let databaseCRC = try reader.readUInt32()
        try reader.expectEnd()
        let databasePath = directory + "/" + Self.baseName(metadata.index, metadata.term) + ".db"
        let database = try FileIO.readFile(databasePath)
        guard database.count == size, CRC32C.checksum(database) == databaseCRC else {
            throw SnapshotError(path: databasePath, reason: "database does not match its metadata")
        }
        return Snapshot(metadata: metadata, databasePath: databasePath, databaseBytes: size)
    }

    // MARK: Writing

    /// Takes a snapshot of `store`: a consistent copy (`VACUUM INTO`) made on a connection of
    /// its own, so neither reads nor writes wait for it. The copy knows which index it covers
    /// (its applied index); `metadataAt` supplies the term and configuration there.
    public func create(from store: KVStore,
                       metadataAt: (LogIndex) throws -> SnapshotMetadata) throws -> Snapshot {
        let temporary = directory + "/capture-\(UInt64.random(in: 0...UInt64.max)).db.tmp"
        defer { unlink(temporary) }
        let applied = try store.copy(to: temporary)
        let metadata = try metadataAt(LogIndex(applied))
        return try commit(databaseAt: temporary, metadata: metadata)
    }

    /// Makes the database file at `temporaryPath` (complete, any name ending in `.tmp`) the
    /// snapshot for `metadata`. Used for snapshots taken here and received from a leader.
    public func commit(databaseAt temporaryPath: String, metadata: SnapshotMetadata) throws -> Snapshot {
        let database = try FileIO.readFile(temporaryPath)
        try FileIO.syncFile(temporaryPath)
        let base = directory + "/" + Self.baseName(metadata.index, metadata.term)
        var writer = ByteWriter()
        metadata.encode(to: &writer)
        writer.writeUInt64(UInt64(database.count))
        writer.writeUInt32(CRC32C.checksum(database))
        var meta = writer.bytes
        let crc = CRC32C.checksum(meta)
        meta += [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)]
        guard rename(temporaryPath, base + ".db") == 0 else {
            throw FileIOError(operation: "rename", path: temporaryPath, errorNumber: errno)
        }
        try FileIO.writeFileAtomically(base + ".meta", meta)  // the commit point; syncs the directory
        prune()
        return Snapshot(metadata: metadata, databasePath: base + ".db", databaseBytes: database.count)
    }

    /// Removes all but the newest ``keepCount`` snapshots, and stray database files.
    public func prune() {
        let keep = all().prefix(keepCount)
        let kept = Set(keep.map { Self.baseName($0.metadata.index, $0.metadata.term) })
        for name in (try? FileIO.listDirectory(directory)) ?? [] where name.hasPrefix("snap-") {
            let base = String(name.prefix(while: { $0 != "." }))
            if !kept.contains(base) { unlink(directory + "/" + name) }
        }
    }

    // MARK: Receiving from a leader

    /// Where the chunks of an incoming snapshot are assembled.
    public func receivingPath(index: LogIndex, term: Term) -> String {
        directory + "/recv-" + Self.baseName(index, term) + ".db.tmp"
    }
}
