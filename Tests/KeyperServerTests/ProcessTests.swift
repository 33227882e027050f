import Foundation
import HummingbirdTesting
import KeyperBase
import KeyperTestSupport
import NIOCore
import NIOPosix
import KeyperVerify
import Testing

/// A `keyper` process started from the binary `swift build` put next to the test bundle.
final class KeyperProcess: @unchecked Sendable {
    let process = Process()
    let logPath: String
    private(set) var port = 0

    /// The built `keyper` executable, beside this test bundle in `.build/<config>/`.
    static var executablePath: String {
        let bundle = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: bundle).deletingLastPathComponent().appendingPathComponent("keyper").path
    }

    /// `unprivileged`: run the node as `nobody` (through setpriv, which execs it: the pid is
    /// the node's), as a service unit with `User=` would. Only when this process is root.
    init(arguments: [String], logPath: String, unprivileged: Bool = false) throws {
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        if unprivileged {
            process.executableURL = URL(fileURLWithPath: Unprivileged.setpriv)
            process.arguments = Unprivileged.setprivArguments + [Unprivileged.reachableExecutable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: Self.executablePath)
            process.arguments = arguments
        }
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    /// Waits for the "listening on" line and learns the port; fails if the process exits first.
    func waitUntilListening(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if let range = text.range(of: "listening on http://127.0.0.1:") {
                port = Int(text[range.upperBound...].prefix(while: \.isNumber)) ?? 0
                return
            }
            guard process.isRunning else { throw ProcessTestError("keyper exited early:\n\(text)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ProcessTestError("keyper did not start listening within \(timeout)")
    }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Records an issue (never skips silently) when `swift build` has not produced the binary.
    static func binaryIsBuilt() -> Bool {
        guard FileManager.default.isExecutableFile(atPath: executablePath) else {
            Issue.record("no keyper binary at \(executablePath): build it with `swift build` first")
            return false
        }
        return true
    }

    /// Waits for exit without holding a thread of the cooperative pool (a blocking wait there
    /// starves every other test's tasks on a 2-core machine), and returns the status.
    func exited() async -> Int32 {
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        return process.terminationStatus
    }

    /// Waits for exit and returns the status. Blocks its thread: only for `defer` and
    /// synchronous code; async tests use ``exited()``.
    func waitForExit() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }

    func client() -> TestClient {
        TestClient(host: "127.0.0.1", port: port, configuration: .init(), eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton))
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

/// Running nodes as an unprivileged user, the way a service runs: `nobody`, through setpriv.
enum Unprivileged {
    static let setpriv = "/usr/bin/setpriv"
    static let setprivArguments = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    static let uid: uid_t = 65534
    static let gid: gid_t = 65534

    /// Why nodes cannot be started as another user here, nil when they can.
    static var unavailableReason: String? {
        if geteuid() != 0 { return "the suite does not run as root, so it cannot start nodes as another user" }
        if !FileManager.default.isExecutableFile(atPath: setpriv) { return "\(setpriv) is missing (util-linux)" }
        return nil
    }

    /// The `keyper` binary at a path the unprivileged user can execute: where it was built if
    /// every directory above it lets others through, else a copy under /tmp (a checkout under
    /// a private home directory).
    static let reachableExecutable: String = {
        let built = KeyperProcess.executablePath
        let check = Process()
        check.executableURL = URL(fileURLWithPath: setpriv)
        check.arguments = setprivArguments + ["/usr/bin/test", "-x", built]
        if (try? check.run()) != nil {
            check.waitUntilExit()
            if check.terminationStatus == 0 { return built }
        }
        let copy = "/tmp/keyper-unprivileged-bin/keyper"  // one place, replaced on each run
        try? FileManager.default.createDirectory(atPath: (copy as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o755])
        try? FileManager.default.removeItem(atPath: copy)
        try? FileManager.default.copyItem(atPath: built, toPath: copy)
        chmod(copy, 0o755)
        return copy
    }()

    /// A directory the unprivileged user owns (and can reach: its parents are opened up).
    static func prepare(_ directory: String, under root: String) {
        chmod(root, 0o755)
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chown(directory, uid, gid)
    }
}

struct ProcessTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func withClient<T>(_ process: KeyperProcess, _ body: (TestClient) async throws -> T) async throws -> T {
    let client = process.client()
    client.connect()
    do {
        let result = try await body(client)
        try await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

@Suite("The keyper process", .serialized)
struct ProcessTests {
    @Test("a value written survives kill -9 and a clean SIGTERM restart")
    func survivesKill() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let arguments = ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:0", "--node-id", "node1"]
            var generator = SystemRandomNumberGenerator()
            let value = (0..<16_384).map { _ in UInt8.random(in: 0...255, using: &generator) }

            let first = try KeyperProcess(arguments: arguments, logPath: dir + "/first.log")
            try await first.waitUntilListening()
            try await withClient(first) { client in
                let put = try await client.execute(.init("/v1/keys/dir/k%20ey", method: .put, body: ByteBuffer(bytes: value)))
                #expect(put.status == .noContent)
            }
            first.signal(SIGKILL)
            #expect(await first.exited() != 0)

            let second = try KeyperProcess(arguments: arguments, logPath: dir + "/second.log")
            try await second.waitUntilListening()
            try await withClient(second) { client in
                let get = try await client.execute(.init("/v1/keys/dir/k%20ey", method: .get))
                #expect(get.status == .ok)
                #expect(get.body.map { Array(buffer: $0) } == value, "value lost across kill -9")
                let delete = try await client.execute(.init("/v1/keys/dir/k%20ey", method: .delete))
                #expect(delete.status == .noContent)
            }
            second.signal(SIGTERM)
            #expect(await second.exited() == 0, "SIGTERM should exit cleanly:\n\(second.log)")

            let third = try KeyperProcess(arguments: arguments, logPath: dir + "/third.log")
            try await third.waitUntilListening()
            try await withClient(third) { client in
                let get = try await client.execute(.init("/v1/keys/dir/k%20ey", method: .get))
                #expect(get.status == .notFound, "the delete was lost")
            }
            third.signal(SIGINT)
            #expect(await third.exited() == 0)
        }
    }

    @Test("a single Raft node bootstraps, and an acknowledged write survives kill -9")
    func raftSurvivesKill() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let arguments = ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:0", "--node-id", "node1",
                             "--enable-raft", "--raft-addr", "127.0.0.1:0", "--election-timeout", "300ms", "--tick-interval", "50ms"]
            let first = try KeyperProcess(arguments: arguments, logPath: dir + "/first.log")
            try await first.waitUntilListening()
            try await withClient(first) { client in
                // The first write waits for the node to elect itself.
                let put = try await client.execute(.init("/v1/keys/raft", method: .put, body: ByteBuffer(string: "durable")))
                #expect(put.status == .noContent, "\(first.log)")
            }
            first.signal(SIGKILL)
            _ = await first.exited()

            let second = try KeyperProcess(arguments: arguments, logPath: dir + "/second.log")
            try await second.waitUntilListening()
            try await withClient(second) { client in
                let get = try await client.execute(.init("/v1/keys/raft", method: .get))
                #expect(get.status == .ok)
                #expect(get.body.map { String(buffer: $0) } == "durable", "\(second.log)")
                let status = try await client.execute(.init("/v1/status", method: .get))
                #expect(status.body.map { String(buffer: $0) }?.contains(#""mode":"raft""#) == true)
            }
            second.signal(SIGTERM)
            #expect(await second.exited() == 0, "\(second.log)")
        }
    }

    @Test("a data directory is refused in the other mode, naming the problem")
    func modeMismatch() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let standalone = try KeyperProcess(arguments: ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:0"],
                                               logPath: dir + "/standalone.log")
            try await standalone.waitUntilListening()
            standalone.signal(SIGTERM)
            _ = await standalone.exited()
            let raft = try KeyperProcess(arguments: ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:0",
                                                     "--enable-raft", "--raft-addr", "127.0.0.1:0"], logPath: dir + "/raft.log")
            #expect(await raft.exited() != 0)
            #expect(raft.log.contains("holds a standalone node's data"), "\(raft.log)")
        }
    }

    @Test("a foreign data directory stops start-up with a message naming it")
    func foreignDataDirectory() throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try withTemporaryDirectory { dir in
            writeFile(dir + "/MANIFEST", "badger")
            let process = try KeyperProcess(arguments: ["--data-dir", dir, "--http-addr", "127.0.0.1:0"],
                                            logPath: "/tmp/keyper-foreign-\(getpid()).log")
            defer { unlink(process.logPath) }
            #expect(process.waitForExit() != 0)
            #expect(process.log.contains("not a Keyper data directory"))
            #expect(process.log.contains("MANIFEST"))
        }
    }
}

