import KeyperRaft
import KeyperWire

/// Opening a log: find the segments, replay them, repair a torn tail, refuse corruption.
///
/// Torn tail versus corruption: a write interrupted by a crash can only damage the end of the
/// last segment (segments are synced before the next is created). So damage in the last segment
/// after which no valid record follows (a partial record, zeros, garbage) is a torn tail: it is
/// truncated, losing only unsynced data. Damage followed by a valid record, damage in an
/// earlier segment, a bad segment header, or a record with a good checksum that breaks the
/// replay rules is corruption: the open fails naming file and offset, unless the operator
/// opted into ``WALOptions/truncateCorruptTail``.
///
/// One conservative corner: if the kernel persisted a later page of an unsynced batch but not
/// an earlier one, the tail looks like corruption and the node refuses to start, although
/// truncating would only lose unsynced data. Refusing is the safe side of that ambiguity.
enum WALRecovery {
    struct Recovered {
        var segments: [WriteAheadLog.Segment]
        var replay: WALReplay
        var report: WALRecoveryReport
    }

    private struct Damage: Error {
        var offset: Int64
        var reason: String
        var isTornTail: Bool
    }

    static func recover(directory: String, options: WALOptions, fileSystem: any WALFileSystem) throws(WALError) -> Recovered {
        var report = WALRecoveryReport()
        var replay = WALReplay(cacheBytesMax: options.cacheBytesMax)
        var segments: [WriteAheadLog.Segment] = []
        // Untyped: the body throws both WALError and FileSystemError, sorted out below.
        do {
            let names = try fileSystem.contentsOfDirectory(directory)
            for name in names.sorted() where name.hasSuffix(SegmentName.temporarySuffix) {
                try fileSystem.removeFile(directory + "/" + name)
                report.removedTemporaryFiles.append(name)
            }
            let found = names.compactMap { name in SegmentName.parse(name).map { (name, $0.sequence, $0.firstIndex) } }
                .sorted { $0.1 < $1.1 }
            for (previous, next) in zip(found, found.dropFirst()) where next.1 != previous.1 + 1 {
                throw WALError.corrupt(path: directory + "/" + next.0, offset: 0,
                                       reason: "segment \(previous.1 + 1) is missing before it")
            }
            if found.isEmpty {
                let header = SegmentHeader(sequence: 1, firstIndex: LogIndex(1), snapshot: SnapshotMetadata(), hardState: HardState())
                segments.append(try WriteAheadLog.createSegment(header, directory: directory, fileSystem: fileSystem))
                _ = replay.applyHeader(header)
                report.createdNew = true
            }
            for (position, (name, sequence, firstIndex)) in found.enumerated() {
                let path = directory + "/" + name
                let isLast = position == found.count - 1
                let file = try fileSystem.openFile(path, create: false)
                let bytes = try file.read(at: 0, count: Int(try file.size()))
                do throws(Damage) {
                    let (header, headerEnd, records) = try replaySegment(bytes, sequence: sequence, firstIndex: firstIndex,
                                                                  isLast: isLast, options: options, replay: &replay)
                    report.recordCount += records
                    segments.append(.init(sequence: sequence, firstIndex: firstIndex, path: path, file: file,
                                          size: Int64(bytes.count), headerEnd: headerEnd, salt: header.salt))
                } catch {
                    // Replay stopped at `error.offset`: everything before it is in `replay`.
                    let truncation = WALTruncation(path: path, offset: error.offset, bytesDiscarded: Int64(bytes.count) - error.offset,
                                                   reason: error.reason)
                    guard error.isTornTail || options.truncateCorruptTail else {
                        file.close()
                        throw WALError.corrupt(path: path, offset: error.offset, reason: error.reason)
                    }
                    // Later segments go first (newest first, then a directory sync) so that no
                    // segment survives whose predecessor was cut short.
                    for (laterName, _, _) in found[(position + 1)...].reversed() {
                        try fileSystem.removeFile(directory + "/" + laterName)
                        report.removedSegments.append(laterName)
                    }
                    if position + 1 < found.count { try fileSystem.syncDirectory(directory) }
                    if error.offset == 0 {
                        // No usable header: the whole segment goes.
                        file.close()
                        try fileSystem.removeFile(path)
                        try fileSystem.syncDirectory(directory)
                        report.removedSegments.append(name)
                    } else {
                        try file.truncate(to: error.offset)
                        try file.sync()
                        // Damage after offset 0 means the header parsed.
                        let (header, headerEnd) = parseHeader(bytes, options: options)!
                        segments.append(.init(sequence: sequence, firstIndex: firstIndex, path: path, file: file,
                                              size: error.offset, headerEnd: headerEnd, salt: header.salt))
                    }
                    if error.isTornTail { report.tornTail = truncation } else { report.corruption = truncation }
                    break
                }
            }
            // What replay read may still be only in the page cache (written by a process that
            // died before syncing). The node is about to act on it, so it must be durable
            // first: otherwise an OS crash after this restart could take back entries the node
            // already reported having. Earlier segments were synced before their successor
            // was created.
            if let last = segments.last { try last.file.sync() }
            if segments.isEmpty {
                // Only reachable when the operator truncated away a corrupt first segment.
                let sequence = found.first?.1 ?? 1
                let header = SegmentHeader(sequence: sequence, firstIndex: replay.lastIndex.next(), snapshot: replay.snapshot, hardState: replay.hardState)
                segments.append(try WriteAheadLog.createSegment(header, directory: directory, fileSystem: fileSystem))
                replay = WALReplay(cacheBytesMax: options.cacheBytesMax)
                _ = replay.applyHeader(header)
            }
        } catch let error as WALError {
            for segment in segments { segment.file.close() }
            throw error
        } catch let error as FileSystemError {
            for segment in segments { segment.file.close() }
            throw WALError.from(error)
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
        if let missing = replay.checkComplete() {
            for segment in segments { segment.file.close() }
            throw .corrupt(path: segments[0].path, offset: 0, reason: missing)
        }
        report.segmentCount = segments.count
        report.firstIndex = replay.snapshot.index.next()
        report.lastIndex = replay.lastIndex
        return Recovered(segments: segments, replay: replay, report: report)
    }

    /// Replays one segment into `replay`. Returns the end of its header record and the number
    /// of records; throws where replay had to stop.
    private static func replaySegment(
        _ bytes: [UInt8], sequence: UInt64, firstIndex: LogIndex, isLast: Bool, options: WALOptions, replay: inout WALReplay
    ) throws(Damage) -> (header: SegmentHeader, headerEnd: Int64, records: Int) {
        // The header was synced before the file got its name: damage to it is never a torn write.
        guard let (header, headerEnd) = parseHeader(bytes, options: options) else {
            throw Damage(offset: 0, reason: "bad segment header", isTornTail: false)
        }
        guard header.sequence == sequence, header.firstIndex == firstIndex else {
            throw Damage(offset: 0, reason: "segment header (\(header.sequence), \(header.firstIndex.rawValue)) does not match the file name", isTornTail: false)
        }
        if let reason = replay.applyHeader(header) { throw Damage(offset: 0, reason: reason, isTornTail: false) }

        var offset = Int(headerEnd)
        var records = 1
        while offset < bytes.count {
            switch WALRecordFrame.parse(bytes, at: offset, salt: header.salt, payloadBytesMax: options.recordBytesMax) {
            case .invalid(let reason):
                let torn = isLast && !WALRecordFrame.hasValidRecord(in: bytes, after: offset, salt: header.salt,
                                                                     payloadBytesMax: options.recordBytesMax)
                throw Damage(offset: Int64(offset), reason: torn ? "torn write: \(reason)" : reason, isTornTail: torn)
            case .valid(let type, let payload):
                if let reason = apply(type, bytes: bytes, payload: payload, sequence: sequence, recordOffset: offset, replay: &replay) {
                    throw Damage(offset: Int64(offset), reason: reason, isTornTail: false)
                }
                offset = payload.upperBound
                records += 1
            }
        }
        return (header, headerEnd, records)
    }

    /// Applies one checksummed record; returns why it is corrupt, if it is.
    private static func apply(
        _ type: WALRecordType, bytes: [UInt8], payload: Range<Int>, sequence: UInt64, recordOffset: Int, replay: inout WALReplay
    ) -> String? {
        do throws(WireError) {
            switch type {
            case .segmentHeader:
                return "segment header in the middle of a segment"
            case .entry:
                let entry = try Entry(wireBytes: bytes, range: payload)
                let location = WALEntryLocation(segment: sequence, offset: Int64(recordOffset),
                                             recordBytes: payload.upperBound - recordOffset, term: entry.term)
                return replay.applyEntry(entry, location: location)
            case .hardState:
                replay.applyHardState(try HardState(wireBytes: bytes, range: payload))
                return nil
            case .snapshot:
                return replay.applySnapshot(try SnapshotRecord(wireBytes: bytes, range: payload))
            }
        } catch {
            return "record with a valid checksum does not decode: \(error)"
        }
    }

    /// The segment header record at offset 0 (framed with salt 0) and where it ends.
    private static func parseHeader(_ bytes: [UInt8], options: WALOptions) -> (SegmentHeader, Int64)? {
        guard case .valid(.segmentHeader, let payload) = WALRecordFrame.parse(bytes, at: 0, salt: 0, payloadBytesMax: options.recordBytesMax),
              let header = try? SegmentHeader(wireBytes: bytes, range: payload) else { return nil }
        return (header, Int64(payload.upperBound))
    }
}
