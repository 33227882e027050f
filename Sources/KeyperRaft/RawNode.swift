import KeyperBase
/// One Raft node as a value you step (etcd's RawNode). No I/O, no clock, no threads: the shell
/// calls `tick()` on its timer, `step(_:)` for each message received, `propose(_:)` for writes,
/// and drains work with `ready()` / `advance(_:)`.
public struct RawNode: Sendable {
    let config: Config
    public var id: NodeID { config.id }

    // Persistent state (Raft Figure 2): durable before anything that depends on it is sent.
    /// The current term (Raft §5.1).
    public internal(set) var term: Term
    var vote: NodeID?
    var log: RaftLog

    // Volatile state.
    public internal(set) var role: Role = .follower
    /// The leader of the current term as far as this node knows.
    public internal(set) var leader: NodeID?
    var configurations: ConfigurationLog
    var random: SplitMix64
    var electionElapsed = 0
    var heartbeatElapsed = 0
    var electionTimeoutRandomized = 0
    /// Candidate and pre-candidate: answers received from voters.
    var votes: [NodeID: Bool] = [:]

    // Leader state. Empty/zero in other roles.
    var progress: [NodeID: Progress] = [:]
    var leadTransferee: NodeID?
    /// The leader has committed an entry of its own term (needed before ReadIndex, §6.4, and
    /// before a configuration change).
    var committedInTerm = false
    var uncommittedBytes = 0
    /// (index, bytes) of this leader's entries not yet committed.
    var uncommittedSizes: [(index: LogIndex, bytes: Int)] = []
    var reads: ReadIndexQueue
    /// Appends wait for the next `ready()` so proposals arriving together share one message.
    var broadcastPending = false
    var commitBroadcast: LogIndex = .zero

    // Output.
    var outbox: [Message] = []
    var readStates: [ReadState] = []
    var droppedReads: [[UInt8]] = []
    var previousSoftState: SoftState
    var previousHardState: HardState
    var readyOutstanding = false

    /// Restores a node from `storage` (a fresh node has an empty log and the bootstrap
    /// configuration in its zero snapshot).
    public init(config: Config, storage: any RaftStorage) throws(RaftError) {
        try config.validate()
        self.config = config
        let hardState = storage.initialState()
        term = hardState.term
        vote = hardState.vote
        log = RaftLog(storage: storage, committed: hardState.commit, applied: config.applied)
        configurations = ConfigurationLog(snapshot: storage.snapshotMetadata)
        random = SplitMix64(seed: config.randomSeed)
        reads = ReadIndexQueue()
        previousSoftState = SoftState(leader: nil, role: .follower)
        previousHardState = hardState
        replayConfigurations(storage: storage)
        resetTimers()
    }

    /// The log a founding member starts with: one configuration entry per member at term 1,
    /// committed (as etcd bootstraps). Membership lives in the log from index 1 on, so a node
    /// added later rebuilds it from the entries (or from a snapshot) like any other change.
    /// Identical on every founder, so their logs match (§5.3).
    public static func bootstrap(_ configuration: Configuration) -> (entries: [Entry], hardState: HardState) {
        precondition(!configuration.voters.isEmpty, "bootstrap needs a voter")
        let incarnations = configuration.incarnations
        var changes = configuration.voters.sorted().map { ConfChange(kind: .addVoter, node: $0, incarnation: incarnations[$0] ?? 0) }
        changes += configuration.learners.sorted().map { ConfChange(kind: .addLearner, node: $0, incarnation: incarnations[$0] ?? 0) }
        let term = Term(1)
        var entries: [Entry] = []
        for (offset, change) in changes.enumerated() {
            entries.append(Entry(term: term, index: LogIndex(UInt64(offset + 1)), kind: .configChange, data: change.encoded()))
        }
        return (entries, HardState(term: term, vote: nil, commit: LogIndex(UInt64(entries.count))))
    }

