@testable import KeyperRaft
import Testing

private func appends(_ messages: [Message], to node: NodeID) -> [AppendEntries] {
    messages.compactMap { message in
        if message.to == node, case .append(let append) = message.kind { return append }
        return nil
    }
}

/// Makes a lone three-voter node leader of a new term by feeding it one vote.
private func soloLeader(_ adjust: @escaping (inout Config) -> Void = { _ in }) -> Solo {
    var solo = Solo {
        $0.preVote = false
        adjust(&$0)
    }
    for _ in 0..<20 where solo.raft.role == .follower { solo.node.raft.tick() }
    _ = solo.drain()
    _ = solo.step(Message(from: n2, to: n1, term: solo.raft.term, kind: .voteResponse(VoteResponse(granted: true))))
    precondition(solo.raft.role == .leader)
    return solo
}

@Suite("Log replication (Raft §5.3, §5.4.2, thesis §10.2.1)")
struct ReplicationTests {
    @Test("A new leader appends a no-op entry of its term (§8)")
    func noOpOnElection() {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        let status = cluster[n1].status
        #expect(status.lastIndex == LogIndex(4))
        #expect(cluster[n1].logTerm(at: LogIndex(4)) == status.term)
        #expect(cluster.nodes[n2]!.applied.last?.data == [])
        #expect(status.commit == LogIndex(4))
    }

