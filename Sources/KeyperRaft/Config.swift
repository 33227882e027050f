/// Settings of one Raft node. Every limit is named with its unit and qualifier last, and all of
/// them are checked once by `validate()` before a `RawNode` is built.
public struct Config: Sendable {
    /// This node.
    public var id: NodeID
    /// The incarnation of this node's data directory (a random id it was created with). A node
    /// neither votes nor campaigns unless the latest configuration lists it with this one, so
    /// a member that lost its disk cannot vote as if it remembered. 0 turns the check off
    /// (the core's own tests), and then a node votes even where no configuration lists it.
    public var incarnation: UInt64 = 0
    /// Followers wait between `electionTicks` and `2 * electionTicks - 1` ticks without hearing
    /// from a leader before they campaign (Raft §5.2, randomised to split fewer votes).
    public var electionTicks: Int = 10
    /// A leader sends heartbeats every `heartbeatTicks` ticks. Must be well below `electionTicks`.
    public var heartbeatTicks: Int = 1
    /// The last index the application has applied (read from its state machine at start).
    /// Committed entries are handed out from `applied + 1`.
    public var applied: LogIndex = .zero
    /// Appends in flight to one follower in the replicate state (pipelining bound).
    public var inflightAppendsMax: Int = 256
    /// Payload bytes in one append message; a single larger entry is still sent alone.
    public var appendBytesMax: Int = 1 << 20
    /// Payload bytes a leader holds in its log uncommitted; proposals beyond are refused.
    public var uncommittedBytesMax: Int = 64 << 20
    /// Payload bytes of one entry.
    public var entryBytesMax: Int = 1 << 20
    /// Payload bytes of committed entries handed out by one `Ready` (at least one entry).
    public var applyBytesMax: Int = 64 << 20
    /// ReadIndex requests waiting at a leader; more are refused with `RaftError.readLimit`.
    public var readsPendingMax: Int = 65_536
    /// Pre-vote (thesis §9.6): ask whether we could win before disrupting the cluster's term.
    public var preVote: Bool = true
    /// Check-quorum (thesis §6.2): a leader that has not heard from a quorum within an election
    /// timeout steps down, and followers that heard from a leader ignore vote requests.
    public var checkQuorum: Bool = true
    /// Seed of the node's generator. Give each node of a simulation its own seed.
    public var randomSeed: UInt64 = 0

    public init(id: NodeID, randomSeed: UInt64 = 0) {
        self.id = id
        self.randomSeed = randomSeed
    }

    /// Rejects settings that cannot work together.
    public func validate() throws(RaftError) {
        func check(_ condition: Bool, _ reason: String) throws(RaftError) {
            if !condition { throw .invalidConfig(reason: reason) }
        }
        try check(!id.rawValue.isEmpty, "id must not be empty")
        try check(heartbeatTicks >= 1, "heartbeatTicks=\(heartbeatTicks) must be >= 1")
        try check(electionTicks > heartbeatTicks,
                  "electionTicks=\(electionTicks) must be > heartbeatTicks=\(heartbeatTicks)")
        try check(inflightAppendsMax >= 1, "inflightAppendsMax=\(inflightAppendsMax) must be >= 1")
        try check(appendBytesMax >= 1, "appendBytesMax=\(appendBytesMax) must be >= 1")
        try check(entryBytesMax >= 1, "entryBytesMax=\(entryBytesMax) must be >= 1")
        try check(uncommittedBytesMax >= entryBytesMax,
                  "uncommittedBytesMax=\(uncommittedBytesMax) must be >= entryBytesMax=\(entryBytesMax)")
        try check(applyBytesMax >= 1, "applyBytesMax=\(applyBytesMax) must be >= 1")
        try check(readsPendingMax >= 1, "readsPendingMax=\(readsPendingMax) must be >= 1")
    }
}
