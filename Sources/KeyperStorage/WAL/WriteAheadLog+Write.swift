import KeyperRaft
import KeyperWire

/// A record about to be written.
enum PendingRecord {
    case entry(Entry)
    case hardState(HardState)
    case snapshot(SnapshotRecord)
}

/// The log state at a point of the record stream being written: what a segment header
/// created at that point must restate.
private struct StreamState {
    var lastIndex: LogIndex
    var snapshot: SnapshotMetadata
    var hardState: HardState

    mutating func advance(past record: PendingRecord) {
        switch record {
        case .entry(let entry): lastIndex = entry.index
        case .hardState(let state): hardState = state
        case .snapshot(let snapshot):
            if snapshot.mode == .discardLog { lastIndex = snapshot.metadata.index }
            self.snapshot = snapshot.metadata
        }
    }
}

extension WriteAheadLog {
    /// Writes `records` in order, starting new segments as they fill, and returns the location
    /// of each entry record. All or nothing: on failure the bytes written and the segments
    /// created are removed again, and the error is thrown. The in-memory state is untouched.
    func write(_ records: [PendingRecord]) throws(WALError) -> [WALEntryLocation] {
        try checkUsable()
        let segmentCountBefore = segments.count
        let tailSizeBefore = segments[segments.count - 1].size
        var stream = StreamState(lastIndex: lastIndex, snapshot: snapshotMetadata, hardState: hardState)
        var locations: [WALEntryLocation] = []
        locations.reserveCapacity(records.count)
        scratch.removeAll()
        do throws(FileSystemError) {
            for record in records {
                let recordStart = scratch.count
                let tail = segments[segments.count - 1]
                encode(record, salt: tail.salt, into: &scratch)
                let recordBytes = scratch.count - recordStart
                let tailEnd = tail.size + Int64(recordStart)
                if tailEnd + Int64(recordBytes) > Int64(options.segmentBytesMax) && tailEnd > tail.headerEnd {
                    try flush(upTo: recordStart)
                    try startSegment(at: stream)
                    // Re-frame the record with the new segment's salt.
                    scratch.removeAll()
                    encode(record, salt: segments[segments.count - 1].salt, into: &scratch)
                }
                if case .entry(let entry) = record {
                    let tail = segments[segments.count - 1]
                    let offset = tail.size + Int64(scratch.count - recordBytes)
                    locations.append(WALEntryLocation(segment: tail.sequence, offset: offset, recordBytes: recordBytes, term: entry.term))
                }
                stream.advance(past: record)
            }
            try flush(upTo: scratch.count)
        } catch {
            rollBack(segmentCount: segmentCountBefore, tailSize: tailSizeBefore)
            throw WALError.from(error)
        }
        return locations
    }

    private func encode(_ record: PendingRecord, salt: UInt32, into writer: inout ByteWriter) {
        switch record {
        case .entry(let entry):
            WALRecordFrame.append(.entry, salt: salt, to: &writer) { entry.encode(to: &$0) }
        case .hardState(let state):
            WALRecordFrame.append(.hardState, salt: salt, to: &writer) { state.encode(to: &$0) }
        case .snapshot(let snapshot):
            WALRecordFrame.append(.snapshot, salt: salt, to: &writer) { snapshot.encode(to: &$0) }
        }
    }

    /// Writes `scratch[0..<count]` at the end of the last segment and drops it from `scratch`.
    private func flush(upTo count: Int) throws(FileSystemError) {
        guard count > 0 else { return }
        let last = segments.count - 1
        let bytes = count == scratch.count ? scratch.bytes : Array(scratch.bytes[0..<count])
        tailIsDirty = true
        try segments[last].file.write(bytes, at: segments[last].size)
        segments[last].size += Int64(count)
        scratch.removeFirst(count)
    }

    /// Syncs the last segment (so only the newest segment can ever be torn) and starts the next.
    private func startSegment(at stream: StreamState) throws(FileSystemError) {
        let tail = segments[segments.count - 1]
        try tail.file.sync()
        tailIsDirty = false
        let header = SegmentHeader(sequence: tail.sequence + 1, firstIndex: stream.lastIndex.next(),
                                   snapshot: stream.snapshot, hardState: stream.hardState)
        segments.append(try Self.createSegment(header, directory: directory, fileSystem: fileSystem))
    }

