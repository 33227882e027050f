import KeyperRaft

/// Something a client waits for, with the time after which it gives up.
struct Waiter: Sendable {
    let continuation: CheckedContinuation<Void, any Error>
    let deadline: ContinuousClock.Instant

    func succeed() { continuation.resume() }
    func fail(_ error: APIError) { continuation.resume(throwing: error) }
}

/// A client write on its way into the log.
struct PendingProposal: Sendable {
    var request: RequestID
    var data: [UInt8]
    var waiter: Waiter
}

/// A membership or leadership request from the HTTP API, run on the loop.
enum AdminRequest: Sendable {
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

    static func shuttingDown() -> APIError {
        APIError(.serviceUnavailable, code: "shutting_down", "the node is shutting down; retry on another node")
    }
}
