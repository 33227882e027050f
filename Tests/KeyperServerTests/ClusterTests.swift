import KeyperTestSupport
import Glibc
import KeyperStorage
import Logging
import KeyperBase
import Testing
@testable import KeyperServer

/// A cluster of in-process Raft nodes on loopback TCP, with fast ticks. `make(3)` makes a
/// cluster test one line (after hashicorp/raft's `MakeCluster`).
final class TestCluster: @unchecked Sendable {
    let root: String
    private(set) var nodes: [String: RaftNode] = [:]
    /// Raft ports by node: a restarted node must come back where its peers know it to be.
    private var ports: [String: Int] = [:]
    let tickMs: Int
    let snapshotEntries: Int
    let faultInjection: Bool

    init(root: String, tickMs: Int = 20, snapshotEntries: Int = 10_000, faultInjection: Bool = false) {
        self.root = root
        self.tickMs = tickMs
        self.snapshotEntries = snapshotEntries
        self.faultInjection = faultInjection
    }

    /// `count` nodes: node1 bootstraps, the others join it the prototype's way.
    static func make(_ count: Int, root: String, snapshotEntries: Int = 10_000,
                     faultInjection: Bool = false) async throws -> TestCluster {
        let cluster = TestCluster(root: root, snapshotEntries: snapshotEntries, faultInjection: faultInjection)
        try await cluster.start("node1")
        _ = try await cluster.waitForLeader()
        for index in 2...max(2, count) where index <= count {
            let name = "node\(index)"
            try await cluster.start(name)
            try await cluster.join(name)
        }
        try await cluster.waitUntil("all \(count) are voters") { cluster in
            guard let leader = cluster.currentLeader, let status = try? await leader.status() else { return false }
            return status.members?.filter { $0.role == "voter" }.count == count
        }
        return cluster
    }

    func configuration(_ name: String, joining: Bool = false) -> NodeConfiguration {
        var configuration = NodeConfiguration()
        configuration.nodeID = name
        configuration.dataDirectory = root + "/" + name
        configuration.httpAddress = HostPort(host: "127.0.0.1", port: 0)
        // A port outside the ephemeral range: the node may be stopped and restarted on it.
        if ports[name] == nil { ports[name] = freePorts(1, in: TestPorts.inProcessNodes)[0] }
        var cluster = ClusterConfiguration(raftAddress: HostPort(host: "127.0.0.1", port: ports[name]!),
                                           advertisedHTTPAddress: "127.0.0.1:0")
        cluster.tickMs = tickMs
        cluster.electionTicks = 10
        cluster.heartbeatTicks = 2
        cluster.requestTimeoutMs = 3_000
        cluster.snapshotEntries = snapshotEntries
        // Compact all the way, so a few dozen writes are enough to need snapshots.
        cluster.catchUpEntries = 0
        cluster.faultInjection = faultInjection
        cluster.joinURL = joining ? "http://test" : nil
        configuration.cluster = cluster
        return configuration
    }

