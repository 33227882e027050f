import Foundation
import KeyperBase
import KeyperClient
import KeyperTestSupport
import NIOHTTP1
import Testing

/// Every key with its value and revisions, through `GET /v1/keys` pages (`_keyper/` included).
private func everything(_ url: String) async throws -> [String: [String: String]] {
    var all: [String: [String: String]] = [:]
    var after: String?
    repeat {
        let path = "/v1/keys?prefix=&values=true&limit=1000" + (after.map { "&after=" + KeyPath.encode(Array($0.utf8)) } ?? "")
        let page = try await HTTPRequester.send(.GET, url + path)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(page.body)) as? [String: Any])
        for entry in json["kvs"] as? [[String: Any]] ?? [] {
            let key = entry["key"] as? String ?? ""
            all[key] = entry.compactMapValues { "\($0)" }
        }
        after = (json["more"] as? Bool) == true ? json["cursor"] as? String : nil
    } while after != nil
    return all
}

private func run(_ arguments: [String], in dir: String, log: String) async throws -> (status: Int32, output: String) {
    let process = try KeyperProcess(arguments: arguments, logPath: dir + "/" + log)
    let status = await process.exited()
    return (status, (try? String(contentsOfFile: dir + "/" + log, encoding: .utf8)) ?? "")
}

