/// Entries not yet persisted: they live here until `advance` says the shell wrote them.
struct UnstableLog: Sendable {
    /// A snapshot received from the leader, not yet installed by the shell.
    var snapshot: SnapshotMetadata?
    /// Invariant: entries[k].index == offset + k.
    var entries: [Entry] = []
    var offset: LogIndex

    var lastIndex: LogIndex? {
        if let last = entries.last { return last.index }
        return snapshot?.index
    }

    func term(at index: LogIndex) -> Term? {
        if index < offset {
            if let snapshot, snapshot.index == index { return snapshot.term }
            return nil
        }
        guard index.rawValue - offset.rawValue < UInt64(entries.count) else { return nil }
        return entries[Int(index.rawValue - offset.rawValue)].term
    }

    /// Appends, dropping any unstable entry at or after `newEntries[0].index` first.
    mutating func truncateAndAppend(_ newEntries: [Entry]) {
        guard let first = newEntries.first?.index else { return }
        if first == offset + UInt64(entries.count) {
            entries.append(contentsOf: newEntries)
        } else if first <= offset {
            // Everything unstable is replaced; the shell's `append` truncates the stable suffix.
            offset = first
            entries = newEntries
        } else {
            entries.removeSubrange(Int(first.rawValue - offset.rawValue)...)
            entries.append(contentsOf: newEntries)
        }
    }

    /// The shell persisted entries through `index`; forget them unless they were since replaced.
    mutating func stableTo(_ index: LogIndex, term: Term) {
        guard self.term(at: index) == term, index >= offset else { return }
        entries.removeFirst(Int(index.rawValue - offset.rawValue) + 1)
        offset = index.next()
    }

    mutating func stableSnapshotTo(_ index: LogIndex) {
        if snapshot?.index == index { snapshot = nil }
    }

    mutating func restore(_ metadata: SnapshotMetadata) {
        offset = metadata.index.next()
        entries = []
        snapshot = metadata
    }
}

/// The log as the core sees it: stable storage followed by the unstable tail (etcd's raftLog).
struct RaftLog: Sendable {
    let storage: any RaftStorage
    var unstable: UnstableLog
    /// Highest index known committed. Invariant: committed <= lastIndex.
    private(set) var committed: LogIndex
    /// Highest index the shell has applied. Invariant: applied <= committed.
    private(set) var applied: LogIndex

    init(storage: any RaftStorage, committed: LogIndex, applied: LogIndex) {
        self.storage = storage
        let last = storage.lastIndex
        let snapshotIndex = storage.snapshotMetadata.index
        unstable = UnstableLog(offset: last.next())
        // A snapshot is committed by definition, even if the saved hard state is older.
        self.committed = max(committed, snapshotIndex)
        self.applied = max(applied, snapshotIndex)
        precondition(self.committed <= last, "committed=\(self.committed) lastIndex=\(last)")
        precondition(self.applied <= self.committed, "applied=\(self.applied) committed=\(self.committed)")
    }

    var firstIndex: LogIndex {
        if let snapshot = unstable.snapshot { return snapshot.index.next() }
        return storage.firstIndex
    }

    var lastIndex: LogIndex { unstable.lastIndex ?? storage.lastIndex }

    /// The last index written to stable storage (what this node may acknowledge).
    var stableLastIndex: LogIndex {
        if unstable.snapshot != nil { return unstable.offset.previous() }
        return unstable.entries.isEmpty ? lastIndex : unstable.offset.previous()
    }

    var lastTerm: Term {
        guard let term = try? term(at: lastIndex) else {
            preconditionFailure("no term for lastIndex=\(lastIndex)")
        }
        return term
    }

    func term(at index: LogIndex) throws(RaftError) -> Term {
        let dummy = firstIndex.previous()
        if index < dummy { throw .compacted }
        if index > lastIndex { throw .unavailable }
        if let term = unstable.term(at: index) { return term }
        return try storage.term(at: index)
    }

    func matchTerm(_ index: LogIndex, _ term: Term) -> Bool {
        (try? self.term(at: index)) == term
    }

