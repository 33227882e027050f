@testable import KeyperRaft
import Testing

private func heartbeats(_ messages: [Message], to node: NodeID) -> Int {
    messages.filter { message in
        if message.to == node, case .heartbeat = message.kind { return true }
        return false
    }.count
}

@Suite("ReadIndex (thesis §6.4)")
struct ReadIndexTests {
    @Test("The leader releases a read only after a quorum answers a heartbeat round (§6.4)")
    func needsHeartbeatRound() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        try cluster.nodes[n1]!.raft.readIndex(context: [1])
        let messages = cluster.nodes[n1]!.handleReady()
        #expect(heartbeats(messages, to: n2) == 1)
        #expect(cluster.nodes[n1]!.readStates.isEmpty)
        cluster.inFlight += messages
        cluster.stabilize()
        #expect(cluster.nodes[n1]!.readStates == [ReadState(index: cluster[n1].commitIndex, context: [1])])
    }

    @Test("Reads requested together share one heartbeat round (§6.4 batching)")
    func readsShareRound() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        for context in UInt8(1)...5 { try cluster.nodes[n1]!.raft.readIndex(context: [context]) }
        let messages = cluster.nodes[n1]!.handleReady()
        #expect(heartbeats(messages, to: n2) == 1)
        #expect(heartbeats(messages, to: n3) == 1)
        cluster.inFlight += messages
        cluster.stabilize()
        #expect(cluster.nodes[n1]!.readStates.map(\.context) == [[1], [2], [3], [4], [5]])
    }

    @Test("A read is not released while the leader is cut off from its quorum (§6.4)")
    func noQuorumNoRead() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n1]
        try cluster.nodes[n1]!.raft.readIndex(context: [1])
        cluster.stabilize()
        #expect(cluster.nodes[n1]!.readStates.isEmpty)
    }

    @Test("A new leader holds reads until it has committed an entry of its term (§6.4)")
    func waitsForCommitInTerm() {
        var solo = Solo { $0.preVote = false }
        for _ in 0..<20 where solo.raft.role == .follower { solo.node.raft.tick() }
        _ = solo.drain()
        let term = solo.raft.term
        _ = solo.step(Message(from: n2, to: n1, term: term, kind: .voteResponse(VoteResponse(granted: true))))
        try! solo.node.raft.readIndex(context: [9])
        let early = solo.drain()
        #expect(!early.contains { if case .heartbeat(let beat) = $0.kind { beat.readRound > 0 } else { false } })
        // The no-op (index 4) commits: the read gets a round, then a quorum confirms it.
        let afterCommit = solo.step(Message(from: n2, to: n1, term: term, kind: .appendResponse(AppendResponse(index: LogIndex(4)))))
        let round = afterCommit.compactMap { message -> UInt64? in
            if case .heartbeat(let beat) = message.kind { return beat.readRound }
            return nil
        }.max() ?? 0
        #expect(round > 0)
        _ = solo.step(Message(from: n2, to: n1, term: term, kind: .heartbeatResponse(HeartbeatResponse(readRound: round))))
        #expect(solo.node.readStates == [ReadState(index: LogIndex(4), context: [9])])
    }

    @Test("A follower's read is forwarded to the leader and answered with its commit index (§6.4)")
    func followerRead() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        try cluster.propose([1], on: n1)
        try cluster.nodes[n2]!.raft.readIndex(context: [7])
        cluster.stabilize()
        #expect(cluster.nodes[n2]!.readStates == [ReadState(index: cluster[n1].commitIndex, context: [7])])
    }

    @Test("A node that knows no leader refuses a read")
    func noLeaderNoRead() {
        var solo = Solo(n2)
        #expect(throws: RaftError.notLeader(leader: nil)) { try solo.node.raft.readIndex(context: [1]) }
    }

    @Test("A leader that steps down reports its pending reads as dropped")
    func droppedReadsReported() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n1]
        try cluster.nodes[n1]!.raft.readIndex(context: [3])
        cluster.stabilize()
        try cluster.nodes[n1]!.raft.step(Message(from: n2, to: n1, term: Term(50), kind: .appendResponse(AppendResponse(index: .zero))))
        cluster.collect(n1)
        #expect(cluster.nodes[n1]!.droppedReads == [[3]])
    }
}
