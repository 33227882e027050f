import KeyperRaft
import KeyperWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Durable snapshots of the state machine: consistent copies of the state machine (``KVStore/copy(to:)``), each
/// with a metadata file naming the Raft index, term and configuration it covers.
///
/// A snapshot is two files, `snap-<index>-<term>.db` and `.meta` (16 hex digits each). The
/// database is written to a temporary name, fsynced and renamed first; the metadata file,
/// which carries CRC32Cs of itself and of the database, is renamed last and is the commit
/// point; then the directory is fsynced. A crash at any step leaves either no snapshot or a
/// whole one; temporary files are removed on open. The newest valid snapshot wins; older
/// ones are pruned (two are kept).
///
/// A database can be gigabytes, and lookups happen on the Raft loop (for every snapshot sent,
/// received or installed), so the store keeps an index in memory: built at open from the
/// small metadata files, each database checked against its CRC once there, and kept current by
/// ``commit(databaseAt:metadata:)`` and ``prune()``. No lookup reads a database file; a
/// database damaged after open is noticed at the next open. Thread-safe: the loop looks up
/// while blocking-I/O threads commit.
public final class SnapshotStore: Sendable {
    public let directory: String
    /// Snapshots kept after pruning.
    public let keepCount = 2
    /// Every valid snapshot, newest first.
    private let index: Mutex<[Snapshot]>
    /// Held by commit and prune across their file operations (never by a lookup): a prune must
    /// not take a database renamed into place whose metadata is not written yet for a stray.
    private let writing = Mutex(())