    /// Rebuilds the configuration from the configuration entries in stable storage.
    private mutating func replayConfigurations(storage: any RaftStorage) {
        var low = storage.firstIndex
        let end = storage.lastIndex.next()
        while low < end {
            guard let batch = try? storage.entries(from: low, to: end, bytesMax: 16 << 20), let last = batch.last else {
                preconditionFailure("storage cannot read its own entries \(low)..<\(end)")
            }
            for entry in batch where entry.kind == .configChange { configurations.record(entry) }
            low = last.index.next()
        }
    }

    // MARK: Inspection

    /// The highest index known committed.
    public var commitIndex: LogIndex { log.committed }

    public var status: Status {
        Status(id: id, term: term, vote: vote, role: role, leader: leader, commit: log.committed,
               applied: log.applied, firstIndex: log.firstIndex, lastIndex: log.lastIndex,
               configuration: configurations.current, leadTransferee: leadTransferee,
               followers: progress.mapValues { progress in
                   let state: FollowerStatus.State = switch progress.state {
                   case .probe: .probe
                   case .replicate: .replicate
                   case .snapshot: .snapshot
                   }
                   return FollowerStatus(match: progress.match, next: progress.next, state: state, paused: progress.isPaused,
                                         inflightAppends: progress.inflights.count, recentActive: progress.recentActive)
               })
    }

    /// The term of the entry at `index` in this node's log (stable or not), nil if not held.
    public func logTerm(at index: LogIndex) -> Term? { try? log.term(at: index) }

    /// Entries held in `lowIndex..<highIndex`, stable or not.
    public func logEntries(from lowIndex: LogIndex, to highIndex: LogIndex) throws(RaftError) -> [Entry] {
        try log.entries(from: lowIndex, to: highIndex, bytesMax: Int.max)
    }

    /// Metadata for a snapshot the application takes of its state at `index` (<= applied): the
    /// term and the configuration in force there. Save it with the snapshot bytes; storage then
    /// drops the entries it covers, and followers behind it get the snapshot (Raft §7).
    public func snapshotMetadata(at index: LogIndex) throws(RaftError) -> SnapshotMetadata {
        guard index <= log.applied else { throw .unavailable }
        let term = try log.term(at: index)
        return SnapshotMetadata(index: index, term: term, configuration: configurations.configuration(at: index))
    }

    // MARK: Timers

    /// One unit of logical time. Elections and heartbeats are counted in ticks.
    public mutating func tick() {
        switch role {
        case .leader: tickLeader()
        case .follower, .preCandidate, .candidate: tickElection()
        }
    }

    mutating func resetTimers() {
        electionElapsed = 0
        heartbeatElapsed = 0
        // Raft §5.2: a random timeout in [electionTicks, 2*electionTicks) spreads candidates out.
        electionTimeoutRandomized = config.electionTicks + random.next(below: config.electionTicks)
    }

    /// Whether the latest configuration lists this node as it is: its id, and the incarnation
    /// of its data directory. A node not listed takes no part in elections (it may still
    /// receive the log): its log may be missing what it once promised.
    var isListed: Bool { configurations.current.lists(id, incarnation: config.incarnation) }

    var isPromotable: Bool { configurations.current.voters.contains(id) && isListed }

    /// The incarnation the latest configuration records for `node`, nil when it records none.
    public func incarnation(of node: NodeID) -> UInt64? { configurations.current.incarnations[node] }

    private mutating func tickElection() {
        electionElapsed += 1
        guard isPromotable, electionElapsed >= electionTimeoutRandomized else { return }
        electionElapsed = 0
        campaign(preVote: config.preVote, transfer: false)
    }

