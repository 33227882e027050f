import Testing
@testable import KeyperRaft

/// A member's data directory has an incarnation; the configuration records it. A node whose
/// incarnation the latest configuration does not list lost its disk (or part of its log): it
/// is not the member that made promises there, so it must neither vote nor campaign.
@Suite("Incarnations: a member that lost its disk does not vote as if it remembered")
struct IncarnationTests {
    static let incarnations: [NodeID: UInt64] = [n1: 11, n2: 12, n3: 13]

    /// Three voters with recorded incarnations, each node running as its recorded one.
    func cluster() -> Cluster {
        var cluster = Cluster(voters: ids("n1", "n2", "n3")) { $0.incarnation = Self.incarnations[$0.id]! }
        for id in [n1, n2, n3] {
            let storage = MemoryStorage(bootstrapping: Configuration(voters: ids("n1", "n2", "n3"), incarnations: Self.incarnations))
            cluster.nodes[id] = TestNode(id, storage: storage) { $0.incarnation = Self.incarnations[$0.id]! }
        }
        return cluster
    }

    /// The scenario: n1 leads, n2 is cut off from it; X commits on n1 and n3; n3's disk is
    /// replaced (empty log, new incarnation); n1 dies. n2 must not win with n3's vote: its
    /// log lacks X, so X would be lost.
    func replacedDiskScenario(checkIncarnation: Bool) -> (cluster: Cluster, x: EntryPosition) {
        var cluster = cluster()
        cluster.elect(n1)
        cluster.isolated = [n2]
        let x = try! cluster.propose([0x58], on: n1)
        #expect(cluster[n1].commitIndex >= x.index, "X commits on n1 and n3")
        #expect(cluster[n2].logTerm(at: x.index) == nil, "n2 lags: it does not have X")
        cluster.nodes[n3] = TestNode(n3, storage: MemoryStorage()) { $0.incarnation = checkIncarnation ? 23 : 0 }
        cluster.isolated = [n1]
        cluster.delivered = []
        cluster.tickAll(times: 100)
        return (cluster, x)
    }

    @Test("A wiped voter that comes back with a new incarnation grants no vote: X survives")
    func wipedVoterDoesNotVote() {
        let (cluster, _) = replacedDiskScenario(checkIncarnation: true)
        #expect(cluster[n2].role != .leader, "n2 won an election with the vote of a member that forgot X")
        #expect(cluster[n3].role != .leader)
        #expect(!cluster.delivered.contains { message in
            if case .voteResponse(let response) = message.kind { return message.from == n3 && response.granted }
            if case .preVoteResponse(let response) = message.kind { return message.from == n3 && response.granted }
            return false
        })
    }

    @Test("Without the incarnation check the same scenario elects n2 and X is gone (the check has teeth)")
    func withoutCheckXIsLost() {
        let (cluster, x) = replacedDiskScenario(checkIncarnation: false)
        #expect(cluster[n2].role == .leader)
        #expect(cluster[n2].logTerm(at: x.index) != x.term, "the new leader's log does not hold X")
    }

    @Test("A node listed under another incarnation neither campaigns nor votes, even with the log")
    func listedUnderAnotherIncarnation() {
        var cluster = cluster()
        cluster.elect(n1)
        // n3 restarts from its own log (all entries kept) but under a new incarnation.
        let storage = cluster.nodes[n3]!.storage
        cluster.nodes[n3] = TestNode(n3, storage: storage) { $0.incarnation = 33 }
        #expect(!cluster[n3].isPromotable)
        cluster.isolated = [n1]
        cluster.tickAll(times: 100)
        #expect(cluster.leaders.isEmpty, "n2 needs n3's vote, which it must not get")
        #expect(cluster[n3].role == .follower, "n3 must not campaign")
    }

    @Test("A new incarnation added as a learner votes once its configuration lists it, like any learner (etcd)")
    func learnerUnderItsIncarnationVotes() throws {
        var cluster = cluster()
        cluster.elect(n1)
        // Replace n3: remove the old incarnation, add the new one as a learner, then promote it.
        cluster.nodes[n3] = TestNode(n3, storage: MemoryStorage()) { $0.incarnation = 23 }
        try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .removeNode, node: n3))
        cluster.stabilize()
        #expect(cluster[n1].status.configuration.incarnations[n3] == nil)
        try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .addLearner, node: n3, incarnation: 23))
        cluster.stabilize()
        #expect(cluster[n3].status.configuration.lists(n3, incarnation: 23))
        try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .addVoter, node: n3))
        cluster.stabilize()
        #expect(cluster[n1].status.configuration.incarnations[n3] == 23, "a promotion keeps the recorded incarnation")
        #expect(cluster[n3].isPromotable)
        // And it takes part: with n1 gone, n2 and n3 elect a leader.
        cluster.isolated = [n1]
        cluster.tickAll(times: 100)
        #expect(cluster.leaders.count == 1)
    }

    @Test("A change that re-adds a member under another incarnation without removing it is refused")
    func reAddRefused() {
        var cluster = cluster()
        cluster.elect(n1)
        #expect(throws: RaftError.self) {
            try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .addLearner, node: n3, incarnation: 99))
        }
    }
}