/// Reads `/v1/status` of a process as a dictionary.
func status(of process: KeyperProcess) async throws -> [String: Any] {
    try await withClient(process) { client in
        let response = try await client.execute(.init("/v1/status", method: .get))
        let data = Data((response.body.map { Array(buffer: $0) }) ?? [])
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }
}

extension ProcessTests {
    @Test("three processes: --join through a follower, kill -9 the leader, a new leader, nothing lost, a lease kept through followers outlives the failover, then expires everywhere; rejoin")
    func threeProcessFailover() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let ports = freePorts(6)
            func arguments(_ index: Int, join: Int? = nil) -> [String] {
                var arguments = ["--data-dir", "\(dir)/node\(index)", "--node-id", "node\(index)",
                                 "--http-addr", "127.0.0.1:\(ports[index - 1])", "--enable-raft",
                                 "--raft-addr", "127.0.0.1:\(ports[index + 2])",
                                 "--tick-interval", "50ms", "--election-timeout", "500ms", "--heartbeat-interval", "50ms"]
                if let join { arguments += ["--join", "http://127.0.0.1:\(ports[join - 1])"] }
                return arguments
            }
            var processes: [Int: KeyperProcess] = [:]
            defer { for process in processes.values { process.signal(SIGKILL); _ = process.waitForExit() } }
            processes[1] = try KeyperProcess(arguments: arguments(1), logPath: dir + "/node1.log")
            try await processes[1]!.waitUntilListening()
            try await waitFor("node1 to lead") { (try? await status(of: processes[1]!))?["is_leader"] as? Bool == true }
            processes[2] = try KeyperProcess(arguments: arguments(2, join: 1), logPath: dir + "/node2.log")
            try await processes[2]!.waitUntilListening()
            try await waitFor("node2 to join") { process2Voters(try? await status(of: processes[1]!)) == 2 }
            // node3 asks node2, a follower, which forwards the join to the leader.
            processes[3] = try KeyperProcess(arguments: arguments(3, join: 2), logPath: dir + "/node3.log")
            try await processes[3]!.waitUntilListening()
            try await waitFor("node3 to join") { process2Voters(try? await status(of: processes[1]!)) == 3 }

