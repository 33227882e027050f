import KeyperTestSupport
import Logging
import NIOCore
import Testing
@testable import KeyperRaft
@testable import KeyperReplica
@testable import KeyperServer
@testable import KeyperTransport

/// What a join's answer means: 204 once the node is a voter (or the learner it asked to be),
/// 202 while it is a learner still catching up, and an answer in every case, also on close.
@Suite("Joins", .serialized)
struct JoinTests {
    @Test("A join whose node cannot catch up within the request timeout answers 202 (learner), and promotion goes on")
    func learnerPromotedLater() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(2, root: root)
            defer { Task { await cluster.stopAll() } }
            let leader = try await cluster.waitForLeader()
            for i in 0..<50 { try await leader.put(bytes("k\(i)"), value: bytes("v\(i)")) }
            try await cluster.start("node3")
            // Once node3 is in the configuration as a learner, cut the leader off from it: it
            // cannot catch up, so it is not promoted within the request timeout.
            let cut = leader.engine.loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1)) { task in
                let core = leader.engine.replica
                if core.raw.status.configuration.learners.contains(NodeID("node3")) {
                    leader.transport.faults = PeerTransport.Faults(dropTo: ["node3"], dropFrom: ["node3"])
                    task.cancel()
                }
            }
            let outcome = try await leader.join(nodeID: "node3", raftAddress: cluster.address("node3"), httpAddress: nil, learner: false)
            cut.cancel()
            #expect(outcome == .learnerPromoting)
            let member = try await leader.status().members?.first { $0.id == "node3" }
            #expect(member?.role == "learner" && member?.promotion == "pending", "\(String(describing: member))")
            // Healed, it catches up and the leader promotes it without being asked again.
            leader.transport.faults = PeerTransport.Faults()
            try await cluster.waitUntil("node3 to be promoted") { _ in
                (try? await leader.status().members?.first { $0.id == "node3" }?.role) == "voter"
            }
        }
    }

    @Test("A join that asks for a learner answers 204 and the learner is never promoted")
    func learnerOnRequest() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(2, root: root)
            defer { Task { await cluster.stopAll() } }
            let leader = try await cluster.waitForLeader()
            try await cluster.start("node3")
            let outcome = try await leader.join(nodeID: "node3", raftAddress: cluster.address("node3"), httpAddress: nil, learner: true)
            #expect(outcome == .learner)
            try await leader.put(bytes("k"), value: bytes("v"))
            try await cluster.waitUntil("node3 to catch up") { cluster in
                (try? await cluster.nodes["node3"]!.value(bytes("k"), consistency: .stale)) == bytes("v")
            }
            // Many ticks later it is still a learner (a caught-up learner would be promoted at once).
            try await Task.sleep(for: .milliseconds(40 * cluster.tickMs))
            let member = try await leader.status().members?.first { $0.id == "node3" }
            #expect(member?.role == "learner" && member?.promotion == "none", "\(String(describing: member))")
            // Joining it again as a learner is idempotent.
            #expect(try await leader.join(nodeID: "node3", raftAddress: cluster.address("node3"), httpAddress: nil, learner: true) == .learner)
            // Whoever leads next knows it asked to stay a learner: both voters restart and read
            // their member records back from the state machine.
            await cluster.stop("node1")
            await cluster.stop("node2")
            try await cluster.start("node1")
            try await cluster.start("node2")
            let next = try await cluster.waitForLeader()
            try await next.put(bytes("k2"), value: bytes("v2"))
            try await Task.sleep(for: .milliseconds(40 * cluster.tickMs))
            let after = try await next.status().members?.first { $0.id == "node3" }
            #expect(after?.role == "learner" && after?.promotion == "none", "a later leader promoted it: \(String(describing: after))")
        }
    }

    @Test("Closing the leader answers a join still waiting for the new node's reply")
    func closeAnswersPendingJoin() async throws {
        try await withTemporaryDirectory { root in
            let cluster = TestCluster(root: root)
            let leader = try await cluster.start("node1")
            _ = try await cluster.waitForLeader()
            // Nobody listens there: the adopt request is never answered.
            let join = Task { try await leader.join(nodeID: "node9", raftAddress: "127.0.0.1:1", httpAddress: nil, learner: false) }
            try await cluster.waitUntil("the join to wait for node9") { _ in
                (try? await leader.engine.loop.submit { !leader.engine.replica.clients.adoptions.isEmpty }.get()) == true
            }
            await cluster.stopAll()
            let answered = Task {
                do {
                    _ = try await join.value
                    return "succeeded"
                } catch let error as APIError {
                    return error.code
                } catch {
                    return "\(error)"
                }
            }
            // Without an answer on close the join would hang: bound the wait well below the
            // request timeout's multiples a hang would show.
            let code = try await withThrowingTaskGroup(of: String.self) { group in
                group.addTask { await answered.value }
                group.addTask { try await Task.sleep(for: .seconds(20)); return "no answer" }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
            #expect(code == "shutting_down")
        }
    }
}
