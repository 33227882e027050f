import KeyperRaft

/// Committed entries not yet in the state machine, and the part of the lazy-apply policy that
/// depends on them alone (a failed apply is retried from here).
///
/// A follower's apply answers nobody, and one state machine append for many Readies costs far
/// less than one per Ready (under a write load it was a third of a follower's CPU): so a
/// follower lets entries gather until somebody waits for them (the replica decides that),
/// until the next tick, or until this queue says it is full.
struct ApplyQueue {
    /// How many committed entries a follower lets gather before applying them unasked.
    static let entriesMax = 1_024
    /// … or this many bytes of them.
    static let bytesMax = 4 << 20

    private(set) var entries: [Entry] = []
    private var bytes = 0

    var isEmpty: Bool { entries.isEmpty }

    /// Whether the entries make an apply due by themselves: too many, too large, or a
    /// configuration change (addresses and removals act at once).
    var mustApply: Bool {
        entries.count >= Self.entriesMax || bytes >= Self.bytesMax || entries.contains { $0.kind == .configChange }
    }

    /// Queues the entries after `applied` and after those queued already (a Ready's committed
    /// entries may have been queued, and even applied, before its sync).
    mutating func enqueue<Entries: Collection<Entry>>(_ new: Entries, applied: LogIndex) {
        let after = entries.last?.index ?? applied
        for entry in new where entry.index > after {
            entries.append(entry)
            bytes += entry.data.count
        }
    }

    /// Drops the entries through `index` (applied, or covered by an installed snapshot).
    mutating func drop(through index: LogIndex) {
        entries.removeAll { $0.index <= index }
        bytes = entries.reduce(0) { $0 + $1.data.count }
    }

    mutating func removeAll() {
        entries = []
        bytes = 0
    }
}

/// Peer records waiting for the next flush.
struct Outbox {
    /// Per peer: everything for one peer goes out in as few frames as fit.
    var batched: [NodeID: [PeerRecord]] = [:]
    /// For a node at an address not (or not yet) in the address book: adopt requests and
    /// their answers.
    var direct: [(node: NodeID, address: String, record: PeerRecord)] = []

    mutating func add(_ record: PeerRecord, to node: NodeID) {
        batched[node, default: []].append(record)
    }

    mutating func add(_ record: PeerRecord, to node: NodeID, at address: String) {
        direct.append((node, address, record))
    }
}
