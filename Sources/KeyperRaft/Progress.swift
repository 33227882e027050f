/// Last indexes of appends sent to one follower and not yet acknowledged. Bounded by
/// `Config.inflightAppendsMax`: a full window pauses sending (the overflow behaviour is "wait").
struct Inflights: Sendable {
    let capacity: Int
    // Invariant: strictly increasing.
    private(set) var lastIndexes: [LogIndex] = []

    init(capacity: Int) { self.capacity = capacity }

    var isFull: Bool { lastIndexes.count >= capacity }
    var count: Int { lastIndexes.count }

    mutating func add(_ index: LogIndex) {
        precondition(!isFull, "inflights full: \(count)")
        precondition(lastIndexes.last.map { $0 < index } ?? true, "inflight \(index) after \(lastIndexes.last!)")
        lastIndexes.append(index)
    }

    mutating func free(through index: LogIndex) {
        let freed = lastIndexes.prefix { $0 <= index }.count
        lastIndexes.removeFirst(freed)
    }

    mutating func freeFirst() {
        if !lastIndexes.isEmpty { lastIndexes.removeFirst() }
    }

    mutating func reset() { lastIndexes.removeAll(keepingCapacity: true) }
}

/// What a leader knows of one follower's log (Raft §5.3 nextIndex/matchIndex, plus etcd's
/// flow-control states).
struct Progress: Sendable {
    enum State: Sendable, Hashable {
        /// One append at a time until the follower's position is known.
        case probe
        /// Position known: stream appends, pipelined up to the inflight bound.
        case replicate
        /// Entries it needs are compacted: a snapshot is on its way.
        case snapshot
    }

    /// Invariant: match < next.
    var match: LogIndex
    var next: LogIndex
    var state: State = .probe
    /// Probe state: an append is out and unanswered, wait for it or for a heartbeat response.
    var probeSent = false
    var pendingSnapshot: LogIndex = .zero
    /// Ticks spent in the snapshot state, so a lost snapshot or reply does not stall us forever.
    var snapshotTicks = 0
    /// Heard from it since the last check-quorum round (thesis §6.2).
    var recentActive = false
    var inflights: Inflights

    init(next: LogIndex, inflightsMax: Int) {
        match = .zero
        self.next = next
        inflights = Inflights(capacity: inflightsMax)
    }

    var isPaused: Bool {
        switch state {
        case .probe: probeSent
        case .replicate: inflights.isFull
        case .snapshot: true
        }
    }

    mutating func becomeProbe() {
        state = .probe
        next = match.next()
        probeSent = false
        pendingSnapshot = .zero
        inflights.reset()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match.next()
        probeSent = false
        pendingSnapshot = .zero
        inflights.reset()
    }

    mutating func becomeSnapshot(_ index: LogIndex) {
        state = .snapshot
        pendingSnapshot = index
        snapshotTicks = 0
        probeSent = false
        inflights.reset()
    }

    /// A success response for `index`. Returns whether match moved.
    mutating func maybeUpdate(_ index: LogIndex) -> Bool {
        var updated = false
        if match < index {
            match = index
            probeSent = false
            updated = true
        }
        next = max(next, index.next())
        return updated
    }

    /// A rejection of `rejected` (the prevIndex we sent). Returns false for stale rejections.
    mutating func maybeDecrease(rejected: LogIndex, probeHint: LogIndex) -> Bool {
        if state == .replicate {
            // Anything at or below match is an old message: match cannot go back.
            if rejected <= match { return false }
            next = match.next()
            return true
        }
        // Probe: only the answer to the latest probe counts.
        if next.previous() != rejected { return false }
        next = max(min(rejected, probeHint.next()), match.next())
        probeSent = false
        return true
    }

    /// Book-keeping after sending an append whose last entry is `lastIndex` (nil if empty).
    mutating func sentAppend(lastIndex: LogIndex?) {
        switch state {
        case .replicate:
            if let lastIndex {
                next = lastIndex.next()
                inflights.add(lastIndex)
            }
        case .probe:
            probeSent = true
        case .snapshot:
            preconditionFailure("append sent in snapshot state")
        }
    }
}
