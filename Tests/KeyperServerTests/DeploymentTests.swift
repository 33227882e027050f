import Foundation
import HummingbirdTesting
import KeyperBase
import KeyperTestSupport
import NIOCore
import Testing

/// A cluster of real processes started the way the README's walk-through does it: each node
/// bootstraps, then the first is asked to add the others with `POST /v1/join`.
final class WalkthroughCluster: @unchecked Sendable {
    let dir: String
    let ports: [Int]
    let unprivileged: Bool
    let faultInjection: Bool
    var processes: [Int: KeyperProcess] = [:]
    var starts = 0

    init(dir: String, size: Int, unprivileged: Bool = false, faultInjection: Bool = false) {
        self.dir = dir
        self.ports = freePorts(2 * size)
        self.unprivileged = unprivileged
        self.faultInjection = faultInjection
        self.size = size
    }

    let size: Int

    func dataDirectory(_ index: Int) -> String { "\(dir)/node\(index)" }
    func httpPort(_ index: Int) -> Int { ports[index - 1] }
    func raftAddress(_ index: Int) -> String { "127.0.0.1:\(ports[size + index - 1])" }

    func arguments(_ index: Int, join: Int? = nil) -> [String] {
        var arguments = ["--data-dir", dataDirectory(index), "--node-id", "node\(index)",
                         "--http-addr", "127.0.0.1:\(httpPort(index))", "--enable-raft", "--raft-addr", raftAddress(index),
                         "--tick-interval", "50ms", "--election-timeout", "500ms", "--heartbeat-interval", "50ms",
                         "--request-timeout", "10s"]
        if faultInjection { arguments.append("--enable-fault-injection") }
        if let join { arguments += ["--join", "http://127.0.0.1:\(httpPort(join))"] }
        return arguments
    }

    /// Starts every node (each bootstraps), waits for node1 to lead and joins the others
    /// through it, each answered 204 (a voter).
    func form() async throws {
        for index in 1...size { try await start(index) }
        try await waitFor("node1 to lead") { (try? await self.status(1))?["is_leader"] as? Bool == true }
        for index in 2...size {
            let answer = try await join(index, via: 1)
            #expect(answer.status == 204, "join of node\(index): \(answer)")
        }
    }

    /// The incarnation the leader's configuration records for node `index`.
    func incarnation(of index: Int, leader: Int = 1) async throws -> String? {
        let members = (try await status(leader))["members"] as? [[String: Any]] ?? []
        return members.first { $0["id"] as? String == "node\(index)" }?["incarnation"] as? String
    }

    /// Waits until node1 lists node `index` as a voter under an incarnation other than `old`.
    func waitForVoter(_ index: Int, replacing old: String?) async throws {
        try await waitFor("node\(index) to be a voter under a new incarnation") {
            let members = (try? await self.status(1))?["members"] as? [[String: Any]] ?? []
            let node = members.first { $0["id"] as? String == "node\(index)" }
            return node?["role"] as? String == "voter" && node?["incarnation"] as? String != old
        }
    }

    func start(_ index: Int, join: Int? = nil) async throws {
        if unprivileged { Unprivileged.prepare(dataDirectory(index), under: dir) }
        starts += 1
        let process = try KeyperProcess(arguments: arguments(index, join: join), logPath: "\(dir)/node\(index)-\(starts).log",
                                        unprivileged: unprivileged)
        processes[index] = process
        try await process.waitUntilListening()
    }

    func kill(_ index: Int) async {
        guard let process = processes.removeValue(forKey: index) else { return }
        process.signal(SIGKILL)
        _ = await process.exited()
    }

    /// For `defer`: kills every node and waits (briefly blocking) for each to exit.
    func stopAll() {
        for process in processes.values {
            process.signal(SIGKILL)
            _ = process.waitForExit()
        }
        processes = [:]
    }

    /// `POST /v1/join` of node `index` to node `via`, as in the README.
    func join(_ index: Int, via: Int) async throws -> (status: Int, body: String) {
        try await withClient(processes[via]!) { client in
            let body = #"{"node_id":"node\#(index)","raft_addr":"\#(raftAddress(index))","http_addr":"127.0.0.1:\#(httpPort(index))"}"#
            let response = try await client.execute(.init("/v1/join", method: .post, headers: [.contentType: "application/json"],
                                                          body: ByteBuffer(string: body)))
            return (Int(response.status.code), response.body.map { String(buffer: $0) } ?? "")
        }
    }

    func put(_ key: String, _ value: String, on index: Int) async throws -> Int {
        try await withClient(processes[index]!) { client in
            Int(try await client.execute(.init("/v1/keys/\(key)", method: .put, body: ByteBuffer(string: value))).status.code)
        }
    }