    @discardableResult
    func start(_ name: String, joining: Bool = false) async throws -> RaftNode {
        var logger = Logger(label: "test.\(name)")
        logger.logLevel = ProcessInfoLevel.level
        var attempts = 0
        var opened: RaftNode?
        while opened == nil {
            do {
                opened = try await RaftNode.open(configuration: configuration(name, joining: joining), logger: logger)
            } catch let error as ConfigurationError where ports[name] != nil && attempts < 700 {
                // A restarted node's port can be held for a while by connections of its previous
                // incarnation (TIME_WAIT lasts 60 s): retry for up to 70 s.
                attempts += 1
                _ = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let node = opened!
        nodes[name] = node
        ports[name] = node.raftPort
        return node
    }

    func stop(_ name: String) async {
        await nodes.removeValue(forKey: name)?.close()
    }

    func stopAll() async {
        for name in nodes.keys { await stop(name) }
    }

    func address(_ name: String) -> String { "127.0.0.1:\(nodes[name]!.raftPort)" }

    func join(_ name: String) async throws {
        let leader = try await waitForLeader()
        try await leader.join(nodeID: name, raftAddress: address(name), httpAddress: nil, learner: false)
    }

    var currentLeader: RaftNode? { currentLeader { _ in true } }

    func currentLeader(where accept: (RaftNode) -> Bool) -> RaftNode? {
        nodes.values.first { node in accept(node) && node.published.state.withLock { $0.status.role == .leader } }
    }

    func waitForLeader() async throws -> RaftNode {
        try await waitUntil("a leader") { $0.currentLeader != nil }
        return currentLeader!
    }

    /// Polls `condition` every tick until it holds, or fails after `timeout`. Never assumes
    /// the machine is fast: the timeout is generous and only bounds a failing test.
    func waitUntil(_ what: String, timeout: Duration = .seconds(30),
                   _ condition: (TestCluster) async -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await condition(self) { return }
            try await Task.sleep(for: .milliseconds(tickMs))
        }
        throw ClusterTestError("timed out waiting for \(what)")
    }
}

struct ClusterTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

extension KeyValueNode {
    /// The key's value alone (nil: absent).
    func value(_ key: [UInt8], consistency: ReadConsistency) async throws -> [UInt8]? {
        try await get(key, consistency: consistency).value?.value
    }
}

@Suite("Raft cluster, in process over loopback", .serialized)
struct ClusterTests {
    @Test("three nodes formed by join replicate, forward follower writes, and read linearizably everywhere")
    func replication() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            defer { Task { await cluster.stopAll() } }
            let leader = try await cluster.waitForLeader()
            try await leader.put(bytes("a"), value: bytes("1"))
            let followers = cluster.nodes.values.filter { $0 !== leader }
            #expect(followers.count == 2)
            // A write through a follower is forwarded and acknowledged once applied there.
            try await followers[0].put(bytes("b"), value: bytes("2"))
            #expect(try await followers[0].value(bytes("b"), consistency: .stale) == bytes("2"))
            for node in cluster.nodes.values {
                #expect(try await node.value(bytes("a"), consistency: .linearizable) == bytes("1"))
                #expect(try await node.value(bytes("b"), consistency: .linearizable) == bytes("2"))
            }
            try await followers[1].delete(bytes("a"))
            #expect(try await leader.value(bytes("a"), consistency: .linearizable) == nil)
            let status = try await leader.status()
            #expect(status.members?.map(\.role) == ["voter", "voter", "voter"])
            #expect(status.warnings == nil)
            for node in cluster.nodes.values {
                let ready = await node.readiness()
                #expect(ready.healthy && ready.reason.contains("applied through"), "\(node.configuration.nodeID): \(ready.reason)")
            }
            await cluster.stopAll()
        }
    }

    @Test("compare-and-swap from every node: concurrent CAS increments of one counter never lose or double an update, and every replica agrees on revisions")
    func compareAndSwap() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            defer { Task { await cluster.stopAll() } }
            let leader = try await cluster.waitForLeader()
            let key = bytes("counter")
            #expect(try await leader.put(key, value: bytes("0"), condition: .modRevision(0)) == .applied(revision: 1, key: KeyRevisions(create: 1, mod: 1, version: 1)))
            #expect(try await leader.put(key, value: bytes("x"), condition: .modRevision(0)) == .conditionFailed(modRevision: 1))
            // Four clients on each node add one each, by read-then-CAS, retrying on a mismatch.
            let nodes = Array(cluster.nodes.values)
            let increments = 5
            let attempts = try await withThrowingTaskGroup(of: Int.self) { group in
                for client in 0..<(nodes.count * 4) {
                    let node = nodes[client % nodes.count]
                    group.addTask {
                        var tries = 0
                        for _ in 0..<increments {
                            while true {
                                tries += 1
                                let read = try await node.get(key, consistency: .linearizable)
                                let current = try #require(read.value)
                                let next = Int(String(decoding: current.value, as: UTF8.self))! + 1
                                if case .applied = try await node.put(key, value: bytes(String(next)), condition: .modRevision(current.revisions.mod)) {
                                    break
                                }
                            }
                        }
                        return tries
                    }
                }
                return try await group.reduce(0, +)
            }
            let total = nodes.count * 4 * increments
            #expect(attempts >= total)
            for node in nodes {
                let read = try await node.get(key, consistency: .linearizable)
                #expect(read.value?.value == bytes(String(total)), "\(node.configuration.nodeID)")
                #expect(read.value?.revisions.version == UInt64(total + 1))
            }
            await cluster.stopAll()
        }
    }

    @Test("transactions from every node: concurrent increments of two keys at once never lose or double one; read-only ones read linearizably")
    func transactions() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            defer { Task { await cluster.stopAll() } }
            let leader = try await cluster.waitForLeader()
            let (counter, log) = (bytes("counter"), bytes("log"))
            try await leader.put(counter, value: bytes("0"))
            let nodes = Array(cluster.nodes.values)
            let increments = 4
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<(nodes.count * 2) {
                    let node = nodes[client % nodes.count]
                    group.addTask {
                        for _ in 0..<increments {
                            while true {
                                // Read both in one read-only transaction, then swap both if the counter did not move.
                                let read = try await node.transaction(KVTransaction(success: [.get(key: counter)]), consistency: .linearizable)
                                guard case .get(let found?) = read.results.first else { Issue.record("no counter: \(read)"); return }
                                let next = Int(String(decoding: found.value, as: UTF8.self))! + 1
                                let swap = KVTransaction(
                                    compare: [KVComparison(key: counter, target: .modRevision, relation: .equal, operand: .number(found.revisions.mod))],
                                    success: [.put(key: counter, value: bytes(String(next))), .put(key: log, value: bytes("client \(client)"))])
                                let result = try await node.transaction(swap, consistency: .linearizable)
                                if result.succeeded {
                                    #expect(result.results == [.put(KeyRevisions(create: 1, mod: result.revision, version: UInt64(next + 1))),
                                                               .put(KeyRevisions(create: 2, mod: result.revision, version: UInt64(next)))])
                                    break
                                }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let total = nodes.count * 2 * increments
            for node in nodes {
                let read = try await node.transaction(KVTransaction(success: [.get(key: counter), .get(key: log)]), consistency: .linearizable)
                guard case .get(let value?) = read.results[0], case .get(let last?) = read.results[1] else {
                    Issue.record("\(read)")
                    continue
                }
                #expect(value.value == bytes(String(total)), "\(node.configuration.nodeID)")
                // One revision per successful transaction: the put of 0, then one per increment.
                #expect(read.revision == UInt64(1 + total) && value.revisions.mod == read.revision && last.revisions.mod == read.revision)
            }
            await cluster.stopAll()
        }
    }

    @Test("a watch on a follower sees every change in revision order, once, across a leader change")
    func watchOnFollower() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            defer { Task { await cluster.stopAll() } }
            let leader = try await cluster.waitForLeader()
            let followers = cluster.nodes.values.filter { $0 !== leader }
            let watcher = try followers[0].changes.watch(.prefix(bytes("w/")), from: WatchStart(revision: 1))
            for i in 0..<10 { try await (i % 2 == 0 ? leader : followers[1]).put(bytes("w/\(i % 3)"), value: bytes("\(i)")) }
            await cluster.stop(leader.configuration.nodeID)
            let next = try await cluster.waitForLeader()
            for i in 10..<20 { try await next.put(bytes("w/\(i % 3)"), value: bytes("\(i)")) }
            _ = try await next.deletePrefix(bytes("w/"))
            var seen: [KVEvent] = []
            while seen.count < 23 {
                guard case .events(let events) = await watcher.next() else { Issue.record("the watch ended"); break }
                seen += events
            }
            #expect(seen.prefix(20).map(\.revision) == Array(1...20))
            #expect(seen.prefix(20).map { String(decoding: $0.value, as: UTF8.self) } == (0..<20).map { "\($0)" })
            #expect(seen.suffix(3).allSatisfy { $0.kind == .delete && $0.revision == 21 } && seen.suffix(3).map(\.index) == [0, 1, 2])
            watcher.cancel()
            await cluster.stopAll()
        }
    }

    @Test("after the leader stops, a new one is elected, no acknowledged write is lost, a retry with an idempotency key is not applied twice, and the old one catches up")
    func failover() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            let leader = try await cluster.waitForLeader()
            for i in 0..<20 { try await leader.put(bytes("k\(i)"), value: bytes("v\(i)")) }
            let once = KVWrite(.put(key: bytes("once"), value: bytes("1")), idempotency: IdempotencyToken(key: bytes("retry-me"), time: 1))
            let first = try await leader.write(once)
            let oldName = leader.configuration.nodeID
            await cluster.stop(oldName)
            let newLeader = try await cluster.waitForLeader()
            #expect(newLeader.configuration.nodeID != oldName)
            // The retry of a write whose answer was lost with the old leader: the new one remembers it.
            #expect(try await newLeader.write(once) == .replayed(first))
            for i in 0..<20 {
                #expect(try await newLeader.value(bytes("k\(i)"), consistency: .linearizable) == bytes("v\(i)"))
            }
            try await newLeader.put(bytes("after"), value: bytes("failover"))
            let restarted = try await cluster.start(oldName)
            try await cluster.waitUntil("the old leader to catch up") { _ in
                (try? await restarted.value(bytes("after"), consistency: .stale)) == bytes("failover")
            }
            #expect(try await restarted.value(bytes("k7"), consistency: .linearizable) == bytes("v7"))
            #expect(try await restarted.write(once) == .replayed(first))
            #expect(try await restarted.get(bytes("once"), consistency: .linearizable).value?.revisions.version == 1)
            await cluster.stopAll()
        }
    }

    @Test("followers apply lazily but within a tick unasked, and at once for a linearizable read")
    func followerApply() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            let leader = try await cluster.waitForLeader()
            let followers = cluster.nodes.values.filter { $0 !== leader }
            for i in 0..<30 { try await leader.put(bytes("lazy\(i)"), value: bytes("v\(i)")) }
            // A linearizable read on a follower waits for its apply, which it then does at once.
            #expect(try await followers[0].value(bytes("lazy29"), consistency: .linearizable) == bytes("v29"))
            // Nobody asks the other follower anything: its ticks still apply what it holds.
            let commit = try #require(try await leader.status().commitIndex)
            try await cluster.waitUntil("the idle follower to apply everything") { _ in
                let applied = (try? await followers[1].status().appliedIndex) ?? nil
                return (applied ?? 0) >= commit
            }
            #expect(try await followers[1].value(bytes("lazy29"), consistency: .stale) == bytes("v29"))
            await cluster.stopAll()
        }
    }

    @Test("without a quorum, writes and linearizable reads fail with 503 after the timeout; stale reads still work")
    func noQuorum() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            let leader = try await cluster.waitForLeader()
            try await leader.put(bytes("x"), value: bytes("1"))
            let survivorName = cluster.nodes.keys.sorted().first { $0 != leader.configuration.nodeID }!
            for name in cluster.nodes.keys where name != survivorName { await cluster.stop(name) }
            let survivor = cluster.nodes[survivorName]!
            try await cluster.waitUntil("the survivor to apply x") { _ in
                (try? await survivor.value(bytes("x"), consistency: .stale)) == bytes("1")
            }
            let started = ContinuousClock.now
            await #expect {
                try await survivor.put(bytes("y"), value: bytes("2"))
            } throws: { error in
                // Forwarded before the survivor saw the leader go: unknown; held for a leader: not applied.
                (error as? APIError)?.status == .serviceUnavailable && (error as? APIError)?.outcome != nil
            }
            #expect(ContinuousClock.now - started >= .seconds(2), "the write should wait for the request timeout")
            await #expect {
                _ = try await survivor.value(bytes("x"), consistency: .linearizable)
            } throws: { error in
                (error as? APIError)?.code == "no_leader" || (error as? APIError)?.code == "timeout"
            }
            #expect(try await survivor.value(bytes("x"), consistency: .stale) == bytes("1"))
            #expect(await survivor.health().healthy == false)
            await cluster.stopAll()
        }
    }

    @Test("a node holding client data refuses to join another cluster (409); the cluster is unchanged")
    func joinRefusal() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(1, root: root)
            let leader = try await cluster.waitForLeader()
            // node9 bootstraps its own cluster and takes a client write.
            let other = TestCluster(root: root)
            let node9 = try await other.start("node9")
            _ = try await other.waitForLeader()
            try await node9.put(bytes("mine"), value: bytes("precious"))
            await #expect {
                try await leader.join(nodeID: "node9", raftAddress: other.address("node9"), httpAddress: nil, learner: false)
            } throws: { error in
                let error = error as? APIError
                return error?.status == .conflict && error?.code == "join_refused" && error?.message.contains("client data") == true
            }
            #expect(try await leader.status().members?.count == 1)
            #expect(try await node9.value(bytes("mine"), consistency: .linearizable) == bytes("precious"))
            await other.stopAll()
            await cluster.stopAll()
        }
    }

    @Test("joining twice with the same addresses succeeds; a conflicting address is refused")
    func joinIdempotence() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(2, root: root)
            let leader = try await cluster.waitForLeader()
            let address = cluster.address("node2")
            try await leader.join(nodeID: "node2", raftAddress: address, httpAddress: nil, learner: false)
            // The leader re-joining itself (as after an operator's remove and re-add raced a
            // leader change) is answered at once, not by asking itself over the network.
            let leaderID = leader.configuration.nodeID
            try await leader.join(nodeID: leaderID, raftAddress: cluster.address(leaderID), httpAddress: nil, learner: false)
            await #expect {
                try await leader.join(nodeID: "node2", raftAddress: "127.0.0.1:1", httpAddress: nil, learner: false)
            } throws: { ($0 as? APIError)?.code == "member_exists" }
            await #expect {
                try await leader.join(nodeID: "node7", raftAddress: address, httpAddress: nil, learner: false)
            } throws: { ($0 as? APIError)?.code == "address_in_use" }
            #expect(try await leader.status().warnings?.first?.contains("tolerates no failure") == true)
            await cluster.stopAll()
        }
    }

    @Test("leadership transfers on request, and a removed member leaves the configuration")
    func transferAndRemove() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            let leader = try await cluster.waitForLeader()
            let target = cluster.nodes.keys.sorted().first { $0 != leader.configuration.nodeID }!
            let newLeader = try await leader.transferLeadership(to: target)
            #expect(newLeader == target)
            let current = try await cluster.waitForLeader()
            #expect(current.configuration.nodeID == target)
            let removed = cluster.nodes.keys.sorted().first { $0 != target }!
            try await current.removeMember(removed)
            #expect(try await current.status().members?.map(\.id).contains(removed) == false)
            try await current.put(bytes("after-remove"), value: bytes("ok"))
            await cluster.stopAll()
        }
    }

    @Test("a follower that was down while the leader compacted its log catches up through a snapshot (Raft §7)")
    func snapshotCatchUp() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root, snapshotEntries: 25)
            let leader = try await cluster.waitForLeader()
            let laggard = cluster.nodes.keys.sorted().first { $0 != leader.configuration.nodeID }!
            await cluster.stop(laggard)
            // More writes than the transport queues for a peer that is down (64 frames), so the
            // laggard cannot catch up from queued appends alone.
            for i in 0..<200 { try await leader.put(bytes("s\(i)"), value: bytes("\(i)")) }
            try await cluster.waitUntil("the leader to compact its log") { _ in
                ((try? await leader.status())?.snapshotIndex ?? 0) > 150
            }
            let restarted = try await cluster.start(laggard)
            try await cluster.waitUntil("the laggard to catch up") { _ in
                (try? await restarted.value(bytes("s199"), consistency: .stale)) == bytes("199")
            }
            #expect(try await restarted.value(bytes("s3"), consistency: .linearizable) == bytes("3"))
            let text = String(decoding: restarted.metrics.exposition(), as: UTF8.self)
            #expect(text.contains("keyper_snapshots_installed_total 1"), "the laggard should have installed a snapshot")
            // It restarts from its own snapshot and log, with nothing lost.
            await cluster.stop(laggard)
            let again = try await cluster.start(laggard)
            #expect(try await again.value(bytes("s60"), consistency: .stale) == bytes("60"))
            try await leader.put(bytes("after"), value: bytes("snap"))
            #expect(try await again.value(bytes("after"), consistency: .linearizable) == bytes("snap"))
            await cluster.stopAll()
        }
    }

    @Test("a snapshot of many chunks is read ahead, streamed in order, stored off the loop and installed by a rename")
    func largeSnapshotCatchUp() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root, snapshotEntries: 40)
            let leader = try await cluster.waitForLeader()
            let laggard = cluster.nodes.keys.sorted().first { $0 != leader.configuration.nodeID }!
            await cluster.stop(laggard)
            // About 4 MiB: eight chunks, more than are read ahead at a time.
            let value = [UInt8](repeating: 0x5A, count: 32 << 10)
            for i in 0..<130 { try await leader.put(bytes("big\(i)"), value: value + bytes("\(i)")) }
            try await cluster.waitUntil("the leader to compact its log") { _ in
                ((try? await leader.status())?.snapshotIndex ?? 0) > 100
            }
            let restarted = try await cluster.start(laggard)
            try await cluster.waitUntil("the laggard to catch up") { _ in
                (try? await restarted.value(bytes("big129"), consistency: .stale)) == value + bytes("129")
            }
            for i in [0, 64, 100] {
                #expect(try await restarted.value(bytes("big\(i)"), consistency: .linearizable) == value + bytes("\(i)"))
            }
            let text = String(decoding: restarted.metrics.exposition(), as: UTF8.self)
            #expect(text.contains("keyper_snapshots_installed_total 1"), "the laggard should have installed one snapshot")
            // The received file was committed and the prepared copy renamed into place: no
            // temporary file is left behind.
            let files = try FileIO.listDirectory(root + "/" + laggard + "/snapshots")
            #expect(files.allSatisfy { !$0.hasSuffix(".tmp") }, "left: \(files)")
            await cluster.stopAll()
        }
    }

    @Test("compaction copies nothing, and a node restarts from its durable state machine plus the log after it, losing nothing")
    func restartFromSnapshot() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(1, root: root, snapshotEntries: 10)
            let node = try await cluster.waitForLeader()
            for i in 0..<35 { try await node.put(bytes("r\(i)"), value: bytes("\(i)")) }
            try await cluster.waitUntil("a compaction") { _ in ((try? await node.status())?.snapshotIndex ?? 0) > 0 }
            // The state machine is the snapshot: nobody needed a copy, so none was made...
            let files = try FileIO.listDirectory(root + "/node1/snapshots")
            #expect(files.isEmpty, "snapshot files without a follower to send them to: \(files)")
            // ...and what the log dropped is durable in it (the mark of the fsync that allowed it).
            let snapshotIndex = try #require(try await node.status().snapshotIndex)
            #expect(try node.store.durableIndex() >= snapshotIndex)
            await cluster.stop("node1")
            let restarted = try await cluster.start("node1")
            for i in 0..<35 {
                #expect(try await restarted.value(bytes("r\(i)"), consistency: .linearizable) == bytes("\(i)"))
            }
            await cluster.stopAll()
        }
    }

    @Test("a five-node cluster keeps serving with two nodes down")
    func fiveNodes() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(5, root: root)
            let leader = try await cluster.waitForLeader()
            try await leader.put(bytes("five"), value: bytes("1"))
            let victims = cluster.nodes.keys.sorted().filter { $0 != leader.configuration.nodeID }.prefix(2)
            for name in victims { await cluster.stop(name) }
            try await leader.put(bytes("five"), value: bytes("2"))
            for node in cluster.nodes.values {
                #expect(try await node.value(bytes("five"), consistency: .linearizable) == bytes("2"))
            }
            await cluster.stopAll()
        }
    }
}

