import KeyperBase
import Testing
@testable import KeyperRaft

/// The TCP transport neither duplicates nor reorders within a connection, and the cluster
/// simulation models it so; but a connection reset can let a newer connection's frames overtake
/// an older one's, and the protocol must not depend on the transport anyway. These runs give the
/// core a network that duplicates, reorders and loses any message.
@Suite("An unreliable network: duplicated, reordered and lost messages")
struct UnreliableNetworkTests {
    @Test("No safety property breaks, and the cluster commits once the network behaves", arguments: UInt64(1)...UInt64(20))
    func duplicatesReorderingLoss(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let nodes = [n1, n2, n3]
        var cluster = Cluster(voters: Set(nodes))
        var leaderOfTerm: [Term: NodeID] = [:]
        var proposed: UInt16 = 0
        func checkSafety() {
            for id in nodes where cluster[id].role == .leader {
                let term = cluster[id].term
                if let other = leaderOfTerm[term], other != id {
                    Issue.record("seed \(seed): two leaders in term \(term): \(other) and \(id)")
                }
                leaderOfTerm[term] = id
            }
            // State machine safety: what any two nodes applied agrees where both applied.
            let applied = nodes.map { cluster.nodes[$0]!.applied.map { EntryPosition(index: $0.index, term: $0.term) } }
            for (a, b) in [(0, 1), (0, 2), (1, 2)] where !applied[a].starts(with: applied[b].prefix(applied[a].count))
                && !applied[b].starts(with: applied[a].prefix(applied[b].count)) {
                Issue.record("seed \(seed): \(nodes[a]) and \(nodes[b]) applied different entries")
            }
        }
        var isolated: NodeID?
        for step in 0..<4_000 {
            // Now and then one node (often the leader) is cut off for a while, so leadership moves.
            if step % 800 == 0 {
                isolated = random.chance(1, in: 2) ? cluster.leaders.first : nodes[random.next(below: nodes.count)]
            } else if step % 800 == 500 {
                isolated = nil
            }
            let roll = random.next(below: 100)
            if roll < 15 {
                cluster.tick(nodes[random.next(below: nodes.count)])
            } else if roll < 25, let leader = cluster.leaders.first,
                      (try? cluster.nodes[leader]!.raft.propose([UInt8(proposed & 0xFF), UInt8(proposed >> 8)])) != nil {
                proposed &+= 1
            }
            for id in nodes { cluster.collect(id) }
            guard !cluster.inFlight.isEmpty else { continue }
            // Any message in flight may go next; one in five stays in flight to be delivered again,
            // one in ten is lost.
            let pick = random.next(below: cluster.inFlight.count)
            let message = random.chance(1, in: 5) ? cluster.inFlight[pick] : cluster.inFlight.remove(at: pick)
            if !random.chance(1, in: 10), message.from != isolated, message.to != isolated {
                try cluster.nodes[message.to]!.raft.step(message)
            }
            if cluster.inFlight.count > 300 { cluster.inFlight.removeFirst(150) }
            checkSafety()
        }
        // The network heals: everything in flight is delivered, in order, and time goes on.
        cluster.stabilize()
        for _ in 0..<100 where cluster.leaders.count != 1 { cluster.tickAll() }
        let leader = try #require(cluster.leaders.first, "seed \(seed): no leader after the network healed")
        let position = try cluster.propose([0xFF, 0xFF], on: leader)
        checkSafety()
        for id in nodes {
            #expect(cluster.nodes[id]!.applied.contains { $0.index == position.index && $0.term == position.term },
                    "seed \(seed): \(id) did not apply the entry proposed after the network healed")
        }
        #expect(proposed > 0, "seed \(seed): the leader never took a proposal")
        #expect(leaderOfTerm.count > 1, "seed \(seed): leadership never changed under the faults")
    }
}