    func get(_ key: String, on index: Int, stale: Bool = false) async throws -> String? {
        try await withClient(processes[index]!) { client in
            let response = try await client.execute(.init("/v1/keys/\(key)" + (stale ? "?consistency=stale" : ""), method: .get))
            return response.status == .ok ? response.body.map { String(buffer: $0) } : nil
        }
    }

    func status(_ index: Int) async throws -> [String: Any] { try await KeyperServerTests.status(of: processes[index]!) }

    func setFaults(_ index: Int, drop nodes: [Int]) async throws {
        try await withClient(processes[index]!) { client in
            let names = nodes.map { "\"node\($0)\"" }.joined(separator: ",")
            let body = #"{"drop_to":[\#(names)],"drop_from":[\#(names)]}"#
            let response = try await client.execute(.init("/v1/debug/faults", method: .post, headers: [.contentType: "application/json"],
                                                          body: ByteBuffer(string: body)))
            #expect(response.status == .noContent || response.status == .ok)
        }
    }

    /// The leader some node among `among` reports, once one does.
    func leader(among: [Int], timeout: Duration = .seconds(60)) async throws -> Int {
        var found = 0
        try await waitFor("a leader among \(among)", timeout: timeout) {
            for index in among {
                if let leader = (try? await self.status(index))?["leader_id"] as? String,
                   let number = Int(leader.dropFirst(4)), among.contains(number) {
                    found = number
                    return true
                }
            }
            return false
        }
        return found
    }

    var logs: String {
        processes.keys.sorted().map { "--- node\($0)\n" + processes[$0]!.log.suffix(3_000) }.joined(separator: "\n")
    }
}

