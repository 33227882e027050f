#if canImport(Glibc)
import Glibc
#endif
import KeyperRaft
import KeyperWire

/// The durable Raft log: append-only segment files in one directory, with the hard state and
/// the compaction point recorded in the same record stream.
///
/// ## Writing and group commit
/// ``append(_:hardState:)`` writes records to the operating system; ``sync()`` makes everything
/// appended so far durable with one `fdatasync`. A caller gathers work and pays one sync for all
/// of it: the server's single serial loop appends everything of one Raft `Ready` (entries and
/// hard state, possibly from many client proposals), calls `sync()` once, and only then sends
/// messages that depend on it and acknowledges clients. ``save(_:hardState:)`` does both.
///
/// The type is not thread-safe and not `Sendable`: exactly one serial context (an actor or the
/// server's loop) owns it; that ownership is what makes group commit free of locks.
///
/// ## Durability rules
/// - Nothing is acknowledged as durable until `sync()` returns.
/// - A segment is synced before the next one is created, and a new segment is created as
///   `*.wal.tmp`, synced, renamed and its directory synced: only the last segment can ever hold
///   a torn write, and a segment's header is always intact.
/// - A conflicting suffix is overwritten by appending: an entry record at index i discards
///   earlier entries >= i on replay (Raft §5.3). Nothing is truncated in place, so the old
///   suffix cannot come back after a crash, and hard states written after it are never lost.
/// - Compaction writes and syncs a snapshot record, then deletes whole segments that hold no
///   entry after the compaction point, oldest first. Each segment header restates the hard
///   state and compaction point, so replay can start at any remaining segment.
///
/// ## Failures
/// A failed append (`diskFull`, `io`) is rolled back: its bytes are truncated away and segments
/// it created are deleted, so the log is as before the call and appends can resume once space
/// returns. A failed `fdatasync` makes the log unusable (``WALError/failed(reason:)``): the
/// kernel may have dropped the dirty pages, so only reopening (re-reading the disk) is honest.
public final class WriteAheadLog {
    public let directory: String
    public let options: WALOptions
    /// What ``init(directory:options:fileSystem:)`` found and repaired; worth logging.
    public let recoveryReport: WALRecoveryReport

    /// The latest hard state appended (durable once synced).
    public internal(set) var hardState: HardState
    /// The compaction point: entries up to its index are gone, its term answers `term(at:)`.
    public internal(set) var snapshotMetadata: SnapshotMetadata

    let fileSystem: any WALFileSystem
    /// Held while open so that two logs never write the same directory.
    private let lock: any WALFile
    var segments: [Segment]
    var table: WALEntryTable
    var cache: WALEntryCache
    /// True when the last segment has writes not yet synced.
    var tailIsDirty = false
    /// Set by a failure that leaves the files in a state this object cannot vouch for.
    var failure: WALError?
    /// Reused encoding buffer, so steady-state appends do not allocate one per batch.
    var scratch = ByteWriter(capacity: 64 << 10)

    struct Segment {
        let sequence: UInt64
        let firstIndex: LogIndex
        let path: String
        let file: any WALFile
        /// Bytes written (= the offset of the next record).
        var size: Int64
        /// End of the segment header record: the segment holds records iff size > headerEnd.
        let headerEnd: Int64
        /// CRC seed of the segment's records, from its header.
        let salt: UInt32
    }

    /// Opens the log in `directory` (created if missing), recovering from any crash.
    ///
    /// A torn write at the end of the last segment is truncated and reported in
    /// ``recoveryReport``. A checksum or consistency failure anywhere else throws
    /// ``WALError/corrupt(path:offset:reason:)`` unless ``WALOptions/truncateCorruptTail`` is set.
    public init(
        directory: String,
        options: WALOptions = WALOptions(),
        fileSystem: any WALFileSystem = GlibcFileSystem()
    ) throws(WALError) {
        options.validate()
        let lock: any WALFile
        do throws(FileSystemError) {
            try fileSystem.createDirectory(directory)
            lock = try fileSystem.lockFile(directory + "/" + Self.lockFileName)
        } catch {
            if error.errno == EWOULDBLOCK { throw .locked(path: directory + "/" + Self.lockFileName) }
            throw WALError.from(error)
        }
        let recovered: WALRecovery.Recovered
        do throws(WALError) {
            recovered = try WALRecovery.recover(directory: directory, options: options, fileSystem: fileSystem)
        } catch {
            lock.close()
            throw error
        }
        self.lock = lock
        self.directory = directory
        self.options = options
        self.fileSystem = fileSystem
        self.recoveryReport = recovered.report
        self.segments = recovered.segments
        self.table = recovered.replay.table
        self.cache = recovered.replay.cache
        self.hardState = recovered.replay.hardState
        self.snapshotMetadata = recovered.replay.snapshot
    }

