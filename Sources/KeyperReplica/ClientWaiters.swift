import KeyperBase
import KeyperRaft
import KeyperStorage

/// How something a client waited for turned out, when it did not fail.
package enum WaitOutcome: Sendable {
    case done
    /// A client write was applied here: what it did (or that its condition did not hold).
    case written(KVWriteResult)
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

/// Every client a replica owes an answer, by what it waits for. All of them are answered in
/// one of three places: at their deadline (``Replica/expireWaiters(now:)``), when the replica
/// closes or gives up its history (``Replica/failAllWaiters(_:)``), or when leadership moves
/// (``Replica/leadershipLost()``); a kind added here goes into all three.
struct ClientWaiters {
    /// This node's own client writes, by request sequence, until applied here.
    var writes: [UInt64: Waiter] = [:]
    /// Writes that arrived while no leader was known.
    var writesWaitingForLeader: [PendingProposal] = []
    /// Linearizable reads: waiting for a round, in the one round in flight, or confirmed and
    /// waiting for the state machine.
    var reads: ReadBarrier
    /// Membership changes proposed by this leader, by log position, until applied.
    var memberChanges: [LogIndex: (term: Term, owner: ChangeOwner)] = [:]
    /// Membership changes waiting for the one in flight to commit (one at a time, thesis §4.1).
    var memberChangesWaiting: [(change: ConfChange, owner: ChangeOwner)] = []
    /// Joins waiting for the new node's answer to the adopt request.
    var adoptions: [UInt64: Adoption] = [:]
    /// Joins the node agreed to, until it is a voter (or the learner it asked to be).
    var joins: [NodeID: JoinInProgress] = [:]

    init(reads: ReadBarrier) {
        self.reads = reads
    }
}

/// A join waiting for the node's answer to the leader's adopt request.
struct Adoption {
    var node: NodeID
    var addresses: MemberAddresses
    var waiter: Waiter
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

    /// Answers every client in it: the replica will not run it.
    package func refuseAll(_ error: ReplicaError = .shuttingDown) {
        for proposal in proposals { proposal.waiter.fail(error) }
        for waiter in reads { waiter.fail(error) }
        for request in admin { request.waiter.fail(error) }
    }
}

// MARK: Answering every kind of waiter

extension Replica {
    /// Fails every waiter whose deadline passed by `now`, saying what may still happen.
    func expireWaiters(now: Moment) {
        func failure(_ consequence: String, _ outcome: ReplicaError.Outcome) -> ReplicaError {
            raw.leader == nil
                ? ReplicaError(.noLeader, "no leader was available within the request timeout (\(settings.requestTimeoutMs) ms); \(consequence)",
                               outcome: outcome)
                : ReplicaError(.timeout, "not confirmed within the request timeout (\(settings.requestTimeoutMs) ms); \(consequence)",
                               outcome: outcome)
        }
        let readFailure = failure("the read was not served; retry", .notApplied)
        for sequence in clients.writes.keys.sorted() {
            guard let waiter = clients.writes[sequence], waiter.deadline <= now else { continue }
            // Proposed or forwarded: it may still commit, whatever happens to the leader.
            clients.writes.removeValue(forKey: sequence)
            waiter.fail(failure("the write may or may not be applied", .unknown))
        }
        clients.writesWaitingForLeader.removeAll { proposal in
            guard proposal.waiter.deadline <= now else { return false }
            // Never proposed: it will not be applied.
            proposal.waiter.fail(failure("the write was not applied", .notApplied))
            return true
        }
        for reader in clients.reads.expire(now: now) { reader.fail(readFailure) }
        for index in clients.memberChanges.keys.sorted() {
            guard case .client(let waiter) = clients.memberChanges[index]!.owner, waiter.deadline <= now else { continue }
            clients.memberChanges.removeValue(forKey: index)
            waiter.fail(failure("the membership change may still be applied", .unknown))
        }
        clients.memberChangesWaiting.removeAll { pending in
            guard case .client(let waiter) = pending.owner, waiter.deadline <= now else { return false }
            waiter.fail(ReplicaError(.timeout, "another membership change did not commit within the request timeout; retry",
                                     outcome: .notApplied))
            return true
        }
        for node in clients.joins.keys.sorted() {
            guard let join = clients.joins[node], join.waiter.deadline <= now else { continue }
            clients.joins.removeValue(forKey: node)
            if join.stage == .promoting {
                join.waiter.succeed(.joinedAsLearner)
            } else {
                join.waiter.fail(failure("the membership change may still be applied", .unknown))
            }
        }
        for token in clients.adoptions.keys.sorted() {
            guard let adoption = clients.adoptions[token], adoption.waiter.deadline <= now else { continue }
            clients.adoptions.removeValue(forKey: token)
            forgetUnlessMember(adoption.node)
            adoption.waiter.fail(ReplicaError(.joinUnreachable,
                                              "\(adoption.node) did not answer at \(adoption.addresses.raft) within the request timeout"))
        }
    }

    /// Answers every waiting client with `error`: every kind of waiter is listed here.
    func failAllWaiters(_ error: ReplicaError) {
        // In key order, so a simulation answers its clients in the same order on every run.
        for sequence in clients.writes.keys.sorted() { clients.writes[sequence]!.fail(error) }
        clients.writes = [:]
        for proposal in clients.writesWaitingForLeader { proposal.waiter.fail(error) }
        clients.writesWaitingForLeader = []
        for reader in clients.reads.takeAll() { reader.fail(error) }
        for index in clients.memberChanges.keys.sorted() { fail(clients.memberChanges[index]!.owner, error) }
        clients.memberChanges = [:]
        for pending in clients.memberChangesWaiting { fail(pending.owner, error) }
        clients.memberChangesWaiting = []
        for node in clients.joins.keys.sorted() { clients.joins[node]!.waiter.fail(error) }
        clients.joins = [:]
        for token in clients.adoptions.keys.sorted() { clients.adoptions[token]!.waiter.fail(error) }
        clients.adoptions = [:]
    }

    /// This node stopped leading: the membership changes it started can no longer complete here.
    func leadershipLost() {
        // A leader that stepped down can no longer complete membership changes it started.
        for index in clients.memberChanges.keys.sorted() {
            fail(clients.memberChanges[index]!.owner, ReplicaError(.leaderChanged,
                                             "leadership changed before the membership change committed; check /v1/status and retry"))
        }
        clients.memberChanges = [:]
        for pending in clients.memberChangesWaiting {
            fail(pending.owner, ReplicaError(.leaderChanged, "leadership changed; retry on the new leader", outcome: .notApplied))
        }
        clients.memberChangesWaiting = []
        // A learner being promoted stays in the configuration, marked for promotion: the
        // next leader promotes it.
        for node in clients.joins.keys.sorted() where clients.joins[node]!.stage == .promoting {
            let join = clients.joins[node]!
            clients.joins.removeValue(forKey: node)
            join.waiter.succeed(.joinedAsLearner)
        }
    }
}
