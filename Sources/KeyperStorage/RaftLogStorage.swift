import KeyperRaft
import Synchronization

/// The durable Raft log as the core reads it: ``WriteAheadLog`` behind the core's
/// `RaftStorage` protocol.
///
/// The node runtime writes through ``save(_:hardState:sync:)`` while handling a `Ready`, on
/// the same serial context that steps the core, so the lock is never contended; it is there
/// so the type is honestly `Sendable`.
public final class RaftLogStorage: RaftStorage {
    private let wal: Mutex<WriteAheadLog>

    public init(wal: consuming sending WriteAheadLog) {
        self.wal = Mutex(wal)
    }

    /// Runs `body` with the log, for the runtime's writes and for tests.
    public func withLog<T: Sendable>(_ body: (WriteAheadLog) throws(WALError) -> T) throws(WALError) -> T {
        try wal.withLock { (log: inout WriteAheadLog) throws(WALError) -> T in try body(log) }
    }

    /// Appends a `Ready`'s entries and hard state, and syncs them when `sync` is set:
    /// one `fdatasync` for the whole batch.
    public func save(_ entries: [Entry], hardState: HardState?, sync: Bool) throws(WALError) {
        try withLog { (log) throws(WALError) in
            try log.append(entries, hardState: hardState)
            if sync { try log.sync() }
        }
    }

    /// Drops the entries a durable snapshot covers (Raft §7). The snapshot must be on disk first.
    public func compact(through metadata: SnapshotMetadata) throws(WALError) {
        try withLog { (log) throws(WALError) in try log.compact(through: metadata) }
    }

    /// Makes a snapshot received from the leader the start of the log.
    public func applySnapshot(_ metadata: SnapshotMetadata) throws(WALError) {
        try withLog { (log) throws(WALError) in try log.applySnapshot(metadata) }
    }

    public func close() {
        wal.withLock { $0.close() }
    }

    // MARK: RaftStorage

    public func initialState() -> HardState {
        wal.withLock { $0.hardState }
    }

    public func entries(from lowIndex: LogIndex, to highIndex: LogIndex, bytesMax: Int) throws(RaftError) -> [Entry] {
        do {
            return try withLog { (log) throws(WALError) in try log.entries(from: lowIndex, to: highIndex, bytesMax: bytesMax) }
        } catch {
            throw Self.raftError(error)
        }
    }

    public func term(at index: LogIndex) throws(RaftError) -> Term {
        do {
            return try withLog { (log) throws(WALError) in try log.term(at: index) }
        } catch {
            throw Self.raftError(error)
        }
    }

    public var firstIndex: LogIndex { wal.withLock { $0.firstIndex } }
    public var lastIndex: LogIndex { wal.withLock { $0.lastIndex } }
    public var snapshotMetadata: SnapshotMetadata { wal.withLock { $0.snapshotMetadata } }

    /// Reads answer `compacted` and `unavailable` as the core expects. Any other failure is an
    /// I/O error on a log this process can no longer vouch for: the storage contract says the
    /// process stops rather than let the core act on a guess.
    private static func raftError(_ error: WALError) -> RaftError {
        switch error {
        case .compacted: return .compacted
        case .unavailable: return .unavailable
        default: preconditionFailure("the Raft log cannot be read: \(error)")
        }
    }
}
