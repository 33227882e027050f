/// The role of a node (Raft §5.1, plus the pre-candidate of thesis §9.6).
public enum Role: Hashable, Sendable {
    case follower, preCandidate, candidate, leader
}

/// Volatile state the shell may want to show or act on; in a `Ready` only when it changed.
public struct SoftState: Hashable, Sendable {
    public var leader: NodeID?
    public var role: Role
    public init(leader: NodeID?, role: Role) {
        self.leader = leader
        self.role = role
    }
}

/// A linearizable read may be served once the local state machine has applied `index`
/// (thesis §6.4). `context` is what the caller passed to `readIndex(context:)`.
public struct ReadState: Hashable, Sendable {
    public var index: LogIndex
    public var context: [UInt8]
    public init(index: LogIndex, context: [UInt8]) {
        self.index = index
        self.context = context
    }
}

/// Everything the core wants done. Handle it in this order, then call `advance(_:)`:
/// 1. send `messages` (they may go before or while persisting, thesis §10.2.1);
/// 2. persist: install `snapshot` (replacing the log), append `entries` (overwriting any stored
///    suffix from `entries[0].index`), save `hardState`; one sync covers all three;
/// 3. send `messagesAfterPersist` (votes and acknowledgements promise durable state);
/// 4. apply `committedEntries` in order; release each `readStates` entry once applied >= its index;
///    fail the reads in `droppedReads`.
public struct Ready: Sendable {
    public var softState: SoftState?
    public var hardState: HardState?
    /// A snapshot from the leader to install; the transport delivered its bytes.
    public var snapshot: SnapshotMetadata?
    public var entries: [Entry] = []
    /// At most `Config.applyBytesMax` payload bytes (at least one entry if any is due).
    public var committedEntries: [Entry] = []
    public var messages: [Message] = []
    public var messagesAfterPersist: [Message] = []
    public var readStates: [ReadState] = []
    /// Contexts of this node's own ReadIndex requests that will never complete (lost leadership).
    public var droppedReads: [[UInt8]] = []

    /// Whether step 2 must sync before step 3 (etcd's `MustSync`): new entries, a snapshot, or a
    /// new term or vote. A hard state whose only change is the commit index is written but
    /// need not be synced: after a crash the commit index is learned again from the leader,
    /// and applying never runs ahead of the durable log.
    public internal(set) var mustSync = false
}

/// A snapshot of a node's state for tests, tools and status pages.
public struct Status: Hashable, Sendable {
    public var id: NodeID
    public var term: Term
    public var vote: NodeID?
    public var role: Role
    public var leader: NodeID?
    public var commit: LogIndex
    public var applied: LogIndex
    public var firstIndex: LogIndex
    public var lastIndex: LogIndex
    public var configuration: Configuration
    public var leadTransferee: NodeID?
    /// Leader only: what it knows of each follower's log.
    public var followers: [NodeID: FollowerStatus]
}

/// A leader's view of one follower (Raft §5.3 matchIndex/nextIndex and the flow-control state).
public struct FollowerStatus: Hashable, Sendable, CustomStringConvertible {
    public enum State: Hashable, Sendable { case probe, replicate, snapshot }
    public var match: LogIndex
    public var next: LogIndex
    public var state: State
    public var paused: Bool
    public var inflightAppends: Int
    public var recentActive: Bool
    public var description: String {
        "\(state) match=\(match) next=\(next) paused=\(paused) inflight=\(inflightAppends) active=\(recentActive)"
    }
}
