import KeyperRaft

/// How something a client waited for turned out, when it did not fail.
enum WaitOutcome: Sendable {
    case done
    /// A join: the node was added as a learner and is promoted to voter once it has caught
    /// up, which did not happen within the request timeout (HTTP 202).
    case joinedAsLearner
}

/// Something a client waits for, with the time after which it gives up.
struct Waiter: Sendable {
    let continuation: CheckedContinuation<WaitOutcome, any Error>
    let deadline: ContinuousClock.Instant

    func succeed(_ outcome: WaitOutcome = .done) { continuation.resume(returning: outcome) }
    func fail(_ error: APIError) { continuation.resume(throwing: error) }
}

/// Who waits for a membership change the leader proposed.
enum ChangeOwner: Sendable {
    /// A client's removal.
    case client(Waiter)
    /// A step of the join of this node (``JoinInProgress``), by its token.
    case join(NodeID, token: UInt64)
}

/// A join on the leader, from the node's answer to the adopt request until it is a voter (or
/// a learner, when it asked to be one). A node that comes back with another incarnation (a
/// new data directory) is a new member: the old incarnation is removed first.
struct JoinInProgress: Sendable {
    enum Stage: Sendable {
        case removingOldIncarnation
        case addingLearner
        /// Added as a learner; waiting for the leader to promote it once it has caught up.
        case promoting
    }

    /// The adopt request's token: unique per join attempt.
    var token: UInt64
    var addresses: MemberAddresses
    var incarnation: UInt64
    var stage: Stage
    var waiter: Waiter
}

/// A client write on its way into the log.
struct PendingProposal: Sendable {
    var request: RequestID
    var data: [UInt8]
    var waiter: Waiter
}

/// A membership or leadership request from the HTTP API, run on the loop.
enum AdminRequest: Sendable {
    /// `addresses.promote` false: the node asked to stay a learner.
    case join(node: NodeID, addresses: MemberAddresses, waiter: Waiter)
    case remove(node: NodeID, waiter: Waiter)
    case transfer(target: NodeID?, waiter: Waiter)

    var waiter: Waiter {
        switch self {
        case .join(_, _, let waiter), .remove(_, let waiter), .transfer(_, let waiter): waiter
        }
    }
}

/// Turns a refusal of the core into what the client is told.
enum RaftFailure {
    static func map(_ error: RaftError) -> APIError {
        switch error {
        case .notLeader:
            return .noLeader("this node is not the leader and no leader is known")
        case .proposalDropped(let reason):
            return APIError(.serviceUnavailable, code: "proposal_dropped", "the leader dropped the proposal (\(reason)); retry")
        case .entryTooLarge(let bytes, let bytesMax):
            return APIError(.contentTooLarge, code: "value_too_large", "the entry is \(bytes) bytes; the limit is \(bytesMax)")
        case .uncommittedLimit:
            return APIError(.serviceUnavailable, code: "overloaded", "too many uncommitted writes; retry later")
        case .readLimit:
            return APIError(.serviceUnavailable, code: "overloaded", "too many reads waiting; retry later")
        case .transferInProgress(let target):
            return APIError(.serviceUnavailable, code: "leader_transfer", "leadership is moving to \(target); retry")
        case .configChangeInProgress:
            return APIError(.conflict, code: "membership_change_in_progress", "another membership change is not committed yet; retry")
        case .invalidConfChange(let reason):
            return APIError(.conflict, code: "invalid_membership_change", reason)
        case .notVoter(let node):
            return APIError(.badRequest, code: "not_a_voter", "\(node) is not a voting member")
        default:
            return .internalError("raft: \(error)")
        }
    }
}

extension APIError {
    static func noLeader(_ message: String) -> APIError {
        APIError(.serviceUnavailable, code: "no_leader", message)
    }

    /// Whatever was in flight may still take effect: a write or membership change proposed
    /// before the shutdown can commit after it.
    static func shuttingDown() -> APIError {
        APIError(.serviceUnavailable, code: "shutting_down",
                 "the node is shutting down; a write or membership change it had accepted may or may not be applied; retry on another node")
    }
}