    public init(directory: String) throws(FileIOError) {
        self.directory = directory
        try FileIO.makeDirectories(directory)
        let names = try FileIO.listDirectory(directory)
        for name in names where name.hasSuffix(".tmp") {
            unlink(directory + "/" + name)
        }
        index = Mutex(names.filter { $0.hasPrefix("snap-") && $0.hasSuffix(".meta") }
            .compactMap { try? Self.load(metaPath: directory + "/" + $0, directory: directory) }
            .sorted { $0.metadata.index > $1.metadata.index })
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

    /// Every valid snapshot, newest first. Invalid ones (a crash mid-write, a damaged file) were
    /// left out at open: the log still holds what they would have covered, or an older one does.
    public func all() -> [Snapshot] {
        index.withLock { $0 }
    }

    public func latest() -> Snapshot? {
        index.withLock { $0.first }
    }

    public func snapshot(at index: LogIndex) -> Snapshot? {
        self.index.withLock { snapshots in snapshots.first { $0.metadata.index == index } }
    }

    /// Why a snapshot's files do not check out.
    public struct SnapshotError: Error, CustomStringConvertible, Sendable {
        public let path: String
        public let reason: String
        public var description: String { "snapshot \(path): \(reason)" }
    }

    /// Reads and checks one snapshot: the metadata's own CRC, then the database's size and CRC
    /// (streamed, so memory stays bounded whatever the size).
    private static func load(metaPath: String, directory: String) throws -> Snapshot {
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
        let databasePath = directory + "/" + baseName(metadata.index, metadata.term) + ".db"
        let database = try checksum(ofFileAt: databasePath)
        guard database.bytes == size, database.crc == databaseCRC else {
            throw SnapshotError(path: databasePath, reason: "database does not match its metadata")
        }
        return Snapshot(metadata: metadata, databasePath: databasePath, databaseBytes: size)
    }

    /// The size and CRC32C of a file, read in bounded chunks.
    static func checksum(ofFileAt path: String) throws(FileIOError) -> (bytes: Int, crc: UInt32) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileIOError(operation: "open", path: path, errorNumber: errno) }
        defer { close(fd) }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: checksumChunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        var crc: UInt32 = 0
        var offset = 0
        while true {
            let count = try FileIO.readFully(fd, into: buffer, at: offset, path: path)
            crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: buffer[..<count]), continuing: crc)
            offset += count
            if count < buffer.count { return (offset, crc) }
        }
    }

    static let checksumChunkBytes = 1 << 20

    /// Opens a snapshot's database for chunked reads (sending it to a follower).
    public func reader(for snapshot: Snapshot) throws(FileIOError) -> SnapshotReader {
        try SnapshotReader(snapshot)
    }

    // MARK: Writing

    /// Takes a snapshot of `store`: a consistent copy (``KVStore/copy(to:)``: its segments'
    /// records up to one moment), made without holding up reads or writes. The copy knows which index it covers
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
    /// File-sized work (the CRC and the fsync): call it on a blocking-I/O thread.
    public func commit(databaseAt temporaryPath: String, metadata: SnapshotMetadata) throws -> Snapshot {
        let database = try Self.checksum(ofFileAt: temporaryPath)
        try FileIO.syncFile(temporaryPath)
        let base = directory + "/" + Self.baseName(metadata.index, metadata.term)
        var writer = ByteWriter()
        metadata.encode(to: &writer)
        writer.writeUInt64(UInt64(database.bytes))
        writer.writeUInt32(database.crc)
        var meta = writer.bytes
        let crc = CRC32C.checksum(meta)
        meta += [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)]
        let snapshot = Snapshot(metadata: metadata, databasePath: base + ".db", databaseBytes: database.bytes)
        try writing.withLock { _ throws in
            guard rename(temporaryPath, base + ".db") == 0 else {
                throw FileIOError(operation: "rename", path: temporaryPath, errorNumber: errno)
            }
            try FileIO.writeFileAtomically(base + ".meta", meta)  // the commit point; syncs the directory
            index.withLock { snapshots in
                snapshots.removeAll { $0.metadata.index == metadata.index }
                snapshots.append(snapshot)
                snapshots.sort { $0.metadata.index > $1.metadata.index }
            }
            pruneLocked()
        }
        return snapshot
    }

    /// Removes all but the newest ``keepCount`` snapshots, and stray database files.
    public func prune() {
        writing.withLock { _ in pruneLocked() }
    }

    /// Removes every snapshot older than `index` (the Raft log's start: no follower can use
    /// one of those, and no restart needs one).
    public func prune(before index: LogIndex) {
        writing.withLock { _ in pruneLocked(before: index) }
    }

    /// ``prune()`` with `writing` held; also drops snapshots older than `oldest`.
    private func pruneLocked(before oldest: LogIndex = .zero) {
        let kept = index.withLock { snapshots in
            snapshots = Array(snapshots.prefix(keepCount).filter { $0.metadata.index >= oldest })
            return Set(snapshots.map { Self.baseName($0.metadata.index, $0.metadata.term) })
        }
        for name in (try? FileIO.listDirectory(directory)) ?? [] where name.hasPrefix("snap-") {
            let base = String(name.prefix(while: { $0 != "." }))
            if !kept.contains(base) { unlink(directory + "/" + name) }
        }
    }

    // MARK: Installing

    /// `snapshot`'s database under a temporary name of its own, made ahead of an install so
    /// that the install itself is a rename (``KVStore/prepareReplacement(moving:)``): a hard
    /// link to the same (already durable) file, which the state machine only reads once it is
    /// a segment of its own; or, where the file system has no hard links, an fsynced copy
    /// (file-sized work: call it on a blocking-I/O thread). The caller moves it into place or
    /// removes it; one left by a crash goes on open.
    public func prepareInstall(of snapshot: Snapshot) throws(FileIOError) -> String {
        let path = directory + "/install-" + Self.baseName(snapshot.metadata.index, snapshot.metadata.term)
            + "-\(UInt64.random(in: 0...UInt64.max)).db.tmp"
        if link(snapshot.databasePath, path) == 0 { return path }
        do throws(FileIOError) {
            try FileIO.copyFile(from: snapshot.databasePath, to: path)
        } catch {
            unlink(path)
            throw error
        }
        return path
    }

    // MARK: Receiving from a leader

    /// Where the chunks of an incoming snapshot are assembled: a name of its own for every
    /// transfer, so a transfer started again never writes into a file being committed.
    public func receivingPath(index: LogIndex, term: Term) -> String {
        directory + "/recv-" + Self.baseName(index, term) + "-\(UInt64.random(in: 0...UInt64.max)).db.tmp"
    }
}

/// A snapshot's database opened for positioned reads, as a leader sends it in chunks from a
/// blocking-I/O thread. Reads may run concurrently. The descriptor stays open until the last
/// reference goes, so a snapshot pruned meanwhile still reads whole (its file lives on).
public final class SnapshotReader: Sendable {
    public let snapshot: SnapshotStore.Snapshot
    private let descriptor: Int32

    init(_ snapshot: SnapshotStore.Snapshot) throws(FileIOError) {
        self.snapshot = snapshot
        descriptor = open(snapshot.databasePath, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileIOError(operation: "open", path: snapshot.databasePath, errorNumber: errno) }
    }

    deinit { close(descriptor) }

    /// The `count` bytes at `offset`; the range must lie within the database.
    public func read(at offset: Int, count: Int) throws -> [UInt8] {
        precondition(offset >= 0 && count >= 0 && offset + count <= snapshot.databaseBytes,
                     "read of \(count) at \(offset) outside \(snapshot.databaseBytes) bytes")
        var read = 0
        let bytes = try [UInt8](unsafeUninitializedCapacity: count) { (buffer, initialized) throws(FileIOError) in
            read = try FileIO.readFully(descriptor, into: UnsafeMutableRawBufferPointer(buffer), at: offset,
                                        path: snapshot.databasePath)
            initialized = read
        }
        guard read == count else {
            throw SnapshotStore.SnapshotError(path: snapshot.databasePath, reason: "shorter than its metadata says")
        }
        return bytes
    }
}