@Suite("Backup and restore", .serialized)
struct BackupTests {
    @Test("a backup of a Raft node restores into a new cluster with every key, value and revision; a node that joins it gets them all")
    func saveRestoreCompare() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let ports = freePorts(6, in: TestPorts.backups)
            let source = try KeyperProcess(arguments: ["--data-dir", dir + "/source", "--http-addr", "127.0.0.1:\(ports[0])", "--enable-raft",
                                                       "--raft-addr", "127.0.0.1:\(ports[1])"], logPath: dir + "/source.log")
            var processes = [source]
            defer { for process in processes { process.signal(SIGKILL); _ = process.waitForExit() } }
            try await source.waitUntilListening()
            let url = "http://127.0.0.1:\(ports[0])"
            try await waitFor("the source to lead") { try await HTTPRequester.send(.GET, url + "/v1/health").status == 200 }
            // Keys of every kind: many, overwritten, deleted, binary, attached to a lease.
            for batch in 0..<20 {
                let puts = (0..<25).map { n in #"{"op":"put","key":"app/\#(batch)/\#(n)","value":"v\#(batch * 25 + n)"}"# }
                let txn = try await HTTPRequester.send(.POST, url + "/v1/txn", body: Array(#"{"success":[\#(puts.joined(separator: ","))]}"#.utf8))
                #expect(txn.status == 200)
            }
            for n in 0..<50 { _ = try await HTTPRequester.send(.PUT, url + "/v1/keys/app/0/\(n)", body: Array("again\(n)".utf8)) }
            let deleted = try await HTTPRequester.send(.DELETE, url + "/v1/keys?prefix=app/19/")
            #expect(deleted.status == 200 && deleted.text.hasPrefix(#"{"deleted":25,"#), "\(deleted.status) \(deleted.text)")
            _ = try await HTTPRequester.send(.PUT, url + "/v1/keys/bin", body: [0, 0xFF, 0x80, 10])
            let lease = try #require(try await HTTPRequester.send(.POST, url + "/v1/leases", body: Array(#"{"ttl":"1h"}"#.utf8)).jsonNumber("id"))
            _ = try await HTTPRequester.send(.PUT, url + "/v1/keys/svc/a?lease=\(lease)", body: Array("up".utf8))
            let before = try await everything(url)
            #expect(before.count == 502)  // 500 from the transactions, 25 more by the puts, 25 fewer by the delete, 2 more

            let backup = dir + "/backup.snapshot"
            let saved = try await run(["snapshot", "save", "--endpoints", url, backup], in: dir, log: "save.log")
            #expect(saved.status == 0 && saved.output.contains("saved \(backup)"), "\(saved.output)")
            #expect(!FileManager.default.fileExists(atPath: backup + ".part"))

            let restored = try await run(["snapshot", "restore", backup, "--data-dir", dir + "/restored", "--node-id", "r1",
                                          "--raft-addr", "127.0.0.1:\(ports[3])", "--http-addr", "127.0.0.1:\(ports[2])"], in: dir, log: "restore.log")
            #expect(restored.status == 0 && restored.output.contains("restored 502 keys"), "\(restored.output)")
            let node = try KeyperProcess(arguments: ["--data-dir", dir + "/restored", "--node-id", "r1", "--http-addr", "127.0.0.1:\(ports[2])",
                                                    "--enable-raft", "--raft-addr", "127.0.0.1:\(ports[3])"], logPath: dir + "/restored.log")
            processes.append(node)
            try await node.waitUntilListening()
            let restoredURL = "http://127.0.0.1:\(ports[2])"
            try await waitFor("the restored node to lead") { try await HTTPRequester.send(.GET, restoredURL + "/v1/health").status == 200 }
            #expect(try await everything(restoredURL) == before, "the restored state differs")
            let status = try await HTTPRequester.send(.GET, restoredURL + "/v1/status")
            let sourceStatus = try await HTTPRequester.send(.GET, url + "/v1/status")
            #expect(status.jsonString("cluster_id") != sourceStatus.jsonString("cluster_id"))
            #expect(try await HTTPRequester.send(.GET, restoredURL + "/v1/leases/\(lease)").text.contains(#""keys":["svc/a"]"#))
            // It takes writes, and a node joining it catches up through the snapshot it starts with.
            #expect(try await HTTPRequester.send(.PUT, restoredURL + "/v1/keys/after", body: Array("restore".utf8)).status == 204)
            let joiner = try KeyperProcess(arguments: ["--data-dir", dir + "/joiner", "--node-id", "j2", "--http-addr", "127.0.0.1:\(ports[4])",
                                                      "--enable-raft", "--raft-addr", "127.0.0.1:\(ports[5])", "--join", restoredURL],
                                           logPath: dir + "/joiner.log")
            processes.append(joiner)
            try await joiner.waitUntilListening()
            let joinerURL = "http://127.0.0.1:\(ports[4])"
            try await waitFor("the joiner to catch up") {
                try await HTTPRequester.send(.GET, joinerURL + "/v1/keys/after?consistency=stale").status == 200
            }
            var expected = before
            expected["after"] = try await everything(restoredURL)["after"]
            #expect(try await everything(joinerURL) == expected, "the joined node's state differs")
        }
    }

    @Test("restore refuses a non-empty directory and a damaged or cut backup, naming the file and offset, and leaves nothing behind; --standalone restores for a node without Raft")
    func restoreRefusals() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let port = freePorts(1, in: TestPorts.backups)[0]
            let source = try KeyperProcess(arguments: ["--data-dir", dir + "/source", "--http-addr", "127.0.0.1:\(port)"], logPath: dir + "/source.log")
            defer { source.signal(SIGKILL); _ = source.waitForExit() }
            try await source.waitUntilListening()
            let url = "http://127.0.0.1:\(port)"
            for n in 0..<200 { _ = try await HTTPRequester.send(.PUT, url + "/v1/keys/k\(n)", body: Array(String(repeating: "x", count: 100).utf8)) }
            let backup = dir + "/backup.snapshot"
            #expect(try await run(["snapshot", "save", "--endpoints", url, backup], in: dir, log: "save.log").status == 0)

            try FileManager.default.createDirectory(atPath: dir + "/busy", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: dir + "/busy/something", contents: Data([1]))
            let busy = try await run(["snapshot", "restore", backup, "--data-dir", dir + "/busy"], in: dir, log: "busy.log")
            #expect(busy.status == 1 && busy.output.contains("is not empty"), "\(busy.output)")

            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: backup)))
            bytes[bytes.count / 2] ^= 0x55
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/damaged.snapshot"))
            let damaged = try await run(["snapshot", "restore", dir + "/damaged.snapshot", "--data-dir", dir + "/d1"], in: dir, log: "damaged.log")
            #expect(damaged.status == 1 && damaged.output.contains("damaged.snapshot") && damaged.output.contains("offset"), "\(damaged.output)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/d1"))
            try Data(bytes.prefix(bytes.count - 7)).write(to: URL(fileURLWithPath: dir + "/cut.snapshot"))
            let cut = try await run(["snapshot", "restore", dir + "/cut.snapshot", "--data-dir", dir + "/d2"], in: dir, log: "cut.log")
            #expect(cut.status == 1 && cut.output.contains("offset"), "\(cut.output)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/d2"))

            let standalone = try await run(["snapshot", "restore", backup, "--data-dir", dir + "/standalone", "--standalone"], in: dir, log: "standalone.log")
            #expect(standalone.status == 0 && standalone.output.contains("restored 200 keys"), "\(standalone.output)")
            let port2 = freePorts(1, in: TestPorts.backups)[0]
            let node = try KeyperProcess(arguments: ["--data-dir", dir + "/standalone", "--http-addr", "127.0.0.1:\(port2)"], logPath: dir + "/node.log")
            defer { node.signal(SIGKILL); _ = node.waitForExit() }
            try await node.waitUntilListening()
            #expect(try await everything("http://127.0.0.1:\(port2)") == everything(url))
        }
    }
}