@Suite("Real deployment conditions", .serialized)
struct DeploymentTests {
    /// The README's walk-through with every node running as `nobody`: joins answer 204 only
    /// once the node is a voter, so killing the leader right after the last join still leaves
    /// a majority that elects a new leader holding every acknowledged write.
    @Test("README walk-through as an unprivileged user: join, write, kill -9 the leader right after the last join, nothing lost")
    func unprivilegedWalkthrough() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        let reason = Unprivileged.unavailableReason
        if let reason { print("note: nodes run as the current user, not an unprivileged one: \(reason)") }
        try await withTemporaryDirectory { dir in
            let cluster = WalkthroughCluster(dir: dir, size: 3, unprivileged: reason == nil)
            defer { cluster.stopAll() }
            for index in 1...3 { try await cluster.start(index) }
            try await waitFor("node1 to lead") { (try? await cluster.status(1))?["is_leader"] as? Bool == true }
            #expect(try await cluster.put("before", "joins", on: 1) == 204)
            for index in [2, 3] {
                let answer = try await cluster.join(index, via: 1)
                #expect(answer.status == 204, "join of node\(index): \(answer)\n\(cluster.logs)")
                let members = (try await cluster.status(1))["members"] as? [[String: Any]] ?? []
                let role = members.first { $0["id"] as? String == "node\(index)" }?["role"] as? String
                #expect(role == "voter", "a 204 join means a voter")
            }
            #expect(try await cluster.put("after", "joins", on: 2) == 204, "a write through a follower")
            await cluster.kill(1)
            let leader = try await cluster.leader(among: [2, 3])
            for index in [2, 3] {
                #expect(try await cluster.get("before", on: index) == "joins", "node\(index), leader node\(leader)")
                #expect(try await cluster.get("after", on: index) == "joins", "node\(index)")
            }
            #expect(try await cluster.put("new", "leader", on: leader) == 204)
        }
    }

    /// The issue's scenario with real processes: node2 is cut off from the leader node1; X
    /// commits on node1 and node3; node3's disk is replaced and it rejoins (new incarnation);
    /// node1 dies. node2 must not be elected with node3's vote (its log lacks X); once node1 is
    /// back, X is there.
    @Test("A member with a replaced disk cannot vote for a candidate missing an acknowledged write")
    func replacedDiskDoesNotVote() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let cluster = WalkthroughCluster(dir: dir, size: 3, faultInjection: true)
            defer { cluster.stopAll() }
            try await cluster.form()
            // node2 lags: cut off from node1 both ways.
            try await cluster.setFaults(1, drop: [2])
            try await cluster.setFaults(2, drop: [1])
            #expect(try await cluster.put("x", "acknowledged", on: 1) == 204, "X commits on node1 and node3")
            #expect(try await cluster.get("x", on: 2, stale: true) == nil, "node2 must not have X")
            // node3's disk is replaced; it comes back empty and asks to join again.
            await cluster.kill(3)
            removeTree(cluster.dataDirectory(3))
            try await cluster.start(3, join: 1)
            try await Task.sleep(for: .seconds(2))
            await cluster.kill(1)
            try await cluster.setFaults(2, drop: [])
            // Several election timeouts: node2 must not win with node3's vote.
            let deadline = ContinuousClock.now + .seconds(8)
            while ContinuousClock.now < deadline {
                for index in [2, 3] {
                    let status = try await cluster.status(index)
                    #expect(status["is_leader"] as? Bool != true, "node\(index) was elected without X:\n\(cluster.logs)")
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            // node1 comes back: X is still there, and the replacement completes.
            try await cluster.start(1)
            let leader = try await cluster.leader(among: [1, 2])
            #expect(try await cluster.get("x", on: 2) == "acknowledged", "X was lost (leader node\(leader))\n\(cluster.logs)")
            try await waitFor("node3 to be a voter again under its new incarnation") {
                process2Voters(try? await cluster.status(leader)) == 3
            }
            #expect(try await cluster.get("x", on: 3) == "acknowledged")
        }
    }

    /// The everyday case: a healthy cluster, one follower's data directory wiped, the node
    /// restarted with --join. It is replaced as a new member (not crashed by a commit index
    /// beyond its empty log) and ends up a voter with all the data.
    @Test("A follower whose data directory was wiped rejoins with --join as a new member and catches up")
    func wipedFollowerRejoins() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let cluster = WalkthroughCluster(dir: dir, size: 3)
            defer { cluster.stopAll() }
            try await cluster.form()
            for i in 0..<20 { #expect(try await cluster.put("k\(i)", "v\(i)", on: 1) == 204) }
            let oldIncarnation = try await cluster.incarnation(of: 3)
            await cluster.kill(3)
            removeTree(cluster.dataDirectory(3))
            try await cluster.start(3, join: 1)
            try await cluster.waitForVoter(3, replacing: oldIncarnation)
            #expect(cluster.processes[3]!.process.isRunning, "node3 died:\n\(cluster.processes[3]!.log)")
            #expect(try await cluster.get("k19", on: 3) == "v19")
            #expect(try await cluster.put("after", "rejoin", on: 3) == 204)
        }
    }

    /// A follower whose log was cut (`--wal-truncate-corrupt`) may have lost entries it
    /// acknowledged: it takes a new incarnation and rejoins by itself as a learner, to be
    /// promoted once caught up.
    @Test("A follower started with --wal-truncate-corrupt rejoins under a new incarnation and catches up")
    func truncatedFollowerRejoins() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let cluster = WalkthroughCluster(dir: dir, size: 3)
            defer { cluster.stopAll() }
            try await cluster.form()
            for i in 0..<40 { #expect(try await cluster.put("k\(i)", "v\(i)", on: 1) == 204) }
            let oldIncarnation = try await cluster.incarnation(of: 3)
            cluster.processes[3]!.signal(SIGTERM)
            _ = await cluster.processes[3]!.exited()
            cluster.processes[3] = nil

            // Damage a byte in the middle of node3's log: corruption, not a torn tail.
            let walDirectory = cluster.dataDirectory(3) + "/wal"
            let segment = try #require(try FileManager.default.contentsOfDirectory(atPath: walDirectory)
                .filter { $0.hasSuffix(".wal") }.sorted().first)
            var bytes = try #require(FileManager.default.contents(atPath: walDirectory + "/" + segment))
            bytes[bytes.count / 2] ^= 0xFF
            try bytes.write(to: URL(fileURLWithPath: walDirectory + "/" + segment))

            let restarted = try KeyperProcess(arguments: cluster.arguments(3) + ["--wal-truncate-corrupt"],
                                              logPath: dir + "/node3-truncated.log")
            cluster.processes[3] = restarted
            try await restarted.waitUntilListening()
            #expect(restarted.log.contains("new incarnation"), "\(restarted.log)")
            try await cluster.waitForVoter(3, replacing: oldIncarnation)
            #expect(try await cluster.get("k39", on: 3) == "v39")
            #expect(try await cluster.get("k0", on: 3, stale: true) == "v0")
        }
    }

    @Test("A member whose Raft log is gone refuses to start and says what to do")
    func missingLogRefused() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let cluster = WalkthroughCluster(dir: dir, size: 1)
            defer { cluster.stopAll() }
            try await cluster.start(1)
            #expect(try await cluster.put("k", "v", on: 1) == 204)
            cluster.processes[1]!.signal(SIGTERM)
            _ = await cluster.processes[1]!.exited()
            cluster.processes[1] = nil
            removeTree(cluster.dataDirectory(1) + "/wal")
            let refused = try KeyperProcess(arguments: cluster.arguments(1), logPath: dir + "/refused.log")
            #expect(await refused.exited() != 0)
            #expect(refused.log.contains("wal/") && refused.log.contains("--join"), "\(refused.log)")
        }
    }
}