    /// Raft §5.4.1: a log is at least as up to date if its last term is higher, or equal with an
    /// index at least as high.
    func isUpToDate(lastIndex otherIndex: LogIndex, lastTerm otherTerm: Term) -> Bool {
        let myTerm = lastTerm
        return otherTerm > myTerm || (otherTerm == myTerm && otherIndex >= lastIndex)
    }

    /// Entries in `lowIndex..<highIndex`, at most `bytesMax` payload bytes (at least one entry).
    func entries(from lowIndex: LogIndex, to highIndex: LogIndex, bytesMax: Int) throws(RaftError) -> [Entry] {
        precondition(lowIndex <= highIndex, "lowIndex=\(lowIndex) highIndex=\(highIndex)")
        if lowIndex < firstIndex { throw .compacted }
        if highIndex > lastIndex.next() { throw .unavailable }
        if lowIndex == highIndex { return [] }
        var result: [Entry] = []
        let offset = unstable.offset
        if lowIndex < offset {
            result = try storage.entries(from: lowIndex, to: min(highIndex, offset), bytesMax: bytesMax)
            // Stop if storage already filled the budget.
            if let last = result.last, last.index.next() < min(highIndex, offset) { return result }
        }
        if highIndex > offset {
            let low = max(lowIndex, offset)
            let slice = unstable.entries[Int(low.rawValue - offset.rawValue)..<Int(highIndex.rawValue - offset.rawValue)]
            if result.isEmpty { return limitBytes(slice, bytesMax: bytesMax) }
            let used = result.reduce(0) { $0 + $1.sizeBytes }
            if used < bytesMax {
                var more = limitBytes(slice, bytesMax: bytesMax - used)
                if let first = more.first, used + first.sizeBytes > bytesMax { more = [] }
                result.append(contentsOf: more)
            }
        }
        return result
    }

    /// The first entry whose term differs from ours at its index, or nil if all match (Raft §5.3).
    func findConflict(_ entries: [Entry]) -> LogIndex? {
        for entry in entries where !matchTerm(entry.index, entry.term) { return entry.index }
        return nil
    }

    /// The largest index <= `index` whose term is <= `term`: where a rejected leader should
    /// probe next (fast back-off, etcd's findConflictByTerm). Terms are non-decreasing along the
    /// log, so the walk only passes entries of terms above `term`.
    func findConflictByTerm(_ index: LogIndex, _ term: Term) -> (index: LogIndex, term: Term) {
        var candidate = min(index, lastIndex)
        while true {
            guard let found = try? self.term(at: candidate) else { return (candidate, .zero) }
            if found <= term || candidate == .zero { return (candidate, found) }
            candidate = candidate.previous()
        }
    }

    mutating func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index > committed, "overwriting committed: first=\(first.index) committed=\(committed)")
        precondition(first.index <= lastIndex.next(), "gap: first=\(first.index) lastIndex=\(lastIndex)")
        unstable.truncateAndAppend(entries)
    }

    mutating func commitTo(_ index: LogIndex) {
        guard index > committed else { return }
        precondition(index <= lastIndex, "commit=\(index) beyond lastIndex=\(lastIndex)")
        committed = index
    }

    mutating func appliedTo(_ index: LogIndex) {
        guard index > applied else { return }
        precondition(index <= committed, "applied=\(index) committed=\(committed)")
        applied = index
    }

    mutating func restore(_ metadata: SnapshotMetadata) {
        precondition(metadata.index > committed, "snapshot \(metadata.index) not beyond commit \(committed)")
        committed = metadata.index
        unstable.restore(metadata)
    }

    /// Committed entries the shell has not applied yet, bounded by `bytesMax`. None while a
    /// snapshot waits to be installed: it must land first.
    func nextCommittedEntries(bytesMax: Int) -> [Entry] {
        guard unstable.snapshot == nil, applied < committed else { return [] }
        guard let result = try? entries(from: applied.next(), to: committed.next(), bytesMax: bytesMax) else {
            preconditionFailure("committed entries \(applied.next())...\(committed) not readable")
        }
        return result
    }

    var hasCommittedEntriesToApply: Bool { unstable.snapshot == nil && applied < committed }
}