    deinit { close() }

    /// Closes the files. Unsynced appends may or may not reach the disk.
    public func close() {
        for segment in segments { segment.file.close() }
        segments.removeAll()
        lock.close()
        if failure == nil { failure = .failed(reason: "closed") }
    }

    /// Name of the lock file in the log directory.
    public static let lockFileName = "LOCK"

    // MARK: - Writing

    /// Appends `entries` and, if given and different from the current one, `hardState`.
    /// Not durable until ``sync()``.
    ///
    /// `entries` must be contiguous and start at most one past the last index. Starting at or
    /// before the last index replaces the suffix from there (a follower overwriting uncommitted
    /// entries, Raft §5.3). Entries at or below the compaction point are skipped, as etcd's
    /// `MemoryStorage` does: they are committed, so by Log Matching (§5.3) already in the snapshot.
    public func append(_ entries: [Entry], hardState newHardState: HardState? = nil) throws(WALError) {
        try checkUsable()
        var entries = entries
        if let first = entries.first, first.index <= snapshotMetadata.index {
            entries.removeFirst(min(entries.count, Int(snapshotMetadata.index.rawValue - first.index.rawValue + 1)))
        }
        if let first = entries.first {
            precondition(first.index > snapshotMetadata.index, "append at \(first.index) at or below the compaction point \(snapshotMetadata.index)")
            precondition(first.index <= lastIndex.next(), "append at \(first.index) leaves a gap after \(lastIndex)")
            for (offset, entry) in entries.enumerated() {
                precondition(entry.index == first.index + UInt64(offset), "entries not contiguous at \(entry.index)")
                let bytes = WALRecordFrame.headerBytes + entry.wireSize
                guard bytes - WALRecordFrame.headerBytes <= options.recordBytesMax else {
                    throw .entryTooLarge(index: entry.index, bytes: bytes, bytesMax: options.recordBytesMax)
                }
            }
        }
        let writesHardState = newHardState.map { $0 != hardState } ?? false
        guard !entries.isEmpty || writesHardState else { return }

        var records = entries.map(PendingRecord.entry)
        if writesHardState, let newHardState { records.append(.hardState(newHardState)) }
        let locations = try write(records)

        // Only now, with every byte written, does the in-memory state move.
        for (entry, location) in zip(entries, locations) {
            table.place(location, at: entry.index)
            cache.append(entry)
        }
        if writesHardState, let newHardState { hardState = newHardState }
    }

    /// Makes everything appended so far durable: one `fdatasync` of the last segment (earlier
    /// segments were synced when they filled). Does nothing if nothing is pending.
    public func sync() throws(WALError) {
        try checkUsable()
        guard tailIsDirty else { return }
        do {
            try segments[segments.count - 1].file.sync()
        } catch {
            // After a failed fdatasync the page cache may no longer hold what we wrote (Linux
            // marks the pages clean), so retrying could report success for lost data.
            failure = .failed(reason: "\(error)")
            throw WALError.from(error)
        }
        tailIsDirty = false
    }

    /// ``append(_:hardState:)`` then ``sync()``: one durable batch.
    public func save(_ entries: [Entry], hardState: HardState? = nil) throws(WALError) {
        try append(entries, hardState: hardState)
        try sync()
    }

    /// Whether appended records are waiting for ``sync()``.
    public var hasUnsyncedWrites: Bool { tailIsDirty }

    func checkUsable() throws(WALError) {
        if let failure { throw failure }
    }
}

// MARK: - Reading (the etcd `Storage` shape)

