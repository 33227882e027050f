// Core value types shared by the Raft core, the WAL and the transport.
// This file is the contract between modules: fields may be added, names must not change
// without telling everyone who depends on them.

/// A Raft term (Raft §5.1). Terms only grow.
public struct Term: RawRepresentable, Comparable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static let zero = Term(0)
    public static func < (lhs: Term, rhs: Term) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "t\(rawValue)" }
    public func next() -> Term { Term(rawValue + 1) }
}

/// A position in the replicated log. Index 0 is the empty prefix; the first entry is 1.
public struct LogIndex: RawRepresentable, Comparable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static let zero = LogIndex(0)
    public static func < (lhs: LogIndex, rhs: LogIndex) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "i\(rawValue)" }
    public func next() -> LogIndex { LogIndex(rawValue + 1) }
    public func previous() -> LogIndex {
        precondition(rawValue > 0, "previous() of index 0")
        return LogIndex(rawValue - 1)
    }
    public static func + (lhs: LogIndex, rhs: UInt64) -> LogIndex { LogIndex(lhs.rawValue + rhs) }
    public static func - (lhs: LogIndex, rhs: UInt64) -> LogIndex { LogIndex(lhs.rawValue - rhs) }
}

/// A node's identity, as the operator named it (`--node-id node1`).
public struct NodeID: RawRepresentable, Comparable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { rawValue }
}

/// What an entry's `data` means.
public enum EntryKind: UInt8, Hashable, Sendable {
    /// Application data for the state machine. An empty normal entry is the leader's no-op.
    case normal = 0
    /// A membership change, `data` is an encoded `ConfChange` (defined by the core).
    case configChange = 1
}

/// One record of the replicated log.
public struct Entry: Hashable, Sendable {
    public var term: Term
    public var index: LogIndex
    public var kind: EntryKind
    public var data: [UInt8]
    public init(term: Term, index: LogIndex, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }
}

/// The state that must be durable before any message that depends on it is sent (Raft §5, Figure 2).
public struct HardState: Hashable, Sendable {
    public var term: Term
    public var vote: NodeID?
    public var commit: LogIndex
    public init(term: Term = .zero, vote: NodeID? = nil, commit: LogIndex = .zero) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// Cluster membership: who votes and who only receives the log (thesis §4).
public struct Configuration: Hashable, Sendable {
    public var voters: Set<NodeID>
    public var learners: Set<NodeID>
    /// The incarnation of each member's data directory, where recorded. A member that comes
    /// back with another incarnation lost its disk: it is not the member listed here, and may
    /// neither vote nor campaign until it is added again under its new one.
    /// Invariant: keys are members.
    public var incarnations: [NodeID: UInt64]
    public init(voters: Set<NodeID> = [], learners: Set<NodeID> = [], incarnations: [NodeID: UInt64] = [:]) {
        self.voters = voters
        self.learners = learners
        self.incarnations = incarnations
    }
}

/// What the core knows of a snapshot: its bytes are the shell's business.
public struct SnapshotMetadata: Hashable, Sendable {
    public var index: LogIndex
    public var term: Term
    public var configuration: Configuration
    public init(index: LogIndex = .zero, term: Term = .zero, configuration: Configuration = Configuration()) {
        self.index = index
        self.term = term
        self.configuration = configuration
    }
}