    @Test("Committed entries are applied in the same order on every node (§5.3)")
    func sameOrderEverywhere() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        for value in UInt8(1)...5 { try cluster.propose([value], on: n1) }
        let expected: [[UInt8]] = [[1], [2], [3], [4], [5]]
        #expect(cluster.appliedData(n1) == expected)
        #expect(cluster.appliedData(n2) == expected)
        #expect(cluster.appliedData(n3) == expected)
    }

    @Test("A follower rejects an append whose previous entry it lacks, hinting where to probe (§5.3)")
    func rejectsMismatch() {
        var solo = Solo(n2)
        let append = AppendEntries(prevIndex: LogIndex(10), prevTerm: Term(2), entries: [entry(11, 2)], commit: LogIndex(3))
        let reply = solo.step(Message(from: n1, to: n2, term: Term(2), kind: .append(append)))
        #expect(reply.first?.kind == .appendResponse(AppendResponse(index: LogIndex(10), rejected: true, hintIndex: LogIndex(3), hintTerm: Term(1))))
        #expect(solo.raft.status.lastIndex == LogIndex(3))
    }

    @Test("A follower replaces a conflicting uncommitted suffix with the leader's entries (§5.3)")
    func truncatesConflicts() {
        var solo = Solo(n2)
        let first = AppendEntries(prevIndex: LogIndex(3), prevTerm: Term(1), entries: [entry(4, 2), entry(5, 2)], commit: LogIndex(3))
        _ = solo.step(Message(from: n1, to: n2, term: Term(2), kind: .append(first)))
        let second = AppendEntries(prevIndex: LogIndex(3), prevTerm: Term(1), entries: [entry(4, 3, [9])], commit: LogIndex(3))
        _ = solo.step(Message(from: n3, to: n2, term: Term(3), kind: .append(second)))
        #expect(solo.raft.status.lastIndex == LogIndex(4))
        #expect(solo.raft.logTerm(at: LogIndex(4)) == Term(3))
        #expect(solo.node.storage.allEntries.last == entry(4, 3, [9]))
    }

    @Test("Fast back-off skips a whole conflicting term in one round trip (§5.3)")
    func fastBackOff() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3")) { $0.checkQuorum = false }
        cluster.elect(n1)
        // n1 keeps 50 uncommitted term-2 entries; n2 then n3 lead on without it.
        cluster.isolated = [n1]
        for _ in 0..<50 { try cluster.nodes[n1]!.raft.propose([1]) }
        cluster.stabilize()
        cluster.elect(n2)
        for _ in 0..<50 { try cluster.propose([2], on: n2) }
        cluster.elect(n3)
        cluster.isolated = []
        cluster.delivered = []
        for _ in 0..<10 {
            for id in [n1, n2, n3] { cluster.tick(id) }
            cluster.stabilize()
        }
        let rejections = cluster.delivered.filter { message in
            if case .appendResponse(let response) = message.kind, response.rejected, message.from == n1 { return true }
            return false
        }.count
        #expect(cluster.appliedData(n1).last == [2])
        #expect(cluster[n1].status.lastIndex == cluster[n3].status.lastIndex)
        #expect(rejections >= 1)
        #expect(rejections <= 2)
    }

    @Test("Proposals made between two Ready cycles travel in one append (batching)")
    func batching() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        for value in UInt8(1)...10 { try cluster.nodes[n1]!.raft.propose([value]) }
        let sent = appends(cluster.nodes[n1]!.handleReady(), to: n2)
        #expect(sent.count == 1)
        #expect(sent.first?.entries.count == 10)
    }

    @Test("An append carries at most appendBytesMax payload bytes (batching bound)")
    func appendBytesBound() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3")) { $0.appendBytesMax = 10 }
        cluster.elect(n1)
        for _ in 0..<5 { try cluster.nodes[n1]!.raft.propose([1, 2, 3, 4]) }
        let sent = appends(cluster.nodes[n1]!.handleReady(), to: n2)
        #expect(!sent.isEmpty)
        for append in sent { #expect(append.entries.reduce(0) { $0 + $1.sizeBytes } <= 10) }
    }

    @Test("At most inflightAppendsMax appends are in flight to one follower (pipelining)")
    func pipeliningBound() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3")) {
            $0.inflightAppendsMax = 2
            $0.appendBytesMax = 1
        }
        cluster.elect(n1)
        #expect(cluster[n1].status.followers[n2]?.state == .replicate)
        for value in UInt8(1)...6 { try cluster.nodes[n1]!.raft.propose([value]) }
        let messages = cluster.nodes[n1]!.handleReady()
        cluster.inFlight += messages
        let sent = appends(messages, to: n2)
        #expect(sent.count == 2)
        #expect(cluster[n1].status.followers[n2]?.paused == true)
        cluster.stabilize()
        #expect(cluster.appliedData(n2).count == 6)
    }

    @Test("A leader does not commit an entry of an earlier term by counting replicas (§5.4.2, Figure 8)")
    func noCommitOfPreviousTermByCounting() {
        var solo = soloLeader { $0.checkQuorum = false }
        try! solo.node.raft.propose([5])
        _ = solo.drain()
        #expect(solo.raft.status.lastIndex == LogIndex(5))
        // n2 wins term 3 with our vote; we never hear from it again.
        let request = VoteRequest(lastIndex: LogIndex(5), lastTerm: Term(2))
        _ = solo.step(Message(from: n2, to: n1, term: Term(3), kind: .vote(request)))
        for _ in 0..<20 where solo.raft.role == .follower { solo.node.raft.tick() }
        _ = solo.drain()
        _ = solo.step(Message(from: n3, to: n1, term: Term(4), kind: .voteResponse(VoteResponse(granted: true))))
        #expect(solo.raft.role == .leader)
        #expect(solo.raft.term == Term(4))
        // Index 5 (term 2) now sits on a majority, but only counting a term-4 entry may commit it.
        _ = solo.step(Message(from: n2, to: n1, term: Term(4), kind: .appendResponse(AppendResponse(index: LogIndex(5)))))
        #expect(solo.raft.commitIndex < LogIndex(5))
        _ = solo.step(Message(from: n2, to: n1, term: Term(4), kind: .appendResponse(AppendResponse(index: LogIndex(6)))))
        #expect(solo.raft.commitIndex == LogIndex(6))
    }

    @Test("Votes and acknowledgements wait for the persist; a leader's appends need not (thesis §10.2.1)")
    func persistBeforeReply() throws {
        var solo = Solo()
        try solo.node.raft.step(Message(from: n2, to: n1, term: Term(2), kind: .vote(VoteRequest(lastIndex: LogIndex(3), lastTerm: Term(1)))))
        let ready = solo.node.raft.ready()
        #expect(ready.hardState?.vote == n2)
        #expect(ready.messages.isEmpty)
        #expect(ready.messagesAfterPersist.count == 1)
        solo.node.raft.advance(ready)

        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        try cluster.nodes[n1]!.raft.propose([1])
        let leaderReady = cluster.nodes[n1]!.raft.ready()
        #expect(leaderReady.entries.count == 1)
        #expect(appends(leaderReady.messages, to: n2).count == 1)
        cluster.nodes[n1]!.raft.advance(leaderReady)
    }

    @Test("A leader counts its own entries towards commit only once persisted (thesis §10.2.1)")
    func leaderCountsItselfAfterPersist() {
        var node = TestNode(n1, storage: MemoryStorage(bootstrapping: Configuration(voters: [n1])))
        for _ in 0..<20 where node.raft.role != .leader { node.raft.tick() }
        #expect(node.raft.role == .leader)
        let ready = node.raft.ready()
        #expect(ready.entries.count == 1)
        #expect(node.raft.commitIndex == LogIndex(1))
        node.storage.append(ready.entries)
        if let hardState = ready.hardState { node.storage.setHardState(hardState) }
        node.raft.advance(ready)
        #expect(node.raft.commitIndex == LogIndex(2))
    }

    @Test("A restarted node keeps its term, vote and log (Figure 2 persistent state)")
    func restartKeepsState() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        try cluster.propose([1], on: n1)
        let before = cluster[n2].status
        let restarted = try RawNode(config: testConfig(n2), storage: cluster.nodes[n2]!.storage)
        #expect(restarted.term == before.term)
        #expect(restarted.status.vote == before.vote)
        #expect(restarted.status.lastIndex == before.lastIndex)
        #expect(restarted.status.configuration == before.configuration)
    }

    @Test("A follower refuses proposals and names the leader")
    func followerRefusesProposals() {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        #expect(throws: RaftError.notLeader(leader: n1)) { try cluster.nodes[n2]!.raft.propose([1]) }
    }
}
