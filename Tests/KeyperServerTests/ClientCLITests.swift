import Foundation
import KeyperBase
import KeyperClient
import KeyperTestSupport
import Testing

/// Runs `keyper ARGS` (standard input from `input`), returning its status, standard output
/// and standard error.
private func keyper(_ arguments: [String], input: String? = nil) async throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: KeyperProcess.executablePath)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    let stdin = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let error = err.fileHandleForReading.readDataToEndOfFile()
    while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
    return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
}

@Suite("keyper client commands", .serialized)
struct ClientCLITests {
    @Test("get, put, del, ls, txn, lease and watch against a node; not-found exits 2, a failed condition 5, errors name the code")
    func keyCommands() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let port = freePorts(1, in: TestPorts.clientCommands)[0]
            let node = try KeyperProcess(arguments: ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:\(port)"], logPath: dir + "/node.log")
            defer { node.signal(SIGKILL); _ = node.waitForExit() }
            try await node.waitUntilListening()
            let endpoints = ["--endpoints", "http://127.0.0.1:\(port)"]

            let watcher = try KeyperProcess(arguments: ["watch", "--prefix", "app/", "-o", "json"] + endpoints, logPath: dir + "/watch.log")
            defer { watcher.signal(SIGKILL); _ = watcher.waitForExit() }
            try await Task.sleep(for: .milliseconds(300))

            #expect(try await keyper(["put", "app/a", "hello"] + endpoints) == (0, "revision 1\n", ""))
            #expect(try await keyper(["put", "app/b"] + endpoints, input: "from stdin").out == "revision 2\n")
            #expect(try await keyper(["get", "app/a"] + endpoints).out == "hello")
            #expect(try await keyper(["get", "app/b", "-o", "json"] + endpoints).out
                == #"{"key":"app/b","value":"from stdin","create_revision":2,"mod_revision":2,"version":1}"# + "\n")
            let missing = try await keyper(["get", "app/none"] + endpoints)
            #expect(missing.status == 2 && missing.out.isEmpty && missing.err.contains("404 key_not_found"), "\(missing)")
            let lost = try await keyper(["put", "app/a", "x", "--if-revision", "7"] + endpoints)
            #expect(lost.status == 5 && lost.err.contains("412 revision_mismatch"), "\(lost)")
            #expect(try await keyper(["put", "app/a", "x", "--if-revision", "1"] + endpoints).status == 0)
            #expect(try await keyper(["ls", "app/"] + endpoints).out == "app/a\napp/b\n")
            #expect(try await keyper(["ls", "--values", "--limit", "1"] + endpoints).out == "app/a\tx\n")
            let txn = #"{"compare":[{"key":"app/c","target":"exists","op":"==","value":false}],"success":[{"op":"put","key":"app/c","value":"3"}]}"#
            #expect(try await keyper(["txn"] + endpoints, input: txn).out.hasPrefix(#"{"succeeded":true,"revision":4"#))
            let lease = try await keyper(["lease", "grant", "60"] + endpoints)
            let id = lease.out.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(lease.status == 0 && UInt64(id) != nil, "\(lease)")
            #expect(try await keyper(["put", "app/leased", "l", "--lease", id] + endpoints).status == 0)
            #expect(try await keyper(["lease", "keepalive", "--once", id] + endpoints).out == "lease \(id) kept alive: 60 s\n")
            #expect(try await keyper(["lease", "show", id] + endpoints).out.contains("  app/leased\n"))
            #expect(try await keyper(["lease", "revoke", id] + endpoints).out == "revoked lease \(id): 1 keys deleted, revision 6\n")
            #expect(try await keyper(["lease", "show", id] + endpoints).status == 2)
            #expect(try await keyper(["del", "app/", "--prefix"] + endpoints).out == "deleted 3 keys, revision 7\n")
            #expect(try await keyper(["ls"] + endpoints).out.isEmpty)

            // The watcher saw every change, in order.
            try await waitFor("the watcher to see the prefix delete") {
                (try? String(contentsOfFile: dir + "/watch.log", encoding: .utf8))?.components(separatedBy: "\n").filter { $0.contains(#""mod_revision":7"#) }.count == 3
            }
            let events = try String(contentsOfFile: dir + "/watch.log", encoding: .utf8).split(separator: "\n")
            #expect(events.first == #"{"type":"put","id":"1","key":"app/a","value":"hello","create_revision":1,"mod_revision":1,"version":1}"#)
            #expect(events.count == 9, "\(events)")

            // Endpoints that are not URLs, or that nothing answers.
            #expect(try await keyper(["get", "k", "--endpoints", "localhost:1"]).status == 64)
            let unreachable = try await keyper(["get", "k", "--endpoints", "http://127.0.0.1:1"])
            #expect(unreachable.status == 1 && unreachable.err.contains("unreachable"), "\(unreachable)")
        }
    }

    @Test("keyper status: every member of a 3-node cluster with its role, indexes and health; member list; leader transfer")
    func statusTable() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let ports = freePorts(6, in: TestPorts.clientCommands)
            var processes: [KeyperProcess] = []
            defer { for process in processes { process.signal(SIGKILL); _ = process.waitForExit() } }
            for index in 0..<3 {
                var arguments = ["--data-dir", "\(dir)/n\(index + 1)", "--node-id", "node\(index + 1)", "--http-addr", "127.0.0.1:\(ports[index])",
                                 "--enable-raft", "--raft-addr", "127.0.0.1:\(ports[index + 3])"]
                if index > 0 { arguments += ["--join", "http://127.0.0.1:\(ports[0])"] }
                let process = try KeyperProcess(arguments: arguments, logPath: "\(dir)/n\(index + 1).log")
                processes.append(process)
                try await process.waitUntilListening()
                if index == 0 { try await Task.sleep(for: .seconds(1)) }
            }
            let endpoints = ["--endpoints", "http://127.0.0.1:\(ports[1]),http://127.0.0.1:\(ports[2])"]
            try await waitFor("three voters") {
                try await keyper(["member", "list"] + endpoints).out.components(separatedBy: "voter").count == 4
            }
            let status = try await keyper(["status"] + endpoints)
            let lines = status.out.split(separator: "\n")
            #expect(lines.first?.hasPrefix("ID     ROLE      TERM  COMMIT  APPLIED  LAG  ADDRESS") == true, "\(status.out)")
            #expect(lines.count == 4 && lines.filter { $0.contains(" leader ") }.count == 1 && lines.filter { $0.hasSuffix(" ok") }.count == 3,
                    "\(status.out)")
            let transfer = try await keyper(["leader", "transfer", "node3"] + endpoints)
            #expect(transfer.out == "leader: node3\n", "\(transfer.status) \(transfer.err)")
            try await waitFor("node3 to be shown as leader") {
                try await keyper(["status"] + endpoints).out.split(separator: "\n").contains { $0.hasPrefix("node3  leader") }
            }
            let json = try await keyper(["status", "-o", "json"] + endpoints)
            #expect(json.out.contains(#""id":"node1","role":"follower""#) && json.out.contains(#""lag":0"#), "\(json.out)")

            // The status page and the view it reads, from a follower: every member, one leader,
            // the leader's match index for each, request counters.
            let page = try await HTTPRequester.send(.GET, "http://127.0.0.1:\(ports[0])/")
            #expect(page.status == 200 && page.text.contains("<title>Keyper</title>") && page.header("Content-Type")?.hasPrefix("text/html") == true)
            #expect(!page.text.contains("http://") && !page.text.contains("https://"), "the page must load nothing from elsewhere")
            let view = try await HTTPRequester.send(.GET, "http://127.0.0.1:\(ports[0])/v1/cluster")
            let cluster = try #require(try JSONSerialization.jsonObject(with: Data(view.body)) as? [String: Any])
            let members = try #require(cluster["members"] as? [[String: Any]])
            #expect(cluster["leader"] as? String == "node3", "\(view.text)")
            #expect(members.count == 3 && members.filter { $0["role"] as? String == "leader" }.count == 1, "\(view.text)")
            #expect(members.allSatisfy { $0["reachable"] as? Bool == true && $0["match_index"] is Int && $0["requests"] is [String: Any] }, "\(view.text)")
        }
    }
}
