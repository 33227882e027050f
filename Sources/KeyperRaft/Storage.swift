import Synchronization

/// The stable log as the core reads it (etcd's `Storage`). The shell writes to it while handling
/// a `Ready`; the core only reads. Implementations: `MemoryStorage` here, the WAL in KeyperStorage.
///
/// Contract, for every implementation:
/// - The log is a snapshot (`snapshotMetadata`, possibly the empty one at index 0 holding the
///   bootstrap configuration) followed by the entries `firstIndex...lastIndex`, contiguous, where
///   `firstIndex == snapshotMetadata.index + 1`. An empty log has `lastIndex == firstIndex - 1`.
/// - `term(at: snapshotMetadata.index)` is the snapshot's term; below it throws `.compacted`,
///   beyond `lastIndex` it throws `.unavailable`.
/// - Reads are synchronous and cheap (served from memory or a cache); an I/O failure here is not
///   an operating error the core can handle, so implementations stop the process instead.
/// - Everything returned reflects only writes the shell has completed (persisted).
public protocol RaftStorage: Sendable {
    /// The hard state saved last (zero values on a fresh node).
    func initialState() -> HardState
    /// Entries in `lowIndex..<highIndex`, stopping once `bytesMax` payload bytes are reached but
    /// always returning at least one entry when the range is not empty.
    func entries(from lowIndex: LogIndex, to highIndex: LogIndex, bytesMax: Int) throws(RaftError) -> [Entry]
    /// The term of the entry at `index` (or of the snapshot, at its index).
    func term(at index: LogIndex) throws(RaftError) -> Term
    /// The first index held as an entry (snapshot index + 1).
    var firstIndex: LogIndex { get }
    /// The last index held (the snapshot's index when no entry follows it).
    var lastIndex: LogIndex { get }
    /// The latest snapshot, sent to followers that need entries compacted away.
    var snapshotMetadata: SnapshotMetadata { get }
}

/// A `RaftStorage` in memory, for tests and the simulator. The shell writes to it with `append`,
/// `setHardState`, `applySnapshot`, `createSnapshot` and `compact`; the core reads it.
///
/// A class, because the core and the shell share one log; `Sendable` through a `Mutex`, so it is
/// safe wherever it goes (the lock is uncontended in a single-threaded simulation). It survives a
/// simulated crash: it is the "disk".
public final class MemoryStorage: RaftStorage {
    struct State {
        var hardState = HardState()
        var snapshot: SnapshotMetadata
        var snapshotData: [UInt8] = []
        // Invariant: entries[k].index == snapshot.index + 1 + k.
        var entries: [Entry] = []

        var lastIndex: LogIndex { snapshot.index + UInt64(entries.count) }
    }

    private let state: Mutex<State>

    /// An empty log: a node joining an existing cluster learns everything from its leader.
    public init() {
        state = Mutex(State(snapshot: SnapshotMetadata()))
    }

    /// The log of a founding member: the bootstrap entries of `configuration` (see
    /// `RawNode.bootstrap(_:)`), already committed. Every founder must use the same configuration.
    public convenience init(bootstrapping configuration: Configuration) {
        self.init()
        let bootstrap = RawNode.bootstrap(configuration)
        append(bootstrap.entries)
        setHardState(bootstrap.hardState)
    }

    public func initialState() -> HardState { state.withLock { $0.hardState } }

    public var firstIndex: LogIndex { state.withLock { $0.snapshot.index.next() } }
    public var lastIndex: LogIndex { state.withLock { $0.lastIndex } }
    public var snapshotMetadata: SnapshotMetadata { state.withLock { $0.snapshot } }
    /// The opaque bytes saved with the latest snapshot.
    public var snapshotData: [UInt8] { state.withLock { $0.snapshotData } }

