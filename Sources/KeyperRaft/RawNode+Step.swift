extension RawNode {
    /// Feeds one message received from a peer.
    public mutating func step(_ message: Message) throws(RaftError) {
        guard message.to == id else { throw .misrouted(to: message.to) }
        guard message.from != id else { return }
        if message.term > term {
            guard acceptHigherTerm(message) else { return }
        } else if message.term < term {
            answerStaleTerm(message)
            return
        }
        switch message.kind {
        case .vote(let request):
            handleVoteRequest(message, request, preVote: false)
        case .preVote(let request):
            handleVoteRequest(message, request, preVote: true)
        default:
            switch role {
            case .leader: stepLeader(message)
            case .candidate, .preCandidate: stepCandidate(message)
            case .follower: stepFollower(message)
            }
        }
    }

    /// Raft §5.1: a higher term makes us a follower of it. Returns false to drop the message.
    private mutating func acceptHigherTerm(_ message: Message) -> Bool {
        switch message.kind {
        case .vote(let request), .preVote(let request):
            // Thesis §4.2.3 / §9.6: a node that hears from a leader within the minimum election
            // timeout ignores vote requests, so a rejoining node cannot depose a healthy leader.
            // A leadership transfer overrides the lease on purpose.
            let inLease = config.checkQuorum && leader != nil && electionElapsed < config.electionTicks
            if inLease && !request.transfer { return false }
        default:
            break
        }
        switch message.kind {
        case .preVote:
            // A pre-vote never changes our term (thesis §9.6).
            break
        case .preVoteResponse(let response) where response.granted:
            // Granted pre-votes carry the term we would campaign in, not a newer cluster term.
            break
        case .append, .heartbeat, .snapshot:
            becomeFollower(term: message.term, leader: message.from)
        default:
            becomeFollower(term: message.term, leader: nil)
        }
        return true
    }

    /// Raft §5.1: stale messages are dropped; some get an answer that updates their sender.
    private mutating func answerStaleTerm(_ message: Message) {
        switch message.kind {
        case .append, .heartbeat:
            // A leader partitioned away sees our higher term and steps down. Needed with
            // check-quorum and pre-vote, where our term may have moved without its knowledge.
            if config.checkQuorum || config.preVote {
                send(to: message.from, .appendResponse(AppendResponse(index: .zero, rejected: true)))
            }
        case .preVote:
            // Reject so the pre-candidate learns our term.
            send(to: message.from, .preVoteResponse(VoteResponse(granted: false)))
        default:
            break
        }
    }

    /// Raft §5.2 and §5.4.1: one vote per term, only for a log at least as up to date as ours.
    /// And only from a node the configuration lists as it is (``isListed``): a member that
    /// lost its disk and came back empty would grant any candidate its vote, and a candidate
    /// missing a committed entry could win with it. A learner does vote (as in etcd): it may
    /// be a voter in a configuration it has not received yet.
    private mutating func handleVoteRequest(_ message: Message, _ request: VoteRequest, preVote: Bool) {
        let canVote = vote == message.from
            || (vote == nil && leader == nil)
            || (preVote && message.term > term)
        let listed = config.incarnation == 0 || isListed
        let grant = listed && canVote && log.isUpToDate(lastIndex: request.lastIndex, lastTerm: request.lastTerm)
        let response = VoteResponse(granted: grant)
        if preVote {
            send(to: message.from, term: grant ? message.term : term, .preVoteResponse(response))
        } else {
            if grant {
                // The vote must be durable before the response leaves: the response goes into
                // messagesAfterPersist and the vote into the next HardState.
                vote = message.from
                electionElapsed = 0
            }
            send(to: message.from, .voteResponse(response))
        }
    }

    private mutating func stepFollower(_ message: Message) {
        switch message.kind {
        case .append(let append):
            electionElapsed = 0
            leader = message.from
            handleAppend(message, append)
        case .heartbeat(let heartbeat):
            electionElapsed = 0
            leader = message.from
            handleHeartbeat(message, heartbeat)
        case .snapshot(let metadata):
            electionElapsed = 0
            leader = message.from
            handleSnapshot(message, metadata)
        case .timeoutNow:
            // Thesis §3.10: the leader hands over; campaign at once, skipping pre-vote.
            if isPromotable { campaign(preVote: false, transfer: true) }
        case .readIndexResponse(let response):
            readStates.append(ReadState(index: response.index, context: response.context))
        default:
            break
        }
    }

    private mutating func stepCandidate(_ message: Message) {
        switch message.kind {
        case .append(let append):
            // Raft §5.2: a leader of our term exists; we lost.
            becomeFollower(term: message.term, leader: message.from)
            handleAppend(message, append)
        case .heartbeat(let heartbeat):
            becomeFollower(term: message.term, leader: message.from)
            handleHeartbeat(message, heartbeat)
        case .snapshot(let metadata):
            becomeFollower(term: message.term, leader: message.from)
            handleSnapshot(message, metadata)
        case .voteResponse(let response) where role == .candidate:
            recordVote(from: message.from, granted: response.granted, preVote: false)
        case .preVoteResponse(let response) where role == .preCandidate:
            recordVote(from: message.from, granted: response.granted, preVote: true)
        default:
            break
        }
    }

    private mutating func recordVote(from node: NodeID, granted: Bool, preVote: Bool) {
        guard votes[node] == nil else { return }
        votes[node] = granted
        switch tallyVotes() {
        case .won:
            if preVote { campaign(preVote: false, transfer: false) } else { becomeLeader() }
        case .lost:
            becomeFollower(term: term, leader: nil)
        case .pending:
            break
        }
    }

    // MARK: Follower side of replication

    /// Raft §5.3: accept entries only if our log holds prevIndex with prevTerm.
    mutating func handleAppend(_ message: Message, _ append: AppendEntries) {
        if append.prevIndex < log.committed {
            // Everything up to commit already matches any leader's log (§5.4.3).
            send(to: message.from, .appendResponse(AppendResponse(index: log.committed)))
            return
        }
        guard log.matchTerm(append.prevIndex, append.prevTerm) else {
            let hint = log.findConflictByTerm(min(append.prevIndex, log.lastIndex), append.prevTerm)
            send(to: message.from, .appendResponse(AppendResponse(
                index: append.prevIndex, rejected: true, hintIndex: hint.index, hintTerm: hint.term)))
            return
        }
        let lastNewIndex = append.prevIndex + UInt64(append.entries.count)
        if let conflict = log.findConflict(append.entries) {
            precondition(conflict > log.committed, "conflict \(conflict) at or below commit \(log.committed)")
            let start = Int(conflict.rawValue - append.entries[0].index.rawValue)
            appendToLog(Array(append.entries[start...]))
        }
        // Only what this message proved to match may be committed (Figure 2, rule 5).
        log.commitTo(min(append.commit, lastNewIndex))
        send(to: message.from, .appendResponse(AppendResponse(index: lastNewIndex)))
    }

    mutating func handleHeartbeat(_ message: Message, _ heartbeat: Heartbeat) {
        log.commitTo(heartbeat.commit)
        send(to: message.from, .heartbeatResponse(HeartbeatResponse(readRound: heartbeat.readRound)))
    }

    /// Raft §7: install the leader's snapshot unless our log already holds its last entry.
    mutating func handleSnapshot(_ message: Message, _ metadata: SnapshotMetadata) {
        if metadata.index <= log.committed {
            send(to: message.from, .appendResponse(AppendResponse(index: log.committed)))
            return
        }
        if log.matchTerm(metadata.index, metadata.term) {
            // Our log already has it; just learn that it is committed.
            log.commitTo(metadata.index)
            send(to: message.from, .appendResponse(AppendResponse(index: log.committed)))
            return
        }
        log.restore(metadata)
        let before = configurations.current
        configurations.reset(metadata)
        if configurations.current != before { configurationChanged() }
        send(to: message.from, .appendResponse(AppendResponse(index: log.lastIndex)))
    }

    /// Appends to the log and makes any configuration in the new entries take effect now
    /// (thesis §4.1: a server uses the latest configuration in its log, committed or not).
    mutating func appendToLog(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        let before = configurations.current
        configurations.truncate(from: first.index)
        log.append(entries)
        for entry in entries where entry.kind == .configChange { configurations.record(entry) }
        if configurations.current != before { configurationChanged() }
    }
}