extension ClusterTests {
    @Test("a crash between recording an installed snapshot and replacing the database is repaired at start")
    func interruptedInstall() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root, snapshotEntries: 10)
            let leader = try await cluster.waitForLeader()
            try await leader.put(bytes("early"), value: bytes("1"))
            let laggard = cluster.nodes.keys.sorted().first { $0 != leader.configuration.nodeID }!
            await cluster.stop(laggard)
            // The laggard's state machine from before the snapshot it is about to install...
            let state = root + "/" + laggard + "/state"
            let stale = try KVStore(path: state, durability: .normal)
            _ = try stale.copy(to: root + "/old-state")
            stale.close()
            for i in 0..<150 { try await leader.put(bytes("late\(i)"), value: bytes("\(i)")) }
            try await cluster.waitUntil("the leader to compact its log") { _ in
                ((try? await leader.status())?.snapshotIndex ?? 0) > 100
            }
            var restarted = try await cluster.start(laggard)
            try await cluster.waitUntil("the laggard to install a snapshot") { _ in
                String(decoding: restarted.metrics.exposition(), as: UTF8.self).contains("keyper_snapshots_installed_total 1")
            }
            await cluster.stop(laggard)
            // ...put back as if the crash hit after its log moved past it but before the
            // database was replaced: the applied index is now behind the log's start.
            FileIO.removeTree(state)
            try FileIO.makeDirectories(state)
            try FileIO.copyFile(from: root + "/old-state", to: state + "/0000000000000001.seg")
            restarted = try await cluster.start(laggard)
            for i in 0..<150 {
                #expect(try await restarted.value(bytes("late\(i)"), consistency: .linearizable) == bytes("\(i)"))
            }
            #expect(try await restarted.value(bytes("early"), consistency: .linearizable) == bytes("1"))
            await cluster.stopAll()
        }
    }
}

