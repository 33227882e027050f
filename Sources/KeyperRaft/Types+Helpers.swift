// Behaviour of the shared value types declared in Types.swift.

extension Entry {
    /// The bytes an entry counts for against every byte limit: its payload only.
    /// Framing overhead belongs to the codec; an empty entry (the no-op) counts as zero.
    public var sizeBytes: Int { data.count }
}

extension Configuration {
    /// Every node that receives the log: voters and learners.
    public var members: Set<NodeID> { voters.union(learners) }

    /// How many voters make a majority (Raft §5.2). Zero voters need zero votes.
    public var quorum: Int { voters.count / 2 + 1 }

    /// The configuration after one change. Deterministic: followers replay it from the log.
    public func applying(_ change: ConfChange) -> Configuration {
        var next = self
        switch change.kind {
        case .addLearner:
            next.voters.remove(change.node)
            next.learners.insert(change.node)
        case .addVoter:
            next.learners.remove(change.node)
            next.voters.insert(change.node)
        case .removeNode:
            next.voters.remove(change.node)
            next.learners.remove(change.node)
            next.incarnations.removeValue(forKey: change.node)
        }
        // A promotion or demotion without an incarnation keeps the one recorded.
        if change.kind != .removeNode && change.incarnation != 0 { next.incarnations[change.node] = change.incarnation }
        return next
    }

    /// Whether `node` running from the data directory `incarnation` is the member listed here.
    /// Incarnation 0 means "not tracked" (the core's tests and the simulator may run without).
    public func lists(_ node: NodeID, incarnation: UInt64) -> Bool {
        members.contains(node) && incarnations[node, default: 0] == incarnation
    }
}

extension Configuration: CustomStringConvertible {
    public var description: String {
        let incarnations = incarnations.isEmpty ? "" : " incarnations=\(incarnations.sorted { $0.key < $1.key }.map { "\($0.key)@\($0.value)" })"
        return "voters=\(voters.sorted().map(\.rawValue)) learners=\(learners.sorted().map(\.rawValue))" + incarnations
    }
}

/// Where an accepted proposal sits in the log. A proposal is committed exactly when the entry
/// applied at `index` has `term`; any other entry applied there means the proposal was dropped
/// (log matching, Raft §5.3: one index holds one committed entry).
public struct EntryPosition: Hashable, Sendable, CustomStringConvertible {
    public var index: LogIndex
    public var term: Term
    public init(index: LogIndex, term: Term) {
        self.index = index
        self.term = term
    }
    public var description: String { "\(index)@\(term)" }
}