    private mutating func tickLeader() {
        heartbeatElapsed += 1
        electionElapsed += 1
        tickSnapshotStates()
        if electionElapsed >= config.electionTicks {
            electionElapsed = 0
            if config.checkQuorum && !hasActiveQuorum() {
                // Thesis §6.2: a leader cut off from a quorum steps down, so clients look elsewhere.
                becomeFollower(term: term, leader: nil)
                return
            }
            if leadTransferee != nil {
                // Thesis §3.10: the target did not catch up within an election timeout; resume.
                leadTransferee = nil
            }
        }
        if heartbeatElapsed >= config.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat()
        }
    }

    private mutating func hasActiveQuorum() -> Bool {
        let voters = configurations.current.voters
        let active = voters.filter { $0 == id || progress[$0]?.recentActive == true }.count
        for node in progress.keys { progress[node]!.recentActive = false }
        return active >= configurations.current.quorum
    }

    private mutating func tickSnapshotStates() {
        for node in progress.keys where progress[node]!.state == .snapshot {
            progress[node]!.snapshotTicks += 1
            // A snapshot or its answer was lost: go back to probing, which resends if still needed.
            if progress[node]!.snapshotTicks >= config.electionTicks { progress[node]!.becomeProbe() }
        }
    }

    // MARK: Role transitions

    mutating func becomeFollower(term newTerm: Term, leader newLeader: NodeID?) {
        precondition(newTerm >= term, "term going back: \(term) -> \(newTerm)")
        if newTerm > term {
            term = newTerm
            vote = nil
        }
        if role == .leader { abandonLeadership() }
        role = .follower
        leader = newLeader
        votes = [:]
        resetTimers()
    }

    private mutating func abandonLeadership() {
        droppedReads.append(contentsOf: reads.abandon(localID: id))
        progress = [:]
        leadTransferee = nil
        committedInTerm = false
        uncommittedBytes = 0
        uncommittedSizes = []
        broadcastPending = false
    }

    private mutating func becomePreCandidate() {
        precondition(role != .leader, "leader cannot become pre-candidate")
        // Thesis §9.6: no term change and no vote yet, so a losing pre-candidate disrupts nobody.
        role = .preCandidate
        leader = nil
        votes = [:]
        resetTimers()
    }

    private mutating func becomeCandidate() {
        precondition(role != .leader, "leader cannot become candidate")
        term = term.next()
        vote = id
        role = .candidate
        leader = nil
        votes = [:]
        resetTimers()
    }

    mutating func becomeLeader() {
        precondition(role == .candidate, "only a candidate becomes leader, role=\(role)")
        role = .leader
        leader = id
        leadTransferee = nil
        committedInTerm = false
        uncommittedBytes = 0
        uncommittedSizes = []
        reads = ReadIndexQueue()
        resetTimers()
        progress = [:]
        for node in configurations.current.members where node != id {
            progress[node] = Progress(next: log.lastIndex.next(), inflightsMax: config.inflightAppendsMax)
        }
        commitBroadcast = log.committed
        // Raft §8 / thesis §6.4: a no-op in the new term lets the leader learn what is committed,
        // since it may commit only entries of its own term by counting (§5.4.2).
        appendToLog([Entry(term: term, index: log.lastIndex.next())])
        broadcastPending = true
    }

    mutating func campaign(preVote: Bool, transfer: Bool) {
        let voteTerm: Term
        if preVote {
            becomePreCandidate()
            voteTerm = term.next()
        } else {
            becomeCandidate()
            voteTerm = term
        }
        votes[id] = true
        if tallyVotes() == .won {
            if preVote { campaign(preVote: false, transfer: transfer) } else { becomeLeader() }
            return
        }
        let request = VoteRequest(lastIndex: log.lastIndex, lastTerm: log.lastTerm, transfer: transfer)
        for voter in configurations.current.voters.sorted() where voter != id {
            send(to: voter, term: voteTerm, preVote ? .preVote(request) : .vote(request))
        }
    }

    enum VoteResult { case won, lost, pending }

    func tallyVotes() -> VoteResult {
        let voters = configurations.current.voters
        var granted = 0
        var rejected = 0
        for (node, answer) in votes where voters.contains(node) {
            if answer { granted += 1 } else { rejected += 1 }
        }
        let quorum = configurations.current.quorum
        if granted >= quorum { return .won }
        if rejected > voters.count - quorum { return .lost }
        return .pending
    }

    // MARK: Sending

    mutating func send(to: NodeID, term messageTerm: Term? = nil, _ kind: MessageKind) {
        precondition(to != id, "message to self: \(kind)")
        outbox.append(Message(from: id, to: to, term: messageTerm ?? term, kind: kind))
    }
}