/// `KEYPER_TEST_LOG=info swift test ...` shows the in-process nodes' logs.
enum ProcessInfoLevel {
    static var level: Logger.Level {
        getenv("KEYPER_TEST_LOG").flatMap { Logger.Level(rawValue: String(cString: $0)) } ?? .error
    }
}

/// Collects which writes were acknowledged, from a writer task.
final class AcknowledgedWrites: @unchecked Sendable {
    private let lock = NSLockLike()
    private var keys: [String] = []
    private var failures = 0

    func record(_ key: String) { lock.locked { keys.append(key) } }
    func fail() { lock.locked { failures += 1 } }
    var snapshot: (keys: [String], failures: Int) { lock.locked { (keys, failures) } }
}

/// A tiny mutex for test bookkeeping.
final class NSLockLike: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }
}

extension ClusterTests {
    @Test("join, leadership transfer and removal under a steady write load lose no acknowledged write")
    func membershipUnderLoad() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root)
            let acknowledged = AcknowledgedWrites()
            let stop = NSLockLike()
            nonisolated(unsafe) var stopping = false
            let writers = cluster.nodes.values.map { $0 }
            let writer = Task {
                var i = 0
                while !stop.locked({ stopping }) {
                    let key = "load\(i)"
                    do {
                        try await writers[i % writers.count].put(bytes(key), value: bytes("\(i)"))
                        acknowledged.record(key)
                    } catch {
                        acknowledged.fail()  // indeterminate or refused: not counted as acknowledged
                    }
                    i += 1
                }
            }
            // A fourth node joins, leadership moves to it, then it is removed again.
            try await cluster.start("node4")
            try await cluster.join("node4")
            try await cluster.waitUntil("node4 to become a voter") { cluster in
                guard let leader = cluster.currentLeader, let status = try? await leader.status() else { return false }
                return status.members?.first { $0.id == "node4" }?.role == "voter"
            }
            let leader = try await cluster.waitForLeader()
            _ = try await leader.transferLeadership(to: "node4")
            let newLeader = try await cluster.waitForLeader()
            #expect(newLeader.configuration.nodeID == "node4")
            // Removing the leader itself: it hands leadership over first. In-process nodes have
            // no HTTP listener to forward to, so the removal is finished on the next leader here.
            do {
                try await newLeader.removeMember("node4")
            } catch let error as APIError where error.code == "leader_transfer" {
                try await cluster.waitUntil("leadership to leave node4") { $0.currentLeader.map { $0 !== newLeader } ?? false }
                try await cluster.waitForLeader().removeMember("node4")
            }
            try await cluster.waitUntil("node4 to leave") { cluster in
                guard let leader = cluster.currentLeader, leader.configuration.nodeID != "node4",
                      let status = try? await leader.status() else { return false }
                return status.members?.contains { $0.id == "node4" } == false
            }
            try await Task.sleep(for: .milliseconds(300))
            stop.locked { stopping = true }
            await writer.value
            let (keys, failures) = acknowledged.snapshot
            #expect(keys.count > 20, "the load should have kept writing (\(keys.count) acknowledged, \(failures) not)")
            await cluster.stop("node4")
            for node in cluster.nodes.values {
                for key in keys {
                    #expect(try await node.value(bytes(key), consistency: .linearizable) != nil, "\(key) lost on \(node.configuration.nodeID)")
                }
            }
            await cluster.stopAll()
        }
    }
}

