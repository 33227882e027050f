/// Operating errors of the core: a request the core refused or could not serve.
/// Broken invariants are not errors; they stop the process with a `precondition`.
public enum RaftError: Error, Hashable, Sendable {
    /// Only the leader accepts proposals and transfers; `leader` is our best guess of who is.
    case notLeader(leader: NodeID?)
    /// A proposal refused for a reason that has no case of its own.
    case proposalDropped(reason: DropReason)
    /// The entry is larger than `Config.entryBytesMax`.
    case entryTooLarge(bytes: Int, bytesMax: Int)
    /// Accepting the entry would exceed `Config.uncommittedBytesMax`.
    case uncommittedLimit(bytes: Int, bytesMax: Int)
    /// A configuration change is already in the log and not yet committed (thesis §4.1).
    case configChangeInProgress
    /// The change does not make sense against the current configuration.
    case invalidConfChange(reason: String)
    /// A leadership transfer is under way; proposals wait for it to finish or abort (thesis §3.10).
    case transferInProgress(to: NodeID)
    /// The node named is not a voter of the current configuration.
    case notVoter(NodeID)
    /// Too many ReadIndex requests are waiting (`Config.readsPendingMax`).
    case readLimit(pendingMax: Int)
    /// Storage: the index is below the first entry kept (it is inside a snapshot).
    case compacted
    /// Storage: the index is beyond the last entry.
    case unavailable
    /// Storage: the snapshot is older than the one already held.
    case snapshotOutOfDate
    /// A configuration change entry that does not decode.
    case malformedConfChange
    /// `Config.validate()` rejected a setting.
    case invalidConfig(reason: String)
    /// A message addressed to another node was stepped into this one.
    case misrouted(to: NodeID)
}

/// Why a proposal was dropped, for the cases without a dedicated `RaftError`.
public enum DropReason: Hashable, Sendable {
    /// The leader has not yet committed an entry of its term; configuration changes wait for it
    /// (thesis §4.1, the fix to single-server changes published on raft-dev in 2015).
    case leaderNotReady
    /// The leader has removed itself from the voters and is about to step down (thesis §4.2.2).
    case leaderRemoving
}
