import Testing
@testable import KeyperRaft

@Suite("Ready.mustSync (etcd's MustSync)")
struct MustSyncTests {
    /// Takes the next Ready, persists it as a shell would and advances.
    func nextReady(_ solo: inout Solo) -> Ready {
        let ready = solo.node.raft.ready()
        solo.node.storage.append(ready.entries)
        if let hardState = ready.hardState { solo.node.storage.setHardState(hardState) }
        solo.node.raft.advance(ready)
        return ready
    }

    @Test("New entries, a new term or a vote must be synced; a commit index alone need not be")
    func syncRule() throws {
        var solo = Solo(n2)
        _ = solo.drain()
        // The leader of term 2 appends an entry: new entries and a new term.
        let append = AppendEntries(prevIndex: LogIndex(3), prevTerm: Term(1), entries: [entry(4, 2)], commit: LogIndex(3))
        try solo.node.raft.step(Message(from: n1, to: n2, term: Term(2), kind: .append(append)))
        #expect(nextReady(&solo).mustSync)
        // A heartbeat that only moves the commit index: written, not synced.
        try solo.node.raft.step(Message(from: n1, to: n2, term: Term(2), kind: .heartbeat(Heartbeat(commit: LogIndex(4)))))
        let commitOnly = nextReady(&solo)
        #expect(commitOnly.hardState?.commit == LogIndex(4))
        #expect(commitOnly.entries.isEmpty && commitOnly.snapshot == nil)
        #expect(!commitOnly.mustSync)
        // A vote in a new term: the vote must be durable before its response leaves.
        for _ in 0..<30 { solo.node.raft.tick() }  // out of the leader's lease
        _ = nextReadyIfAny(&solo)
        let request = VoteRequest(lastIndex: LogIndex(4), lastTerm: Term(2))
        try solo.node.raft.step(Message(from: n3, to: n2, term: Term(3), kind: .vote(request)))
        let vote = nextReady(&solo)
        #expect(vote.hardState?.vote == n3)
        #expect(vote.mustSync)
    }

    func nextReadyIfAny(_ solo: inout Solo) -> Ready? {
        solo.node.raft.hasReady ? nextReady(&solo) : nil
    }
}
