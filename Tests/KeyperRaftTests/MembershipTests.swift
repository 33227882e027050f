@testable import KeyperRaft
import Testing

@Suite("Membership changes (thesis §4)")
struct MembershipTests {
    @Test("A configuration takes effect when appended, before it commits (thesis §4.1)")
    func effectiveOnAppend() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        let commit = cluster[n1].commitIndex
        cluster.isolated = [n2, n3]
        try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .addLearner, node: n4))
        #expect(cluster[n1].status.configuration.learners == [n4])
        #expect(cluster[n1].commitIndex == commit)
        #expect(cluster[n1].status.followers[n4] != nil)
    }

    @Test("Only one configuration change may be uncommitted at a time (thesis §4.1)")
    func oneAtATime() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n2, n3]
        try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .addLearner, node: n4))
        #expect(throws: RaftError.configChangeInProgress) {
            try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .removeNode, node: n3))
        }
    }

    @Test("A new leader accepts a configuration change only after committing an entry of its term (thesis §4.1)")
    func leaderMustCommitFirst() {
        var solo = Solo { $0.preVote = false }
        for _ in 0..<20 where solo.raft.role == .follower { solo.node.raft.tick() }
        _ = solo.drain()
        _ = solo.step(Message(from: n2, to: n1, term: solo.raft.term, kind: .voteResponse(VoteResponse(granted: true))))
        #expect(solo.raft.role == .leader)
        #expect(throws: RaftError.proposalDropped(reason: .leaderNotReady)) {
            try solo.node.raft.proposeConfChange(ConfChange(kind: .addLearner, node: n4))
        }
    }

    @Test("A follower adopts a configuration entry as soon as it appends it (thesis §4.1)")
    func followerAdoptsOnAppend() {
        var solo = Solo(n2)
        let change = ConfChange(kind: .removeNode, node: n3)
        let append = AppendEntries(prevIndex: LogIndex(3), prevTerm: Term(1),
                                   entries: [Entry(term: Term(2), index: LogIndex(4), kind: .configChange, data: change.encoded())],
                                   commit: LogIndex(3))
        _ = solo.step(Message(from: n1, to: n2, term: Term(2), kind: .append(append)))
        #expect(solo.raft.status.configuration.voters == ids("n1", "n2"))
        // A new leader overwrites it: the previous configuration comes back.
        let overwrite = AppendEntries(prevIndex: LogIndex(3), prevTerm: Term(1), entries: [entry(4, 3)], commit: LogIndex(3))
        _ = solo.step(Message(from: n3, to: n2, term: Term(3), kind: .append(overwrite)))
        #expect(solo.raft.status.configuration.voters == ids("n1", "n2", "n3"))
    }

    @Test("A learner receives the log but neither votes nor counts towards commit (thesis §4.2.1)")
    func learnerDoesNotCount() throws {
        var cluster = Cluster(voters: ids("n1", "n2"), learners: ids("n3"))
        cluster.elect(n1)
        try cluster.propose([1], on: n1)
        #expect(cluster.appliedData(n3) == [[1]])
        cluster.isolated = [n2]
        let commit = cluster[n1].commitIndex
        try cluster.propose([2], on: n1)
        #expect(cluster[n3].status.lastIndex > commit)
        #expect(cluster[n1].commitIndex == commit)
        cluster.isolated = [n1, n2]
        cluster.tick(n3, times: 100)
        #expect(cluster[n3].role == .follower)
    }

    @Test("A learner promoted to voter counts towards commit (thesis §4.2.1)")
    func promotion() throws {
        var cluster = Cluster(voters: ids("n1", "n2"), learners: ids("n3"))
        cluster.elect(n1)
        try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .addVoter, node: n3))
        cluster.stabilize()
        #expect(cluster[n3].status.configuration.voters == ids("n1", "n2", "n3"))
        cluster.isolated = [n2]
        try cluster.propose([5], on: n1)
        #expect(cluster.appliedData(n1).last == [5])
    }

    @Test("A new node joins empty, learns the log from index 1 and is added as a learner (thesis §4.2.1)")
    func newNodeJoins() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        try cluster.propose([1], on: n1)
        cluster.nodes[n4] = TestNode(n4, storage: MemoryStorage())
        try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .addLearner, node: n4, context: Array("10.0.0.4:12000".utf8)))
        cluster.stabilize()
        cluster.tickAll(times: 3)
        #expect(cluster[n4].status.configuration == Configuration(voters: ids("n1", "n2", "n3"), learners: ids("n4")))
        #expect(cluster.appliedData(n4) == [[1]])
    }

    @Test("A leader that removes itself steps down once the removal commits, and a successor takes over (thesis §4.2.2)")
    func leaderRemovesItself() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .removeNode, node: n1))
        #expect(throws: RaftError.proposalDropped(reason: .leaderRemoving)) { try cluster.nodes[n1]!.raft.propose([1]) }
        cluster.stabilize()
        #expect(cluster[n1].role == .follower)
        #expect(cluster[n2].status.configuration.voters == ids("n2", "n3"))
        cluster.isolated = [n1]
        cluster.stabilize()
        if cluster.leaders.isEmpty { cluster.tickAll(times: 30) }
        #expect(cluster.leaders.count == 1)
        #expect(cluster.leaders.first != n1)
    }

    @Test("Invalid changes are refused: removing the last voter, adding an existing voter")
    func invalidChanges() throws {
        var cluster = Cluster(voters: ids("n1"))
        cluster.elect(n1)
        #expect(throws: RaftError.invalidConfChange(reason: "cannot remove the last voter")) {
            try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .removeNode, node: n1))
        }
        #expect(throws: RaftError.invalidConfChange(reason: "n1 is already a voter")) {
            try cluster.nodes[n1]!.raft.proposeConfChange(ConfChange(kind: .addVoter, node: n1))
        }
    }

    @Test("A configuration change round-trips through its binary encoding; bad bytes are refused")
    func confChangeEncoding() throws {
        let change = ConfChange(kind: .addLearner, node: NodeID("nödé-7"), incarnation: 0xdead_beef_cafe_f00d, context: [1, 2, 3])
        #expect(try ConfChange(decoding: change.encoded()) == change)
        // Version 1 (before incarnations) still decodes, with none recorded.
        #expect(try ConfChange(decoding: [1, 1, 0, 1, 65, 0, 0, 0, 1, 7]) == ConfChange(kind: .addLearner, node: NodeID("A"), context: [7]))
        #expect(throws: RaftError.malformedConfChange) { try ConfChange(decoding: Array(change.encoded().dropLast())) }
        #expect(throws: RaftError.malformedConfChange) { try ConfChange(decoding: [1, 9, 0, 1, 65, 0, 0, 0, 0]) }
        #expect(throws: RaftError.malformedConfChange) { try ConfChange(decoding: []) }
    }
}
