import KeyperBase
import KeyperRaft

/// How something a client waited for turned out, when it did not fail.
package enum WaitOutcome: Sendable {
    case done
    /// A join: the node was added as a learner and is promoted to voter once it has caught
    /// up, which did not happen within the request timeout (HTTP 202).
    case joinedAsLearner
}

/// Something a client waits for, with the moment (on the replica's clock) it gives up.
/// Answered exactly once: by success, by a failure, or at its deadline.
package struct Waiter: Sendable {
    package let deadline: Moment
    private let answer: @Sendable (Result<WaitOutcome, ReplicaError>) -> Void

    package init(deadline: Moment, answer: @escaping @Sendable (Result<WaitOutcome, ReplicaError>) -> Void) {
        self.deadline = deadline
        self.answer = answer
    }

    func succeed(_ outcome: WaitOutcome = .done) { answer(.success(outcome)) }
    func fail(_ error: ReplicaError) { answer(.failure(error)) }
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
package struct PendingProposal: Sendable {
    package var request: RequestID
    package var data: [UInt8]
    package var waiter: Waiter

    package init(request: RequestID, data: [UInt8], waiter: Waiter) {
        self.request = request
        self.data = data
        self.waiter = waiter
    }
}

/// A membership or leadership request of a client.
package enum AdminRequest: Sendable {
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

/// What reached the replica since its last run: peer records, client writes, reads and
/// membership requests, taken in one go.
package struct ReplicaInput: Sendable {
    package var records: [(from: FrameOrigin, record: PeerRecord)] = []
    package var proposals: [PendingProposal] = []
    package var reads: [Waiter] = []
    package var admin: [AdminRequest] = []

    package init() {}

    package var isEmpty: Bool { records.isEmpty && proposals.isEmpty && reads.isEmpty && admin.isEmpty }

    /// Answers every client in it: the replica will not run it.
    package func refuseAll(_ error: ReplicaError = .shuttingDown) {
        for proposal in proposals { proposal.waiter.fail(error) }
        for waiter in reads { waiter.fail(error) }
        for request in admin { request.waiter.fail(error) }
    }
}
