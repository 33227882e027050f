/// A leader's ReadIndex requests (thesis §6.4). Reads registered between two `ready()` calls
/// share one heartbeat round; a quorum acknowledging round r (or any later one) proves this node
/// was still leader after every read of round <= r arrived.
struct ReadIndexQueue: Sendable {
    struct PendingRead: Sendable {
        var context: [UInt8]
        var origin: NodeID
        var index: LogIndex
        /// 0 until a heartbeat round is started for it.
        var round: UInt64
    }

    /// Reads that arrived before the leader committed an entry of its term: the commit index is
    /// not yet known to be current, so they wait (thesis §6.4 step 1).
    private(set) var awaitingCommit: [(context: [UInt8], origin: NodeID)] = []
    /// Invariant: rounds are non-decreasing, with the unassigned (0) ones at the end.
    private(set) var pending: [PendingRead] = []
    private(set) var roundIssued: UInt64 = 0
    private var acknowledged: [NodeID: UInt64] = [:]

    var count: Int { awaitingCommit.count + pending.count }
    var hasUnsentRound: Bool { pending.last?.round == 0 }

    mutating func add(context: [UInt8], origin: NodeID, committedInTerm: Bool, commit: LogIndex) {
        if committedInTerm {
            pending.append(PendingRead(context: context, origin: origin, index: commit, round: 0))
        } else {
            awaitingCommit.append((context, origin))
        }
    }

    mutating func commitReachedInTerm(index: LogIndex) {
        for read in awaitingCommit {
            pending.append(PendingRead(context: read.context, origin: read.origin, index: index, round: 0))
        }
        awaitingCommit = []
    }

    /// Starts a round for every read without one; the leader acknowledges it at once.
    mutating func startRound(leader: NodeID) -> UInt64 {
        roundIssued += 1
        for position in pending.indices.reversed() {
            guard pending[position].round == 0 else { break }
            pending[position].round = roundIssued
        }
        acknowledged[leader] = roundIssued
        return roundIssued
    }

    mutating func acknowledge(round: UInt64, from node: NodeID) {
        guard round > 0 else { return }
        acknowledged[node] = max(acknowledged[node] ?? 0, round)
    }

    mutating func forget(nodesNotIn voters: Set<NodeID>) {
        for node in acknowledged.keys where !voters.contains(node) { acknowledged[node] = nil }
    }

    /// Removes and returns the reads a quorum of `voters` has confirmed.
    mutating func takeConfirmed(voters: Set<NodeID>, quorum: Int) -> [PendingRead] {
        guard !pending.isEmpty, !voters.isEmpty else { return [] }
        var rounds = voters.map { acknowledged[$0] ?? 0 }
        rounds.sort(by: >)
        let confirmed = rounds[quorum - 1]
        let released = pending.prefix { $0.round != 0 && $0.round <= confirmed }
        pending.removeFirst(released.count)
        return Array(released)
    }

    /// Leadership lost: returns the contexts of `localID`'s own reads, which will never complete.
    mutating func abandon(localID: NodeID) -> [[UInt8]] {
        let local = awaitingCommit.filter { $0.origin == localID }.map(\.context)
            + pending.filter { $0.origin == localID }.map(\.context)
        self = ReadIndexQueue()
        return local
    }
}

extension RawNode {
    /// Asks for a linearizable read point (thesis §6.4). The answer comes back in
    /// `Ready.readStates` with `context`; serve the read once applied >= its index. A follower
    /// forwards to the leader; if either loses touch, the read never completes and the caller's
    /// timeout decides (a leader that steps down reports its own in `Ready.droppedReads`).
    public mutating func readIndex(context: [UInt8]) throws(RaftError) {
        switch role {
        case .leader:
            try requestRead(context: context, from: id)
        case .follower, .candidate, .preCandidate:
            guard let leader else { throw .notLeader(leader: nil) }
            send(to: leader, .readIndex(ReadIndexRequest(context: context)))
        }
    }

    mutating func requestRead(context: [UInt8], from origin: NodeID) throws(RaftError) {
        precondition(role == .leader, "requestRead as \(role)")
        guard reads.count < config.readsPendingMax else { throw .readLimit(pendingMax: config.readsPendingMax) }
        reads.add(context: context, origin: origin, committedInTerm: committedInTerm, commit: log.committed)
        issueReadRoundIfSingleVoter()
    }

    /// With one voter there is nobody to ask: the round is confirmed as soon as it starts.
    mutating func issueReadRoundIfSingleVoter() {
        if configurations.current.voters == [id] && reads.hasUnsentRound { startReadRound() }
    }

    /// One heartbeat round for every read registered since the last one.
    mutating func startReadRound() {
        precondition(role == .leader, "read round as \(role)")
        _ = reads.startRound(leader: id)
        if configurations.current.voters.contains(where: { $0 != id }) { broadcastHeartbeat() }
        releaseConfirmedReads()
    }

    /// Releases reads a quorum of the current voters confirmed. A leader that removed itself
    /// is not a voter and so does not count itself, as for commits.
    mutating func releaseConfirmedReads() {
        releaseConfirmed(voters: configurations.current.voters)
    }

    private mutating func releaseConfirmed(voters: Set<NodeID>) {
        let released = reads.takeConfirmed(voters: voters, quorum: configurations.current.quorum)
        for read in released {
            if read.origin == id {
                readStates.append(ReadState(index: read.index, context: read.context))
            } else {
                send(to: read.origin, .readIndexResponse(ReadIndexResponse(context: read.context, index: read.index)))
            }
        }
    }
}
