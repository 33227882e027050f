extension RawNode {
    // MARK: Proposals

    /// Proposes application data. Returns where the entry sits; it is committed exactly when the
    /// entry applied at that index has that term. Refusals are thrown, never silent.
    @discardableResult
    public mutating func propose(_ data: [UInt8]) throws(RaftError) -> EntryPosition {
        try appendProposal(kind: .normal, data: data)
    }

    /// Proposes one membership change (thesis §4.1). It takes effect on every node as soon as it
    /// is appended there; the next change is accepted once this one is committed.
    @discardableResult
    public mutating func proposeConfChange(_ change: ConfChange) throws(RaftError) -> EntryPosition {
        guard role == .leader else { throw .notLeader(leader: leader) }
        // A new leader first commits an entry of its term, or an uncommitted change of a previous
        // leader could combine with ours into two disjoint majorities (raft-dev, Ongaro 2015).
        guard committedInTerm else { throw .proposalDropped(reason: .leaderNotReady) }
        guard configurations.currentIndex <= log.committed else { throw .configChangeInProgress }
        try validate(change, against: configurations.current)
        return try appendProposal(kind: .configChange, data: change.encoded())
    }

    private func validate(_ change: ConfChange, against current: Configuration) throws(RaftError) {
        if change.kind != .removeNode, change.incarnation != 0, let recorded = current.incarnations[change.node],
           recorded != change.incarnation {
            throw .invalidConfChange(reason: "\(change.node) is a member under another incarnation; remove that one first")
        }
        switch change.kind {
        case .addLearner:
            if current.learners.contains(change.node) { throw .invalidConfChange(reason: "\(change.node) is already a learner") }
            if change.node == id { throw .invalidConfChange(reason: "the leader cannot demote itself; transfer first") }
        case .addVoter:
            if current.voters.contains(change.node) { throw .invalidConfChange(reason: "\(change.node) is already a voter") }
        case .removeNode:
            if !current.members.contains(change.node) { throw .invalidConfChange(reason: "\(change.node) is not a member") }
            if current.voters == [change.node] { throw .invalidConfChange(reason: "cannot remove the last voter") }
        }
    }

    private mutating func appendProposal(kind: EntryKind, data: [UInt8]) throws(RaftError) -> EntryPosition {
        guard role == .leader else { throw .notLeader(leader: leader) }
        if let target = leadTransferee { throw .transferInProgress(to: target) }
        guard configurations.current.voters.contains(id) else { throw .proposalDropped(reason: .leaderRemoving) }
        guard data.count <= config.entryBytesMax else {
            throw .entryTooLarge(bytes: data.count, bytesMax: config.entryBytesMax)
        }
        // One entry is always allowed into an empty window, so a max-size entry cannot starve.
        if uncommittedBytes > 0 && uncommittedBytes + data.count > config.uncommittedBytesMax {
            throw .uncommittedLimit(bytes: uncommittedBytes + data.count, bytesMax: config.uncommittedBytesMax)
        }
        let entry = Entry(term: term, index: log.lastIndex.next(), kind: kind, data: data)
        appendToLog([entry])
        uncommittedBytes += data.count
        uncommittedSizes.append((entry.index, data.count))
        broadcastPending = true
        return EntryPosition(index: entry.index, term: term)
    }

    // MARK: Leadership transfer

    /// Thesis §3.10: hand leadership to `target` once its log is caught up. Proposals are refused
    /// meanwhile; the transfer is abandoned if it has not happened within an election timeout.
    public mutating func transferLeadership(to target: NodeID) throws(RaftError) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        if target == id { return }
        guard configurations.current.voters.contains(target) else { throw .notVoter(target) }
        if let current = leadTransferee {
            if current == target { return }
            throw .transferInProgress(to: current)
        }
        leadTransferee = target
        electionElapsed = 0
        if progress[target]?.match == log.lastIndex {
            send(to: target, .timeoutNow)
        } else {
            _ = sendAppend(to: target, sendIfEmpty: true)
        }
    }

    // MARK: Snapshots

    /// The transport's verdict on a snapshot it streamed to `node` (etcd's ReportSnapshot).
    /// A failure sends the follower back to probing at once, which resends what it still needs;
    /// a success waits for the follower's own answer. Without any report, a follower stuck in the
    /// snapshot state is probed again after an election timeout.
    public mutating func reportSnapshot(to node: NodeID, succeeded: Bool) {
        guard role == .leader, progress[node]?.state == .snapshot else { return }
        if !succeeded {
            progress[node]!.becomeProbe()
            sendAppend(to: node, sendIfEmpty: true)
        }
    }

    // MARK: Replication

    /// Sends `to` the next batch of entries, or a snapshot if they are compacted. Returns
    /// whether anything was sent.
    @discardableResult
    mutating func sendAppend(to node: NodeID, sendIfEmpty: Bool) -> Bool {
        guard let current = progress[node], !current.isPaused else { return false }
        let prevIndex = current.next.previous()
        guard let prevTerm = try? log.term(at: prevIndex),
              let entries = try? log.entries(from: current.next, to: log.lastIndex.next(), bytesMax: config.appendBytesMax)
        else {
            return sendSnapshot(to: node)
        }
        if entries.isEmpty && !sendIfEmpty { return false }
        send(to: node, .append(AppendEntries(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: log.committed)))
        progress[node]!.sentAppend(lastIndex: entries.last?.index)
        return true
    }

    private mutating func sendSnapshot(to node: NodeID) -> Bool {
        let metadata = log.storage.snapshotMetadata
        precondition(metadata.index > .zero, "entries compacted but storage has no snapshot")
        progress[node]!.becomeSnapshot(metadata.index)
        send(to: node, .snapshot(metadata))
        return true
    }

    /// Pipelines as many appends as the follower's window allows (bounded by inflightAppendsMax).
    mutating func sendAppends(to node: NodeID) {
        var sent = 0
        while sent < config.inflightAppendsMax, sendAppend(to: node, sendIfEmpty: false) { sent += 1 }
    }

    mutating func broadcastAppends() {
        let commitChanged = log.committed > commitBroadcast
        commitBroadcast = log.committed
        for node in progress.keys.sorted() {
            if !sendAppend(to: node, sendIfEmpty: commitChanged) { continue }
            sendAppends(to: node)
        }
    }

    mutating func broadcastHeartbeat() {
        let round = reads.roundIssued
        for node in progress.keys.sorted() {
            let commit = min(progress[node]!.match, log.committed)
            send(to: node, .heartbeat(Heartbeat(commit: commit, readRound: round)))
        }
    }

    mutating func stepLeader(_ message: Message) {
        switch message.kind {
        case .appendResponse(let response):
            guard progress[message.from] != nil else { return }
            progress[message.from]!.recentActive = true
            if response.rejected {
                handleAppendRejection(from: message.from, response)
            } else {
                handleAppendSuccess(from: message.from, response)
            }
        case .heartbeatResponse(let response):
            guard progress[message.from] != nil else { return }
            handleHeartbeatResponse(from: message.from, response)
        case .readIndex(let request):
            guard configurations.current.members.contains(message.from) else { return }
            // A follower's request: no way to report a refusal but silence; it times out.
            try? requestRead(context: request.context, from: message.from)
        default:
            break
        }
    }

    private mutating func handleAppendRejection(from node: NodeID, _ response: AppendResponse) {
        // Fast back-off: skip every entry of a term the follower does not have.
        var probeHint = response.hintIndex
        if response.hintTerm > .zero {
            probeHint = log.findConflictByTerm(response.hintIndex, response.hintTerm).index
        }
        guard progress[node]!.maybeDecrease(rejected: response.index, probeHint: probeHint) else { return }
        if progress[node]!.state == .replicate { progress[node]!.becomeProbe() }
        sendAppend(to: node, sendIfEmpty: true)
    }

    private mutating func handleAppendSuccess(from node: NodeID, _ response: AppendResponse) {
        let wasPaused = progress[node]!.isPaused
        guard progress[node]!.maybeUpdate(response.index) else { return }
        switch progress[node]!.state {
        case .probe:
            progress[node]!.becomeReplicate()
        case .snapshot:
            if progress[node]!.match >= progress[node]!.pendingSnapshot { progress[node]!.becomeReplicate() }
        case .replicate:
            progress[node]!.inflights.free(through: response.index)
        }
        if maybeCommit() {
            broadcastPending = true
        } else if wasPaused {
            sendAppend(to: node, sendIfEmpty: false)
        }
        sendAppends(to: node)
        if node == leadTransferee, progress[node]?.match == log.lastIndex {
            send(to: node, .timeoutNow)
        }
    }

    private mutating func handleHeartbeatResponse(from node: NodeID, _ response: HeartbeatResponse) {
        progress[node]!.recentActive = true
        progress[node]!.probeSent = false
        // The window may be full of appends that were lost: free one to make progress again.
        if progress[node]!.state == .replicate && progress[node]!.inflights.isFull {
            progress[node]!.inflights.freeFirst()
        }
        // Even with nothing new to send, an append (empty if need be) re-synchronises a follower
        // whose appends were lost: it rejects the gap and we fall back to probing.
        if progress[node]!.match < log.lastIndex { sendAppend(to: node, sendIfEmpty: true) }
        if configurations.current.voters.contains(node) {
            reads.acknowledge(round: response.readRound, from: node)
            releaseConfirmedReads()
        }
    }

    // MARK: Commit

    /// The highest index stored on a quorum of voters. The leader counts itself only for what
    /// it has persisted (`advance`), although it replicates before that (thesis §10.2.1).
    func quorumMatchIndex() -> LogIndex {
        let current = configurations.current
        guard !current.voters.isEmpty else { return .zero }
        var matches: [LogIndex] = []
        matches.reserveCapacity(current.voters.count)
        for voter in current.voters {
            matches.append(voter == id ? log.stableLastIndex : progress[voter]?.match ?? .zero)
        }
        matches.sort(by: >)
        return matches[current.quorum - 1]
    }

    /// Raft §5.4.2: commit by counting replicas only an entry of the current term; earlier ones
    /// commit with it.
    @discardableResult
    mutating func maybeCommit() -> Bool {
        let candidate = quorumMatchIndex()
        guard candidate > log.committed, log.matchTerm(candidate, term) else { return false }
        log.commitTo(candidate)
        commitAdvanced()
        return true
    }

    private mutating func commitAdvanced() {
        if !committedInTerm && log.matchTerm(log.committed, term) {
            committedInTerm = true
            reads.commitReachedInTerm(index: log.committed)
            issueReadRoundIfSingleVoter()
        }
        let settled = uncommittedSizes.prefix { $0.index <= log.committed }
        for item in settled { uncommittedBytes -= item.bytes }
        uncommittedSizes.removeFirst(settled.count)
        precondition(uncommittedBytes >= 0, "uncommittedBytes=\(uncommittedBytes)")
        if !configurations.current.voters.contains(id) && configurations.currentIndex <= log.committed {
            stepDownAfterRemoval()
        }
    }

    /// Thesis §4.2.2: a leader removed from the voters steps down once the change commits,
    /// handing over to the most caught-up voter so the cluster need not wait for a timeout.
    private mutating func stepDownAfterRemoval() {
        let successor = progress
            .filter { configurations.current.voters.contains($0.key) }
            .max { ($0.value.match, $1.key) < ($1.value.match, $0.key) }
        let successorID = successor?.key
        let caughtUp = successor?.value.match == log.lastIndex
        becomeFollower(term: term, leader: nil)
        if let successorID, caughtUp { send(to: successorID, .timeoutNow) }
    }

    // MARK: Configuration

    /// The configuration in force changed (appended, truncated away, or from a snapshot).
    mutating func configurationChanged() {
        let current = configurations.current
        switch role {
        case .leader:
            for node in current.members where node != id && progress[node] == nil {
                var fresh = Progress(next: log.lastIndex.next(), inflightsMax: config.inflightAppendsMax)
                fresh.recentActive = true
                progress[node] = fresh
            }
            for node in progress.keys where !current.members.contains(node) { progress[node] = nil }
            if let target = leadTransferee, !current.voters.contains(target) { leadTransferee = nil }
            reads.forget(nodesNotIn: current.voters)
            releaseConfirmedReads()
            // A smaller quorum may already hold the entries.
            if maybeCommit() { broadcastPending = true }
        case .candidate, .preCandidate:
            if !current.voters.contains(id) { becomeFollower(term: term, leader: nil) }
        case .follower:
            break
        }
    }
}
