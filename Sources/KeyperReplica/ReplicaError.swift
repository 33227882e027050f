import KeyperRaft
import KeyperWire

/// Why the replica did not do what a client asked: a domain failure, whether the request may
/// still take effect (``Outcome``), and a message for people.
///
/// The HTTP layer alone turns a ``Kind`` into a status and a JSON `code`; a follower's
/// forwarded write refused by the leader crosses the peer connection as this value (its kind's
/// and outcome's tags and the message), never as an HTTP status. Tags are part of the peer
/// protocol: never renumber one.
package struct ReplicaError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What a failed request may still do. A client may retry a `notApplied` write as it is; an
    /// `unknown` one was proposed and may still commit, so it reads before it retries (or makes
    /// the write idempotent). The cluster simulation holds the replica to every `notApplied`.
    package enum Outcome: UInt8, Sendable {
        /// Nothing was or will be applied: refused, or never proposed (and every read).
        case notApplied = 1
        /// A write or membership change was proposed and may still be applied, now or later.
        case unknown = 2
    }

    package enum Kind: UInt8, Sendable, CaseIterable {
        /// No leader is known (an election is under way, or this node is cut off).
        case noLeader = 1
        /// The request needs the leader and this node is not it.
        case notLeader
        /// Not confirmed within the request timeout; the outcome says what may still happen.
        case timeout
        /// Leadership changed before the request finished; it may or may not have taken effect.
        case leaderChanged
        /// Too much in flight; retry later.
        case overloaded
        /// The disk is full: nothing was written.
        case diskFull
        /// The node is shutting down.
        case shuttingDown
        /// The node is giving up its own history to join another cluster.
        case joiningCluster
        /// The leader dropped the proposal (for example during a leadership transfer).
        case proposalDropped
        /// The entry exceeds the size limit.
        case entryTooLarge
        /// Leadership is being transferred; retry on the new leader.
        case leaderTransfer
        case membershipChangeInProgress
        case invalidMembershipChange
        case notAVoter
        case memberExists
        case addressInUse
        case joinRefused
        case joinUnreachable
        case joinInProgress
        /// The learner is being promoted, and the request asked for one that stays a learner.
        case memberIsPromoting
        /// The learner asked to stay one, and the request asked for a voter.
        case memberIsLearner
        case memberNotFound
        case noTransferTarget
        /// A forwarded write that is not a well-formed command of a member.
        case invalidForward
        /// A bug or an unexpected condition: the message says what.
        case `internal`
    }

    package var kind: Kind
    package var outcome: Outcome
    package var message: String

    /// `outcome` defaults to what a failure of `kind` usually means (``Kind/usualOutcome``).
    package init(_ kind: Kind, _ message: String, outcome: Outcome? = nil) {
        self.kind = kind
        self.outcome = outcome ?? kind.usualOutcome
        self.message = message
    }

    package var description: String { "\(kind) (\(outcome)): \(message)" }

    /// Whatever was in flight may still take effect: a write or membership change proposed
    /// before the shutdown can commit after it.
    package static let shuttingDown = ReplicaError(.shuttingDown,
        "the node is shutting down; a write or membership change it had accepted may or may not be applied; retry on another node")

    package static let diskFull = ReplicaError(.diskFull, "the disk is full; the write was not applied")

    /// A refusal of the Raft core, as the client's failure.
    package init(_ error: RaftError) {
        switch error {
        case .notLeader:
            self.init(.noLeader, "this node is not the leader and no leader is known")
        case .proposalDropped(let reason):
            self.init(.proposalDropped, "the leader dropped the proposal (\(reason)); retry")
        case .entryTooLarge(let bytes, let bytesMax):
            self.init(.entryTooLarge, "the entry is \(bytes) bytes; the limit is \(bytesMax)")
        case .uncommittedLimit:
            self.init(.overloaded, "too many uncommitted writes; retry later")
        case .readLimit:
            self.init(.overloaded, "too many reads waiting; retry later")
        case .transferInProgress(let target):
            self.init(.leaderTransfer, "leadership is moving to \(target); retry")
        case .configChangeInProgress:
            self.init(.membershipChangeInProgress, "another membership change is not committed yet; retry")
        case .invalidConfChange(let reason):
            self.init(.invalidMembershipChange, reason)
        case .notVoter(let node):
            self.init(.notAVoter, "\(node) is not a voting member")
        default:
            self.init(.internal, "raft: \(error)")
        }
    }

    // MARK: Wire form (in a forwarded write's refusal)

    func encode(to writer: inout ByteWriter) {
        writer.writeUInt8(kind.rawValue)
        writer.writeUInt8(outcome.rawValue)
        writer.writeString(message)
    }

    init(from reader: inout ByteReader) throws(WireError) {
        let offset = reader.position
        guard let kind = Kind(rawValue: try reader.readUInt8()) else { throw .invalidValue(field: "failure kind", offset: offset) }
        let outcomeOffset = reader.position
        guard let outcome = Outcome(rawValue: try reader.readUInt8()) else {
            throw .invalidValue(field: "failure outcome", offset: outcomeOffset)
        }
        self.init(kind, try reader.readString(), outcome: outcome)
    }
}

extension ReplicaError.Kind {
    /// Refusals apply nothing; failures of a request already under way (a timeout, a leader
    /// change, a shutdown, a reset) leave it unknown. A site that knows better says so.
    package var usualOutcome: ReplicaError.Outcome {
        switch self {
        case .timeout, .leaderChanged, .shuttingDown, .joiningCluster, .internal: .unknown
        default: .notApplied
        }
    }
}
