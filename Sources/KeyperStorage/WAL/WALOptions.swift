import KeyperRaft

/// Tunables of ``WriteAheadLog``.
public struct WALOptions: Sendable {
    /// A new segment file is started when the next record would take the current one past this
    /// size (a single record larger than it still gets written, alone in its segment).
    public var segmentBytesMax: Int
    /// Recent entries kept in memory, by encoded size, so replication rarely reads the disk.
    public var cacheBytesMax: Int
    /// Largest record payload written or accepted on read; a length field above it is damage.
    public var recordBytesMax: Int
    /// On open, treat a checksum failure before the tail as the end of the log: truncate there
    /// (and delete later segments) instead of refusing to start. For operators who accept losing
    /// whatever followed the damage (`--wal-truncate-corrupt`).
    public var truncateCorruptTail: Bool

    public init(
        segmentBytesMax: Int = 64 << 20,
        cacheBytesMax: Int = 8 << 20,
        recordBytesMax: Int = 64 << 20,
        truncateCorruptTail: Bool = false
    ) {
        self.segmentBytesMax = segmentBytesMax
        self.cacheBytesMax = cacheBytesMax
        self.recordBytesMax = recordBytesMax
        self.truncateCorruptTail = truncateCorruptTail
    }

    func validate() {
        precondition(segmentBytesMax >= 256, "segmentBytesMax=\(segmentBytesMax)")
        precondition(cacheBytesMax >= 0, "cacheBytesMax=\(cacheBytesMax)")
        precondition(recordBytesMax >= 1024 && recordBytesMax <= Int(UInt32.max), "recordBytesMax=\(recordBytesMax)")
    }
}

/// A part of a segment file that recovery discarded.
public struct WALTruncation: Hashable, Sendable, CustomStringConvertible {
    public var path: String
    public var offset: Int64
    public var bytesDiscarded: Int64
    public var reason: String

    public var description: String {
        "\(path) at byte \(offset): discarded \(bytesDiscarded) byte(s) (\(reason))"
    }
}

/// What opening the log found and repaired; the server logs it.
public struct WALRecoveryReport: Hashable, Sendable, CustomStringConvertible {
    public var segmentCount = 0
    public var recordCount = 0
    public var firstIndex = LogIndex(1)
    public var lastIndex = LogIndex.zero
    /// A torn write at the end of the last segment (crash mid-append), truncated away.
    /// Expected after a crash; loses nothing that was synced.
    public var tornTail: WALTruncation?
    /// Corruption truncated because ``WALOptions/truncateCorruptTail`` was set. Data was lost.
    public var corruption: WALTruncation?
    /// Segment files deleted because they followed the corruption.
    public var removedSegments: [String] = []
    /// Leftover temporary files of an interrupted segment creation, deleted.
    public var removedTemporaryFiles: [String] = []
    /// True when the directory held no log and a new one was created.
    public var createdNew = false

    public var description: String {
        var text = "WAL recovered \(segmentCount) segment(s), \(recordCount) record(s), "
            + "entries \(firstIndex.rawValue)...\(lastIndex.rawValue)"
        if createdNew { text += ", new log" }
        if let tornTail { text += "; torn tail truncated: \(tornTail)" }
        if let corruption { text += "; CORRUPTION TRUNCATED: \(corruption)" }
        if !removedSegments.isEmpty { text += "; removed segments \(removedSegments)" }
        if !removedTemporaryFiles.isEmpty { text += "; removed temporary files \(removedTemporaryFiles)" }
        return text
    }
}