            try await withClient(processes[1]!) { client in
                let put = try await client.execute(.init("/v1/keys/k", method: .put, body: ByteBuffer(string: "v1")))
                #expect(put.status == .noContent)
            }
            // A lease granted through a follower, a key attached through the other, kept alive
            // through a follower (which forwards to the leader).
            let lease = try await withClient(processes[2]!) { client in
                let grant = try await client.execute(.init("/v1/leases", method: .post, body: ByteBuffer(string: #"{"ttl":"5s"}"#)))
                #expect(grant.status == .created)
                return try #require(jsonNumber(String(buffer: grant.body ?? ByteBuffer()), "id").map { UInt64($0) })
            }
            try await withClient(processes[3]!) { client in
                let put = try await client.execute(.init("/v1/keys/leased?lease=\(lease)", method: .put, body: ByteBuffer(string: "l")))
                #expect(put.status == .noContent)
                let show = try await client.execute(.init("/v1/leases/\(lease)", method: .get))
                #expect(show.status == .ok && String(buffer: show.body ?? ByteBuffer()).contains(#""keys":["leased"]"#))
            }
            try await withClient(processes[2]!) { client in
                let keepAlive = try await client.execute(.init("/v1/leases/\(lease)/keepalive", method: .post))
                #expect(keepAlive.status == .ok, "\(String(buffer: keepAlive.body ?? ByteBuffer()))")
            }
            processes[1]!.signal(SIGKILL)
            _ = await processes[1]!.exited()
            let killed = ContinuousClock.now
            var newLeader = 0
            try await waitFor("a new leader") {
                for index in [2, 3] {
                    if let leader = (try? await status(of: processes[index]!))?["leader_id"] as? String, leader != "node1" {
                        newLeader = Int(leader.dropFirst(4)) ?? 0
                        return true
                    }
                }
                return false
            }
            print("failover: new leader node\(newLeader) after \(ContinuousClock.now - killed)")
            for index in [2, 3] {
                try await withClient(processes[index]!) { client in
                    let get = try await client.execute(.init("/v1/keys/k", method: .get))
                    #expect(get.body.map { String(buffer: $0) } == "v1", "node\(index) lost an acknowledged write")
                    let put = try await client.execute(.init("/v1/keys/k\(index)", method: .put, body: ByteBuffer(string: "x")))
                    #expect(put.status == .noContent)
                }
            }
            // The new leader gave the lease a full TTL: it is alive, and keepalives through
            // the follower reach the new leader. Then left alone, it expires on every node.
            let follower = newLeader == 2 ? 3 : 2
            // The deadline is a TTL after the leader took the keepalive, which is after it was sent.
            let keptAlive = ContinuousClock.now
            try await withClient(processes[follower]!) { client in
                let keepAlive = try await client.execute(.init("/v1/leases/\(lease)/keepalive", method: .post))
                #expect(keepAlive.status == .ok, "the lease did not survive the failover: \(String(buffer: keepAlive.body ?? ByteBuffer()))")
            }
            for index in [2, 3] {
                try await waitFor("the lease to expire on node\(index)") {
                    try await withClient(processes[index]!) { client in
                        try await client.execute(.init("/v1/keys/leased", method: .get)).status == .notFound
                    }
                }
            }
            #expect(ContinuousClock.now - keptAlive >= .seconds(5), "the lease expired before its TTL")
            processes[1] = try KeyperProcess(arguments: arguments(1), logPath: dir + "/node1-again.log")
            try await processes[1]!.waitUntilListening()
            try await waitFor("the old leader to catch up") {
                try await withClient(processes[1]!) { client in
                    let get = try await client.execute(.init("/v1/keys/k3?consistency=stale", method: .get))
                    let leased = try await client.execute(.init("/v1/keys/leased?consistency=stale", method: .get))
                    return get.status == .ok && leased.status == .notFound
                }
            }
        }
    }
}

func process2Voters(_ status: [String: Any]?) -> Int {
    ((status?["members"] as? [[String: Any]]) ?? []).filter { $0["role"] as? String == "voter" }.count
}

/// Polls `condition` until it holds; fails the test after `timeout` (generous: it only bounds a failure).
func waitFor(_ what: String, timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw ProcessTestError("timed out waiting for \(what)")
}

extension ProcessTests {
    @Test("a corrupt Raft log stops start-up naming the file and offset; --wal-truncate-corrupt starts anyway")
    func corruptLog() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let arguments = ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:0", "--enable-raft", "--raft-addr", "127.0.0.1:0",
                             "--election-timeout", "300ms", "--tick-interval", "50ms"]
            let first = try KeyperProcess(arguments: arguments, logPath: dir + "/first.log")
            try await first.waitUntilListening()
            try await withClient(first) { client in
                for i in 0..<20 {
                    let put = try await client.execute(.init("/v1/keys/k\(i)", method: .put, body: ByteBuffer(string: "value \(i)")))
                    #expect(put.status == .noContent)
                }
            }
            first.signal(SIGTERM)
            _ = await first.exited()

