extension RawNode {
    var softState: SoftState { SoftState(leader: leader, role: role) }
    var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }

    /// Whether `ready()` has anything to hand out.
    public var hasReady: Bool {
        if readyOutstanding { return false }
        return softState != previousSoftState
            || hardState != previousHardState
            || log.unstable.snapshot != nil
            || !log.unstable.entries.isEmpty
            || log.hasCommittedEntriesToApply
            || !outbox.isEmpty
            || !readStates.isEmpty
            || !droppedReads.isEmpty
            || (role == .leader && (broadcastPending || reads.hasUnsentRound))
    }

    /// Collects the work to do. Exactly one `Ready` may be outstanding: handle it (see `Ready`),
    /// then pass it to `advance(_:)`. Steps and ticks may happen in between.
    public mutating func ready() -> Ready {
        precondition(!readyOutstanding, "ready() called twice without advance()")
        if role == .leader {
            // Deferred work, batched across every proposal and read since the last Ready.
            if broadcastPending {
                broadcastPending = false
                broadcastAppends()
            }
            if reads.hasUnsentRound { startReadRound() }
        }
        var ready = Ready()
        let soft = softState
        if soft != previousSoftState {
            ready.softState = soft
            previousSoftState = soft
        }
        let hard = hardState
        let voteChanged = hard.term != previousHardState.term || hard.vote != previousHardState.vote
        if hard != previousHardState {
            ready.hardState = hard
            previousHardState = hard
        }
        ready.snapshot = log.unstable.snapshot
        ready.entries = log.unstable.entries
        ready.mustSync = ready.snapshot != nil || !ready.entries.isEmpty || voteChanged
        ready.committedEntries = log.nextCommittedEntries(bytesMax: config.applyBytesMax)
        for message in outbox {
            if message.maySendBeforePersist {
                ready.messages.append(message)
            } else {
                ready.messagesAfterPersist.append(message)
            }
        }
        outbox.removeAll(keepingCapacity: true)
        ready.readStates = readStates
        readStates.removeAll()
        ready.droppedReads = droppedReads
        droppedReads.removeAll()
        readyOutstanding = true
        return ready
    }

    /// The shell has persisted, sent and applied everything in `ready`.
    public mutating func advance(_ ready: Ready) {
        precondition(readyOutstanding, "advance() without ready()")
        readyOutstanding = false
        if let snapshot = ready.snapshot {
            log.unstable.stableSnapshotTo(snapshot.index)
            log.appliedTo(snapshot.index)
        }
        if let last = ready.entries.last { log.unstable.stableTo(last.index, term: last.term) }
        if let last = ready.committedEntries.last { log.appliedTo(last.index) }
        // Our own persisted entries now count towards commit (thesis §10.2.1).
        if role == .leader && !ready.entries.isEmpty && maybeCommit() { broadcastPending = true }
    }
}
