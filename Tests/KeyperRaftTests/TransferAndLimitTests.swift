@testable import KeyperRaft
import Testing

@Suite("Leadership transfer (thesis §3.10)")
struct TransferTests {
    @Test("Leadership passes to an up-to-date voter through TimeoutNow (thesis §3.10)")
    func transferToCaughtUp() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        let term = cluster[n1].term
        try cluster.nodes[n1]!.raft.transferLeadership(to: n2)
        cluster.stabilize()
        #expect(cluster.leaders == [n2])
        #expect(cluster[n2].term == term.next())
    }

    @Test("A lagging target is caught up before TimeoutNow is sent (thesis §3.10)")
    func transferCatchesUpFirst() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n3]
        for value in UInt8(1)...3 { try cluster.propose([value], on: n1) }
        cluster.isolated = []
        try cluster.nodes[n1]!.raft.transferLeadership(to: n3)
        cluster.stabilize()
        #expect(cluster.leaders == [n3])
        #expect(cluster.appliedData(n3) == [[1], [2], [3]])
    }

    @Test("Proposals are refused while a transfer is under way (thesis §3.10)")
    func proposalsRefusedDuringTransfer() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n3]
        try cluster.nodes[n1]!.raft.transferLeadership(to: n3)
        #expect(throws: RaftError.transferInProgress(to: n3)) { try cluster.nodes[n1]!.raft.propose([1]) }
    }

    @Test("A transfer whose target does not catch up within an election timeout is abandoned (thesis §3.10)")
    func transferAborts() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n3]
        try cluster.nodes[n1]!.raft.transferLeadership(to: n3)
        for _ in 0..<10 {
            cluster.tick(n1)
            cluster.tick(n2)
            cluster.stabilize()
        }
        #expect(cluster[n1].status.leadTransferee == nil)
        #expect(cluster.leaders == [n1])
        try cluster.propose([1], on: n1)
        #expect(cluster.appliedData(n2) == [[1]])
    }

    @Test("A transfer to a node that is not a voter is refused")
    func transferToNonVoter() {
        var cluster = Cluster(voters: ids("n1", "n2"), learners: ids("n3"))
        cluster.elect(n1)
        #expect(throws: RaftError.notVoter(n3)) { try cluster.nodes[n1]!.raft.transferLeadership(to: n3) }
    }
}

@Suite("Limits")
struct LimitTests {
    @Test("A proposal larger than entryBytesMax is refused")
    func entryTooLarge() {
        var cluster = Cluster(voters: ids("n1")) { $0.entryBytesMax = 8 }
        cluster.elect(n1)
        #expect(throws: RaftError.entryTooLarge(bytes: 9, bytesMax: 8)) {
            try cluster.nodes[n1]!.raft.propose([UInt8](repeating: 0, count: 9))
        }
    }

    @Test("Proposals beyond uncommittedBytesMax are refused until entries commit")
    func uncommittedLimit() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3")) {
            $0.uncommittedBytesMax = 10
            $0.entryBytesMax = 10
        }
        cluster.elect(n1)
        cluster.isolated = [n2, n3]
        try cluster.nodes[n1]!.raft.propose([1, 2, 3, 4])
        try cluster.nodes[n1]!.raft.propose([1, 2, 3, 4])
        #expect(throws: RaftError.uncommittedLimit(bytes: 12, bytesMax: 10)) { try cluster.nodes[n1]!.raft.propose([1, 2, 3, 4]) }
        cluster.isolated = []
        cluster.tickAll(times: 3)
        try cluster.nodes[n1]!.raft.propose([1, 2, 3, 4])
    }

    @Test("Too many pending reads are refused (readsPendingMax)")
    func readLimit() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3")) { $0.readsPendingMax = 2 }
        cluster.elect(n1)
        cluster.isolated = [n2, n3]
        try cluster.nodes[n1]!.raft.readIndex(context: [1])
        try cluster.nodes[n1]!.raft.readIndex(context: [2])
        #expect(throws: RaftError.readLimit(pendingMax: 2)) { try cluster.nodes[n1]!.raft.readIndex(context: [3]) }
    }

    @Test("Config.validate rejects settings that cannot work together")
    func validation() {
        var config = Config(id: n1)
        config.electionTicks = 2
        config.heartbeatTicks = 2
        #expect(throws: RaftError.self) { try config.validate() }
        config = Config(id: n1)
        config.inflightAppendsMax = 0
        #expect(throws: RaftError.self) { try config.validate() }
        config = Config(id: n1)
        config.uncommittedBytesMax = 10
        config.entryBytesMax = 11
        #expect(throws: RaftError.self) { try config.validate() }
        #expect(throws: RaftError.self) { try RawNode(config: Config(id: NodeID("")), storage: MemoryStorage()) }
        #expect(throws: Never.self) { try Config(id: n1).validate() }
    }

    @Test("A message addressed to another node is refused")
    func misrouted() {
        var solo = Solo()
        #expect(throws: RaftError.misrouted(to: n2)) {
            try solo.node.raft.step(Message(from: n3, to: n2, term: Term(1), kind: .timeoutNow))
        }
    }
}