extension ClusterTests {
    @Test("a follower's ReadIndex round lost on the way to the leader is given up and retried: the read still succeeds")
    func lostReadRound() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root, faultInjection: true)
            let leader = try await cluster.waitForLeader()
            try await leader.put(bytes("r"), value: bytes("1"))
            let follower = cluster.nodes.values.first { $0 !== leader }!
            // Everything the follower sends the leader is lost for a while, its read request too.
            try follower.setFaults(dropTo: [leader.configuration.nodeID], dropFrom: [])
            let read = Task { try await follower.value(bytes("r"), consistency: .linearizable) }
            try await Task.sleep(for: .milliseconds(200))
            try follower.setFaults(dropTo: [], dropFrom: [])
            // Only a retried round can answer it: the first one's request never arrived.
            #expect(try await read.value == bytes("1"))
            await cluster.stopAll()
        }
    }

    @Test("an isolated leader steps down and serves no linearizable read; the majority elects a new one; healing rejoins it")
    func partitionedLeader() async throws {
        try await withTemporaryDirectory { root in
            let cluster = try await TestCluster.make(3, root: root, faultInjection: true)
            let old = try await cluster.waitForLeader()
            try await old.put(bytes("p"), value: bytes("before"))
            let others = cluster.nodes.keys.filter { $0 != old.configuration.nodeID }
            try old.setFaults(dropTo: Set(others), dropFrom: Set(others))
            for name in others { try cluster.nodes[name]!.setFaults(dropTo: [old.configuration.nodeID], dropFrom: [old.configuration.nodeID]) }

            try await cluster.waitUntil("a new leader among the majority") { cluster in
                cluster.nodes.values.contains { $0 !== old && $0.published.state.withLock { $0.status.role == .leader } }
            }
            let newLeader = cluster.currentLeader { $0 !== old }!
            try await newLeader.put(bytes("p"), value: bytes("after"))
            // The old leader must not answer a linearizable read from its stale copy.
            await #expect(throws: APIError.self) { _ = try await old.value(bytes("p"), consistency: .linearizable) }
            #expect(try await old.value(bytes("p"), consistency: .stale) == bytes("before"))

            for node in cluster.nodes.values { try node.setFaults(dropTo: [], dropFrom: []) }
            try await cluster.waitUntil("the old leader to catch up") { _ in
                (try? await old.value(bytes("p"), consistency: .stale)) == bytes("after")
            }
            #expect(try await old.value(bytes("p"), consistency: .linearizable) == bytes("after"))
            await cluster.stopAll()
        }
    }
}

