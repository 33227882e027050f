@testable import KeyperRaft
import Testing

@Suite("Election (Raft §5.1, §5.2, §5.4.1; thesis §6.2, §9.6)")
struct ElectionTests {
    @Test("A follower that hears from no leader campaigns after its election timeout (§5.2)")
    func followerCampaigns() {
        var solo = Solo { $0.preVote = false }
        solo.node.raft.tick()
        #expect(solo.raft.role == .follower)
        for _ in 0..<20 where solo.raft.role == .follower { solo.node.raft.tick() }
        #expect(solo.raft.role == .candidate)
        #expect(solo.raft.term == Term(2))
        let requests = solo.drain().filter { if case .vote = $0.kind { true } else { false } }
        #expect(Set(requests.map(\.to)) == ids("n2", "n3"))
    }

    @Test("Election timeouts are randomised in [electionTicks, 2 * electionTicks) (§5.2)")
    func randomisedTimeouts() {
        var seen: Set<Int> = []
        for seed in UInt64(0)..<40 {
            var node = TestNode(n1, storage: MemoryStorage(bootstrapping: Configuration(voters: ids("n1", "n2", "n3")))) {
                $0.randomSeed = seed
            }
            var ticks = 0
            while node.raft.role == .follower && ticks < 100 {
                node.raft.tick()
                ticks += 1
            }
            #expect((10..<20).contains(ticks))
            seen.insert(ticks)
        }
        #expect(seen.count >= 5)
    }

    @Test("A candidate that wins a majority becomes the only leader (§5.2)")
    func majorityWins() {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        #expect(cluster.leaders == [n1])
        #expect(cluster[n2].leader == n1)
        #expect(cluster[n3].leader == n1)
    }

    @Test("A node grants at most one vote per term (§5.2)")
    func oneVotePerTerm() {
        var solo = Solo()
        let request = VoteRequest(lastIndex: LogIndex(3), lastTerm: Term(1))
        let first = solo.step(Message(from: n2, to: n1, term: Term(2), kind: .vote(request)))
        let second = solo.step(Message(from: n3, to: n1, term: Term(2), kind: .vote(request)))
        #expect(first.first?.kind == .voteResponse(VoteResponse(granted: true)))
        #expect(second.first?.kind == .voteResponse(VoteResponse(granted: false)))
        #expect(solo.node.storage.initialState().vote == n2)
    }

    @Test("A vote is refused to a candidate whose log is less up to date (§5.4.1)")
    func upToDateLogOnly() {
        var solo = Solo()
        let shorter = VoteRequest(lastIndex: LogIndex(2), lastTerm: Term(1))
        let reply = solo.step(Message(from: n2, to: n1, term: Term(2), kind: .vote(shorter)))
        #expect(reply.first?.kind == .voteResponse(VoteResponse(granted: false)))
        #expect(solo.raft.status.vote == nil)
    }

    @Test("A node that sees a higher term becomes a follower of it (§5.1)")
    func higherTermStepsDown() {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        try! cluster.nodes[n1]!.raft.step(Message(from: n2, to: n1, term: Term(9), kind: .appendResponse(AppendResponse(index: .zero))))
        #expect(cluster[n1].role == .follower)
        #expect(cluster[n1].term == Term(9))
    }

    @Test("A message from an older term is ignored and answered with the current term (§5.1)")
    func olderTermIgnored() {
        var solo = Solo(n2)
        _ = solo.step(Message(from: n1, to: n2, term: Term(5), kind: .heartbeat(Heartbeat(commit: LogIndex(3)))))
        let lastIndex = solo.raft.status.lastIndex
        let append = AppendEntries(prevIndex: LogIndex(3), prevTerm: Term(1), entries: [entry(4, 3)], commit: LogIndex(3))
        let reply = solo.step(Message(from: n3, to: n2, term: Term(3), kind: .append(append)))
        #expect(solo.raft.status.lastIndex == lastIndex)
        #expect(solo.raft.term == Term(5))
        #expect(reply.first?.term == Term(5))
    }

    @Test("A pre-vote changes no one's term or vote (thesis §9.6)")
    func preVoteKeepsTerms() {
        var solo = Solo()
        let request = VoteRequest(lastIndex: LogIndex(3), lastTerm: Term(1))
        let reply = solo.step(Message(from: n2, to: n1, term: Term(2), kind: .preVote(request)))
        #expect(reply.first?.kind == .preVoteResponse(VoteResponse(granted: true)))
        #expect(reply.first?.term == Term(2))
        #expect(solo.raft.term == Term(1))
        #expect(solo.raft.status.vote == nil)
    }

    @Test("A partitioned node that rejoins cannot depose a healthy leader (pre-vote §9.6, check-quorum §6.2)")
    func rejoiningNodeDoesNotDisrupt() {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        let term = cluster[n1].term
        cluster.isolated = [n3]
        cluster.tickAll(times: 100)
        #expect(cluster[n3].term == term)
        cluster.isolated = []
        cluster.tickAll(times: 30)
        #expect(cluster.leaders == [n1])
        #expect(cluster[n1].term == term)
    }

    @Test("Without pre-vote a rejoining node's higher term would depose the leader (why §9.6 matters)")
    func withoutPreVoteDisrupts() {
        var cluster = Cluster(voters: ids("n1", "n2", "n3")) {
            $0.preVote = false
            $0.checkQuorum = false
        }
        cluster.elect(n1)
        let term = cluster[n1].term
        cluster.isolated = [n3]
        cluster.tickAll(times: 100)
        #expect(cluster[n3].term > term)
        cluster.isolated = []
        cluster.tickAll(times: 30)
        #expect(cluster[n1].term > term)
    }

    @Test("A leader cut off from a quorum steps down within two election timeouts (check-quorum, thesis §6.2)")
    func checkQuorumStepsDown() {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        cluster.isolated = [n1]
        var ticks = 0
        while cluster[n1].role == .leader && ticks < 100 {
            cluster.tick(n1)
            ticks += 1
        }
        #expect(cluster[n1].role == .follower)
        #expect(ticks <= 20)
    }

    @Test("A node that hears from its leader ignores vote requests (leader lease, thesis §4.2.3)")
    func leaseIgnoresVotes() {
        var cluster = Cluster(voters: ids("n1", "n2", "n3"))
        cluster.elect(n1)
        let term = cluster[n2].term
        let request = VoteRequest(lastIndex: LogIndex(100), lastTerm: Term(100))
        try! cluster.nodes[n2]!.raft.step(Message(from: n3, to: n2, term: term.next(), kind: .vote(request)))
        #expect(cluster[n2].term == term)
        #expect(cluster[n2].leader == n1)
    }
}
