import KeyperRaft

/// Errors of the write-ahead log.
///
/// Read errors (`compacted`, `unavailable`) are normal answers the Raft core handles.
/// `diskFull` leaves the log as it was before the failed call: retry once space is freed.
/// `corrupt` comes from opening a damaged log. `failed` means an earlier I/O failure left the
/// files in a state this process cannot vouch for (e.g. `fdatasync` failed, whose dirty pages
/// the kernel may have dropped): the log must be closed and reopened, which re-reads the disk.
public enum WALError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `index` is at or below the compaction point; the first index still in the log is `firstIndex`.
    case compacted(index: LogIndex, firstIndex: LogIndex)
    /// `index` is past the end of the log.
    case unavailable(index: LogIndex, lastIndex: LogIndex)
    /// The device is full (ENOSPC/EDQUOT). Nothing of the failed call remains in the log.
    case diskFull(FileSystemError)
    /// Another I/O error. Nothing of the failed call remains in the log.
    case io(FileSystemError)
    /// A checksum or consistency failure that is not a torn write at the tail of the log.
    case corrupt(path: String, offset: Int64, reason: String)
    /// An entry whose record would exceed ``WALOptions/recordBytesMax``.
    case entryTooLarge(index: LogIndex, bytes: Int, bytesMax: Int)
    /// The log is unusable after an earlier failure; close and reopen it.
    case failed(reason: String)
    /// Another ``WriteAheadLog`` (in this or another process) has the directory open.
    case locked(path: String)

    public var description: String {
        switch self {
        case .compacted(let index, let firstIndex):
            "log index \(index.rawValue) is compacted (first index is \(firstIndex.rawValue))"
        case .unavailable(let index, let lastIndex):
            "log index \(index.rawValue) is unavailable (last index is \(lastIndex.rawValue))"
        case .diskFull(let error):
            "disk full: \(error)"
        case .io(let error):
            "I/O error: \(error)"
        case .corrupt(let path, let offset, let reason):
            "WAL corruption in \(path) at byte offset \(offset): \(reason). The node refuses to start. "
                + "To discard this record and everything after it, restart with --wal-truncate-corrupt "
                + "(WALOptions.truncateCorruptTail); entries after this point are lost."
        case .entryTooLarge(let index, let bytes, let bytesMax):
            "entry \(index.rawValue) needs \(bytes) bytes, more than the record limit of \(bytesMax)"
        case .failed(let reason):
            "WAL unusable after an earlier failure (\(reason)); close and reopen it"
        case .locked(let path):
            "WAL directory is in use by another process or log (lock \(path) is held)"
        }
    }

    static func from(_ error: FileSystemError) -> WALError {
        error.isNoSpace ? .diskFull(error) : .io(error)
    }
}