    public func term(at index: LogIndex) throws(RaftError) -> Term {
        let result: Result<Term, RaftError> = state.withLock { s in
            if index < s.snapshot.index { return .failure(.compacted) }
            if index > s.lastIndex { return .failure(.unavailable) }
            if index == s.snapshot.index { return .success(s.snapshot.term) }
            return .success(s.entries[Int(index.rawValue - s.snapshot.index.rawValue - 1)].term)
        }
        return try result.get()
    }

    public func entries(from lowIndex: LogIndex, to highIndex: LogIndex, bytesMax: Int) throws(RaftError) -> [Entry] {
        precondition(lowIndex <= highIndex, "lowIndex=\(lowIndex) highIndex=\(highIndex)")
        let result: Result<[Entry], RaftError> = state.withLock { s in
            if lowIndex <= s.snapshot.index { return .failure(.compacted) }
            if highIndex > s.lastIndex.next() { return .failure(.unavailable) }
            let base = Int(s.snapshot.index.rawValue) + 1
            let slice = s.entries[(Int(lowIndex.rawValue) - base)..<(Int(highIndex.rawValue) - base)]
            return .success(limitBytes(slice, bytesMax: bytesMax))
        }
        return try result.get()
    }

    /// Saves the hard state.
    public func setHardState(_ hardState: HardState) {
        state.withLock { $0.hardState = hardState }
    }

    /// Appends entries, first discarding any held entry at or after `entries[0].index`
    /// (a new leader may overwrite an uncommitted suffix, Raft §5.3).
    public func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        state.withLock { s in
            precondition(first.index > s.snapshot.index, "append at \(first.index) into snapshot \(s.snapshot.index)")
            precondition(first.index <= s.lastIndex.next(), "gap: append at \(first.index) after \(s.lastIndex)")
            let keep = Int(first.index.rawValue - s.snapshot.index.rawValue - 1)
            s.entries.removeSubrange(keep...)
            s.entries.append(contentsOf: entries)
        }
    }

    /// Replaces the whole log with a snapshot received from the leader (`Ready.snapshot`).
    public func applySnapshot(_ metadata: SnapshotMetadata, data: [UInt8]) throws(RaftError) {
        let result: Result<Void, RaftError> = state.withLock { s in
            if metadata.index <= s.snapshot.index { return .failure(.snapshotOutOfDate) }
            s.snapshot = metadata
            s.snapshotData = data
            s.entries = []
            return .success(())
        }
        try result.get()
    }

    /// Records a snapshot the application took at `metadata.index` (see
    /// `RawNode.snapshotMetadata(at:)`). Entries are kept until `compact(through:)`.
    public func createSnapshot(_ metadata: SnapshotMetadata, data: [UInt8]) throws(RaftError) {
        let result: Result<Void, RaftError> = state.withLock { s in
            if metadata.index <= s.snapshot.index { return .failure(.snapshotOutOfDate) }
            if metadata.index > s.lastIndex { return .failure(.unavailable) }
            let term = s.entries[Int(metadata.index.rawValue - s.snapshot.index.rawValue - 1)].term
            precondition(term == metadata.term, "snapshot term \(metadata.term) != log term \(term) at \(metadata.index)")
            // Entries up to the snapshot become unreachable: drop them, the snapshot replaces them.
            s.entries.removeFirst(Int(metadata.index.rawValue - s.snapshot.index.rawValue))
            s.snapshot = metadata
            s.snapshotData = data
            return .success(())
        }
        try result.get()
    }

    /// A copy of every entry held, for tests and invariant checks.
    public var allEntries: [Entry] { state.withLock { $0.entries } }
}

/// The longest prefix within `bytesMax` payload bytes, and never less than one entry.
func limitBytes(_ entries: ArraySlice<Entry>, bytesMax: Int) -> [Entry] {
    var total = 0
    var end = entries.startIndex
    while end < entries.endIndex {
        total += entries[end].sizeBytes
        if total > bytesMax && end > entries.startIndex { break }
        end += 1
    }
    return Array(entries[entries.startIndex..<end])
}
