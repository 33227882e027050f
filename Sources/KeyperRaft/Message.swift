/// A message between two Raft nodes. Plain public data so a binary codec can live elsewhere.
public struct Message: Hashable, Sendable {
    public var from: NodeID
    public var to: NodeID
    /// The sender's term, or for pre-votes the term the sender would campaign in (thesis §9.6).
    public var term: Term
    public var kind: MessageKind

    public init(from: NodeID, to: NodeID, term: Term, kind: MessageKind) {
        self.from = from
        self.to = to
        self.term = term
        self.kind = kind
    }

    /// Whether the message may leave before the `Ready` that produced it is persisted.
    /// Only what a leader sends qualifies (appends, heartbeats, snapshots, TimeoutNow): a leader
    /// may replicate while its own write is in flight (thesis §10.2.1), because it counts itself
    /// towards commit only after `advance`. Everything else (votes, acknowledgements, reads)
    /// promises something about the sender's durable state and must wait for the persist.
    public var maySendBeforePersist: Bool {
        switch kind {
        case .append, .heartbeat, .snapshot, .timeoutNow: true
        default: false
        }
    }
}

extension MessageKind {
    /// An answer to a message the recipient sent. A node may answer a peer its configuration
    /// does not list yet (a new member answering the leader before its log names it); every
    /// other message goes only to members.
    public var isResponse: Bool {
        switch self {
        case .appendResponse, .preVoteResponse, .voteResponse, .heartbeatResponse, .readIndexResponse: true
        default: false
        }
    }
}

public enum MessageKind: Hashable, Sendable {
    /// AppendEntries (Raft §5.3). Leader → follower.
    case append(AppendEntries)
    /// Answer to `append` or `snapshot`.
    case appendResponse(AppendResponse)
    /// Pre-vote request (thesis §9.6); `Message.term` is the term the sender would use.
    case preVote(VoteRequest)
    case preVoteResponse(VoteResponse)
    /// RequestVote (Raft §5.2).
    case vote(VoteRequest)
    case voteResponse(VoteResponse)
    /// Leader liveness and commit index; carries the ReadIndex round it confirms (thesis §6.4).
    case heartbeat(Heartbeat)
    case heartbeatResponse(HeartbeatResponse)
    /// InstallSnapshot (Raft §7). The transport attaches the snapshot bytes itself.
    case snapshot(SnapshotMetadata)
    /// Start an election now, skipping pre-vote: the leader hands over (thesis §3.10).
    case timeoutNow
    /// A follower asks the leader for a read index on behalf of its client (thesis §6.4).
    case readIndex(ReadIndexRequest)
    case readIndexResponse(ReadIndexResponse)
}

public struct AppendEntries: Hashable, Sendable {
    public var prevIndex: LogIndex
    public var prevTerm: Term
    public var entries: [Entry]
    public var commit: LogIndex
    public init(prevIndex: LogIndex, prevTerm: Term, entries: [Entry], commit: LogIndex) {
        self.prevIndex = prevIndex
        self.prevTerm = prevTerm
        self.entries = entries
        self.commit = commit
    }
}

public struct AppendResponse: Hashable, Sendable {
    /// On success the last index known to match the leader; on rejection the `prevIndex` rejected.
    public var index: LogIndex
    public var rejected: Bool
    /// On rejection: the last index whose term is <= `hintTerm` and <= the rejected prevIndex,
    /// so the leader can skip a whole conflicting term at once (Raft §5.3, "fast back-off").
    public var hintIndex: LogIndex
    public var hintTerm: Term
    public init(index: LogIndex, rejected: Bool = false, hintIndex: LogIndex = .zero, hintTerm: Term = .zero) {
        self.index = index
        self.rejected = rejected
        self.hintIndex = hintIndex
        self.hintTerm = hintTerm
    }
}

public struct VoteRequest: Hashable, Sendable {
    public var lastIndex: LogIndex
    public var lastTerm: Term
    /// Set by a leadership transfer: voters ignore their leader lease (thesis §3.10, §4.2.3).
    public var transfer: Bool
    public init(lastIndex: LogIndex, lastTerm: Term, transfer: Bool = false) {
        self.lastIndex = lastIndex
        self.lastTerm = lastTerm
        self.transfer = transfer
    }
}

public struct VoteResponse: Hashable, Sendable {
    public var granted: Bool
    public init(granted: Bool) { self.granted = granted }
}

public struct Heartbeat: Hashable, Sendable {
    /// min(follower's match, leader's commit): never beyond what the follower is known to hold.
    public var commit: LogIndex
    /// The latest ReadIndex round the leader has started; 0 when none.
    public var readRound: UInt64
    public init(commit: LogIndex, readRound: UInt64 = 0) {
        self.commit = commit
        self.readRound = readRound
    }
}

public struct HeartbeatResponse: Hashable, Sendable {
    public var readRound: UInt64
    public init(readRound: UInt64 = 0) { self.readRound = readRound }
}

public struct ReadIndexRequest: Hashable, Sendable {
    public var context: [UInt8]
    public init(context: [UInt8]) { self.context = context }
}

public struct ReadIndexResponse: Hashable, Sendable {
    public var context: [UInt8]
    public var index: LogIndex
    public init(context: [UInt8], index: LogIndex) {
        self.context = context
        self.index = index
    }
}
