@testable import KeyperRaft
import Testing

@Suite("Snapshots and compaction (Raft §7)")
struct SnapshotTests {
    @Test("A leader sends a snapshot to a follower that needs compacted entries (§7)")
    func leaderSendsSnapshot() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n3]
        for value in UInt8(1)...5 { try cluster.propose([value], on: n1) }
        let metadata = try cluster[n1].snapshotMetadata(at: cluster[n1].status.applied)
        try cluster.nodes[n1]!.storage.createSnapshot(metadata, data: [42])
        #expect(cluster[n1].status.firstIndex == metadata.index.next())
        cluster.isolated = []
        cluster.delivered = []
        cluster.tickAll(times: 3)
        #expect(cluster.delivered.contains { if case .snapshot = $0.kind { $0.to == n3 } else { false } })
        #expect(cluster.nodes[n3]!.storage.snapshotMetadata == metadata)
        try cluster.propose([6], on: n1)
        #expect(cluster.appliedData(n3).last == [6])
    }

    @Test("A failed snapshot transfer sends the follower back to probing, which resends it (§7)")
    func reportSnapshotFailure() throws {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n3]
        for value in UInt8(1)...5 { try cluster.propose([value], on: n1) }
        let metadata = try cluster[n1].snapshotMetadata(at: cluster[n1].status.applied)
        try cluster.nodes[n1]!.storage.createSnapshot(metadata, data: [])
        cluster.isolated = []
        let isSnapshotToN3: (Message) -> Bool = { message in
            if case .snapshot = message.kind { return message.to == n3 }
            return false
        }
        var dropped = 0
        for _ in 0..<20 where dropped == 0 {
            cluster.tick(n1)
            dropped = cluster.deliverOnce(dropping: isSnapshotToN3)
        }
        #expect(dropped == 1)
        #expect(cluster[n1].status.followers[n3]?.state == .snapshot)
        cluster.nodes[n1]!.raft.reportSnapshot(to: n3, succeeded: false)
        cluster.collect(n1)
        #expect(cluster.inFlight.contains(where: isSnapshotToN3))
        cluster.stabilize()
        #expect(cluster.nodes[n3]!.storage.snapshotMetadata == metadata)
    }

    @Test("A follower installs a snapshot and takes its configuration (§7)")
    func followerInstalls() {
        var solo = Solo(n2)
        let metadata = SnapshotMetadata(index: LogIndex(20), term: Term(2), configuration: Configuration(voters: ids("n1", "n2", "n3", "n4")))
        try! solo.node.raft.step(Message(from: n1, to: n2, term: Term(2), kind: .snapshot(metadata)))
        let ready = solo.node.raft.ready()
        #expect(ready.snapshot == metadata)
        #expect(ready.committedEntries.isEmpty)
        #expect(ready.messagesAfterPersist.first?.kind == .appendResponse(AppendResponse(index: LogIndex(20))))
        #expect(solo.raft.status.configuration.voters.contains(n4))
        #expect(solo.raft.commitIndex == LogIndex(20))
        try! solo.node.storage.applySnapshot(metadata, data: [])
        solo.node.raft.advance(ready)
        #expect(solo.raft.status.applied == LogIndex(20))
    }

    @Test("A snapshot the follower's committed log already covers is acknowledged, not installed (§7)")
    func staleSnapshotIgnored() {
        var solo = Solo(n2)
        let metadata = SnapshotMetadata(index: LogIndex(2), term: Term(1), configuration: Configuration(voters: ids("n1", "n2", "n3")))
        let reply = solo.step(Message(from: n1, to: n2, term: Term(2), kind: .snapshot(metadata)))
        #expect(reply.first?.kind == .appendResponse(AppendResponse(index: LogIndex(3))))
        #expect(solo.node.storage.snapshotMetadata.index == .zero)
    }

    @Test("Snapshot metadata is refused for an index not yet applied")
    func metadataNeedsApplied() {
        let solo = Solo(n2)
        #expect(throws: RaftError.unavailable) { try solo.raft.snapshotMetadata(at: LogIndex(99)) }
    }

    @Test("Memory storage reports compacted and unavailable indexes")
    func storageErrors() throws {
        let storage = MemoryStorage(bootstrapping: Configuration(voters: ids("n1")))
        storage.append([entry(2, 1), entry(3, 2)])
        try storage.createSnapshot(SnapshotMetadata(index: LogIndex(2), term: Term(1), configuration: Configuration(voters: ids("n1"))), data: [])
        #expect(storage.firstIndex == LogIndex(3))
        #expect(try storage.term(at: LogIndex(2)) == Term(1))
        #expect(throws: RaftError.compacted) { try storage.term(at: LogIndex(1)) }
        #expect(throws: RaftError.unavailable) { try storage.term(at: LogIndex(4)) }
        #expect(throws: RaftError.compacted) { try storage.entries(from: LogIndex(2), to: LogIndex(4), bytesMax: 100) }
        #expect(try storage.entries(from: LogIndex(3), to: LogIndex(4), bytesMax: 0) == [entry(3, 2)])
    }
}