            // Damage a byte in the middle of the log: not a torn tail, so it is corruption.
            let walDirectory = dir + "/data/wal"
            let segment = try #require(try FileManager.default.contentsOfDirectory(atPath: walDirectory)
                .filter { $0.hasSuffix(".wal") }.sorted().first)
            let path = walDirectory + "/" + segment
            var bytes = try #require(FileManager.default.contents(atPath: path))
            let offset = bytes.count / 3
            bytes[offset] ^= 0xFF
            try bytes.write(to: URL(fileURLWithPath: path))

            let refused = try KeyperProcess(arguments: arguments, logPath: dir + "/refused.log")
            #expect(await refused.exited() != 0)
            #expect(refused.log.contains(segment) && refused.log.contains("offset"), "\(refused.log)")
            #expect(refused.log.contains("--wal-truncate-corrupt"))

            let forced = try KeyperProcess(arguments: arguments + ["--wal-truncate-corrupt"], logPath: dir + "/forced.log")
            try await forced.waitUntilListening()
            #expect(forced.log.contains("corrupt record"))
            try await withClient(forced) { client in
                let put = try await client.execute(.init("/v1/keys/after", method: .put, body: ByteBuffer(string: "x")))
                #expect(put.status == .noContent, "\(forced.log)")
            }
            forced.signal(SIGTERM)
            #expect(await forced.exited() == 0)
        }
    }
}