extension WriteAheadLog {
    /// Index of the first entry still in the log (the compaction point + 1).
    public var firstIndex: LogIndex { snapshotMetadata.index.next() }

    /// Index of the last entry, or the compaction point when the log is empty.
    public var lastIndex: LogIndex { table.lastIndex }

    /// What a restarting Raft node needs: the hard state and the configuration of the latest
    /// snapshot (later configuration changes are entries in the log).
    public func initialState() -> (hardState: HardState, configuration: Configuration) {
        (hardState, snapshotMetadata.configuration)
    }

    /// Term of the entry at `index`; the compaction point's term for `firstIndex - 1`.
    public func term(at index: LogIndex) throws(WALError) -> Term {
        if index == snapshotMetadata.index { return snapshotMetadata.term }
        guard index > snapshotMetadata.index else { throw .compacted(index: index, firstIndex: firstIndex) }
        guard index <= lastIndex else { throw .unavailable(index: index, lastIndex: lastIndex) }
        return table[index].term
    }

    /// Entries in `lowIndex..<highIndex`, stopping before the total encoded size would exceed
    /// `bytesMax`, but always at least one entry if the range is not empty (as etcd does, so a
    /// large entry cannot stall replication).
    public func entries(from lowIndex: LogIndex, to highIndex: LogIndex, bytesMax: Int = .max) throws(WALError) -> [Entry] {
        precondition(lowIndex <= highIndex, "lowIndex=\(lowIndex) highIndex=\(highIndex)")
        guard lowIndex > snapshotMetadata.index else { throw .compacted(index: lowIndex, firstIndex: firstIndex) }
        guard highIndex <= lastIndex.next() else { throw .unavailable(index: highIndex.previous(), lastIndex: lastIndex) }
        try checkUsable()
        var result: [Entry] = []
        var bytes = 0
        var index = lowIndex
        while index < highIndex {
            if let entry = cache.entry(at: index) {
                guard result.isEmpty || bytes + entry.wireSize <= bytesMax else { break }
                bytes += entry.wireSize
                result.append(entry)
                index = index.next()
                continue
            }
            let before = result.count
            try readRun(from: index, to: highIndex, bytesMax: bytesMax, bytes: &bytes, into: &result)
            if result.count == before { break }  // budget exhausted
            index = index + UInt64(result.count - before)
        }
        return result
    }

    /// Reads from disk the longest run starting at `lowIndex` that is not cached, lies in one
    /// segment and fits the byte budget, with a single `pread` spanning its records.
    private func readRun(from lowIndex: LogIndex, to highIndex: LogIndex, bytesMax: Int, bytes: inout Int, into result: inout [Entry]) throws(WALError) {
        let first = table[lowIndex]
        var last = first
        var runBytes = bytes + first.recordBytes - WALRecordFrame.headerBytes
        var highRun = lowIndex.next()
        while highRun < highIndex, cache.entry(at: highRun) == nil {
            let next = table[highRun]
            let nextBytes = next.recordBytes - WALRecordFrame.headerBytes
            guard next.segment == first.segment, runBytes + nextBytes <= bytesMax else { break }
            runBytes += nextBytes
            last = next
            highRun = highRun.next()
        }
        if !result.isEmpty && runBytes > bytesMax && highRun == lowIndex.next() { return }

        let segment = segments[Int(first.segment - segments[0].sequence)]
        let spanBytes = Int(last.offset - first.offset) + last.recordBytes
        let buffer: [UInt8]
        do {
            buffer = try segment.file.read(at: first.offset, count: spanBytes)
        } catch {
            throw WALError.from(error)
        }
        var index = lowIndex
        while index < highRun {
            let location = table[index]
            let offset = Int(location.offset - first.offset)
            // Check data right after it is read back: the disk may have changed under us.
            guard case .valid(.entry, let payload) = WALRecordFrame.parse(buffer, at: offset, salt: segment.salt, payloadBytesMax: options.recordBytesMax),
                  let entry = try? Entry(wireBytes: buffer, range: payload), entry.index == index else {
                throw .corrupt(path: segment.path, offset: location.offset, reason: "entry \(index.rawValue) no longer reads back")
            }
            bytes += entry.wireSize
            result.append(entry)
            index = index.next()
        }
    }
}