    /// Creates a segment holding only `header`: written to a temporary name, synced, renamed
    /// into place and the directory synced, so a segment file never exists without its header.
    static func createSegment(_ header: SegmentHeader, directory: String, fileSystem: any WALFileSystem) throws(FileSystemError) -> Segment {
        let path = directory + "/" + SegmentName.format(sequence: header.sequence, firstIndex: header.firstIndex)
        let temporaryPath = path + ".tmp"
        var writer = ByteWriter(capacity: 256)
        WALRecordFrame.append(.segmentHeader, salt: 0, to: &writer) { header.encode(to: &$0) }
        let file = try fileSystem.openFile(temporaryPath, create: true)
        var renamed = false
        do throws(FileSystemError) {
            try file.truncate(to: 0)
            try file.write(writer.bytes, at: 0)
            try file.sync()
            try fileSystem.rename(temporaryPath, to: path)
            renamed = true
            try fileSystem.syncDirectory(directory)
        } catch {
            file.close()
            try? fileSystem.removeFile(renamed ? path : temporaryPath)
            throw error
        }
        let size = Int64(writer.count)
        return Segment(sequence: header.sequence, firstIndex: header.firstIndex, path: path, file: file, size: size, headerEnd: size,
                       salt: header.salt)
    }

    /// Undoes a failed ``write(_:)``: deletes the segments it created (newest first, then the
    /// directory is synced, so a later crash cannot resurrect a segment whose predecessor was
    /// truncated) and truncates the old last segment back to its size before the call.
    private func rollBack(segmentCount: Int, tailSize: Int64) {
        scratch.removeAll()
        do throws(FileSystemError) {
            let removedSegments = segments.count > segmentCount
            while segments.count > segmentCount {
                let segment = segments.removeLast()
                segment.file.close()
                try fileSystem.removeFile(segment.path)
            }
            if removedSegments { try fileSystem.syncDirectory(directory) }
            let last = segments.count - 1
            try segments[last].file.truncate(to: tailSize)
            segments[last].size = tailSize
            // Part of the failed batch may already be on disk (a segment roll syncs the old
            // tail, and the kernel may write back at any time): make the truncation durable so
            // the failed batch cannot reappear after a crash. This also syncs appends made
            // before the failed one, which is harmless. Costs one fdatasync, on failure only.
            try segments[last].file.sync()
            tailIsDirty = false
        } catch {
            failure = .failed(reason: "rolling back a failed append: \(error)")
        }
    }
}

// MARK: - Compaction and snapshots

extension WriteAheadLog {
    /// Discards entries up to `metadata.index` (which the state machine has captured in a
    /// snapshot), durably, and deletes segments that hold no later entry.
    ///
    /// Precondition: `metadata.index <= lastIndex` and `metadata.term` is the term of the
    /// entry there. A compaction point at or before the current one is ignored.
    public func compact(through metadata: SnapshotMetadata) throws(WALError) {
        try checkUsable()
        guard metadata.index > snapshotMetadata.index else { return }
        precondition(metadata.index <= lastIndex, "compact through \(metadata.index) past lastIndex \(lastIndex)")
        precondition(table[metadata.index].term == metadata.term,
                     "compact through \(metadata.index) with term \(metadata.term), log has \(table[metadata.index].term)")
        _ = try write([.snapshot(SnapshotRecord(mode: .retainLog, metadata: metadata))])
        try sync()
        table.dropThrough(metadata.index)
        cache.dropThrough(metadata.index)
        snapshotMetadata = metadata
        try removeObsoleteSegments()
    }

    /// Records that a snapshot received from the leader was installed (InstallSnapshot, Raft §7).
    /// If the log holds the snapshot's last entry (same index and term), entries after it are
    /// kept, as in ``compact(through:)``; otherwise the whole log is discarded and continues at
    /// `metadata.index + 1`. Durable when this returns. A snapshot not newer than the current
    /// compaction point is ignored.
    public func applySnapshot(_ metadata: SnapshotMetadata) throws(WALError) {
        try checkUsable()
        guard metadata.index > snapshotMetadata.index else { return }
        if metadata.index <= lastIndex && table[metadata.index].term == metadata.term {
            try compact(through: metadata)
            return
        }
        _ = try write([.snapshot(SnapshotRecord(mode: .discardLog, metadata: metadata))])
        try sync()
        table.reset(after: metadata.index)
        cache.removeAll()
        snapshotMetadata = metadata
        try removeObsoleteSegments()
    }

    /// Deletes, oldest first, every segment before the one holding the first live entry (or
    /// before the last segment, if no entry is live). Live entries sit in index order in the
    /// record stream, so all later entries are in kept segments; a crash part-way leaves a
    /// prefix of them, which replay handles.
    private func removeObsoleteSegments() throws(WALError) {
        let keepFrom = table.first.map { Int($0.segment - segments[0].sequence) } ?? segments.count - 1
        guard keepFrom > 0 else { return }
        var removed = 0
        defer { segments.removeFirst(removed) }
        do throws(FileSystemError) {
            for segment in segments[0..<keepFrom] {
                segment.file.close()
                try fileSystem.removeFile(segment.path)
                removed += 1
            }
            try fileSystem.syncDirectory(directory)
        } catch {
            // The log stays consistent with any prefix of the segments removed.
            throw WALError.from(error)
        }
    }

    /// Number of segment files (for tests and metrics).
    public var segmentCount: Int { segments.count }
    /// Paths of the segment files, oldest first.
    public var segmentPaths: [String] { segments.map(\.path) }
}