/// Hands a simulated disk to the node and to the test (the test changes it only on the node's loop).
final class DiskBox: @unchecked Sendable {
    let disk = SimulatedFileSystem()
}

extension ClusterTests {
    @Test("a full disk refuses writes with 507 and changes nothing; writes resume when space returns")
    func diskFull() async throws {
        try await withTemporaryDirectory { root in
            let cluster = TestCluster(root: root)
            var configuration = cluster.configuration("node1")
            let box = DiskBox()
            configuration.cluster?.walFileSystem = { box.disk }
            // The simulated disk has only the directories it is told about.
            var prefix = ""
            for component in (root + "/node1").split(separator: "/") {
                prefix += "/" + component
                try box.disk.createDirectory(prefix)
            }
            let node = try await RaftNode.open(configuration: configuration, logger: Logger(label: "test.disk"))
            try await cluster.waitUntil("a leader") { _ in node.published.state.withLock { $0.status.role == .leader } }
            try await node.put(bytes("before"), value: bytes("1"))

            // The disk fills up: the next batch cannot be written.
            try await node.engine.loop.submit { box.disk.capacityBytes = box.disk.usedBytes + 16 }.get()
            let first = Task { try await node.put(bytes("during"), value: bytes("2")) }
            try await cluster.waitUntil("the node to report a full disk") { _ in !(await node.health().healthy) }
            await #expect {
                try await node.put(bytes("refused"), value: bytes("3"))
            } throws: { error in
                (error as? APIError)?.status.code == 507 && (error as? APIError)?.code == "disk_full"
            }
            #expect(try await node.status().warnings?.contains { $0.contains("disk is full") } == true)

            // Space returns: the stalled batch is written and writes go through again.
            try await node.engine.loop.submit { box.disk.capacityBytes = nil }.get()
            try await cluster.waitUntil("the node to recover") { _ in await node.health().healthy }
            try await node.put(bytes("after"), value: bytes("4"))
            _ = try? await first.value  // acknowledged or timed out: either is allowed for the write in flight
            #expect(try await node.value(bytes("before"), consistency: .linearizable) == bytes("1"))
            #expect(try await node.value(bytes("after"), consistency: .linearizable) == bytes("4"))
            #expect(try await node.value(bytes("refused"), consistency: .linearizable) == nil, "a refused write must change nothing")
            await node.close()
        }
    }
}
