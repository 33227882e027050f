import Foundation
import KeyperBase
import KeyperClient
import KeyperTestSupport
import Testing

@Suite("Packaging", .serialized)
struct PackagingTests {
    /// The repository: the nearest directory above the built binary with a `Package.swift`.
    private var repository: String {
        var directory = URL(fileURLWithPath: KeyperProcess.executablePath).deletingLastPathComponent()
        while directory.path != "/" && !FileManager.default.fileExists(atPath: directory.path + "/Package.swift") {
            directory = directory.deletingLastPathComponent()
        }
        return directory.path
    }

    /// A base port whose three HTTP ports and three Raft ports (base + 100) are free.
    private func basePort() -> Int? {
        for _ in 0..<200 {
            let base = Int.random(in: 30_000..<30_800)
            let ports = [0, 1, 2, 100, 101, 102].map { base + $0 }
            if ports.allSatisfy({ freePorts(1, in: $0..<($0 + 1)) == [$0] }) { return base }
        }
        return nil
    }

    @Test("scripts/local-cluster.sh starts three nodes in one command, prints their URLs, forms a cluster, and stops them all on SIGTERM")
    func localCluster() async throws {
        guard KeyperProcess.binaryIsBuilt(), let base = basePort() else { return }
        try await withTemporaryDirectory { dir in
            let script = Process()
            // Through python3, which unblocks every signal first: a child of this test process
            // inherits the signals its thread blocks, and a bash with SIGTERM blocked never
            // runs its trap (a shell started by a person has none blocked).
            script.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            script.arguments = ["python3", "-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execvp('bash', ['bash', sys.argv[1]])",
                                repository + "/scripts/local-cluster.sh"]
            var environment = ProcessInfo.processInfo.environment
            environment["KEYPER_BIN"] = KeyperProcess.executablePath
            environment["BASE_PORT"] = String(base)
            environment["DATA"] = dir + "/cluster"
            script.environment = environment
            _ = FileManager.default.createFile(atPath: dir + "/out.log", contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out.log"))
            script.standardOutput = log
            script.standardError = log
            try script.run()
            defer { if script.isRunning { script.terminate() } }
            let output = { (try? String(contentsOfFile: dir + "/out.log", encoding: .utf8)) ?? "" }
            do {
                try await waitFor("the cluster to be up", timeout: .seconds(90)) { output().contains("Ctrl-C stops it") }
            } catch {
                Issue.record("\(error): \(output())")
                return
            }
            #expect(output().contains("node2  http://127.0.0.1:\(base + 1)"), "\(output())")
            let status = Process()
            status.executableURL = URL(fileURLWithPath: KeyperProcess.executablePath)
            status.arguments = ["status", "--endpoints", "http://127.0.0.1:\(base + 2)"]
            let pipe = Pipe()
            status.standardOutput = pipe
            try status.run()
            let table = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            while status.isRunning { try await Task.sleep(for: .milliseconds(10)) }
            #expect(table.split(separator: "\n").count == 4 && table.contains(" leader "), "\(table)")
            script.terminate()
            while script.isRunning { try await Task.sleep(for: .milliseconds(50)) }
            #expect(output().contains("stopped; data and logs in"), "\(output())")
            // Every node is gone: nothing answers on their ports.
            for offset in 0..<3 {
                let answered = try? await HTTPRequester.send(.GET, "http://127.0.0.1:\(base + offset)/v1/health", timeout: .seconds(2))
                #expect(answered == nil, "node\(offset + 1) still runs")
            }
        }
    }
}

@Suite("Configuration file and environment", .serialized)
struct ConfigurationSourceTests {
    private func start(_ arguments: [String], environment: [String: String] = [:], in dir: String, log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: KeyperProcess.executablePath)
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KEYPER_") }
        merged.merge(environment) { $1 }
        process.environment = merged
        _ = FileManager.default.createFile(atPath: dir + "/" + log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/" + log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    private func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// Waits without blocking a thread of the test pool.
    private func exited(_ process: Process) async -> Int32 {
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        return process.terminationStatus
    }

    @Test("settings come from the file, then KEYPER_* variables, then flags (each over the one before); an unknown key or a wrong type is refused, naming it")
    func precedence() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let ports = freePorts(3, in: TestPorts.configuration)
            let file = dir + "/keyper.json"
            try Data(#"{"data-dir": "\#(dir)/from-file", "http-addr": "127.0.0.1:\#(ports[0])", "node-id": "filed", "log-level": "info"}"#.utf8)
                .write(to: URL(fileURLWithPath: file))
            // The file alone.
            var node = try start(["--config", file], in: dir, log: "a.log")
            try await waitFor("the node from the file") { text(dir + "/a.log").contains("listening on http://127.0.0.1:\(ports[0])") }
            #expect(FileManager.default.fileExists(atPath: dir + "/from-file/KEYPER"))
            node.terminate(); _ = await exited(node)
            // The environment over the file, a flag over the environment.
            node = try start(["serve", "--http-addr", "127.0.0.1:\(ports[2])"],
                             environment: ["KEYPER_CONFIG": file, "KEYPER_HTTP_ADDR": "127.0.0.1:\(ports[1])", "KEYPER_DATA_DIR": dir + "/from-env"],
                             in: dir, log: "b.log")
            try await waitFor("the node from the flag") { text(dir + "/b.log").contains("listening on http://127.0.0.1:\(ports[2])") }
            #expect(FileManager.default.fileExists(atPath: dir + "/from-env/KEYPER"))
            node.terminate(); _ = await exited(node)

            for (body, expected) in [(#"{"data-dri": "x"}"#, #"unknown key "data-dri""#), (#"{"enable-raft": "yes"}"#, #""enable-raft" must be true or false"#),
                                     (#"{"snapshot-entries": "10"}"#, #""snapshot-entries" must be a number"#), ("[1]", "must be a JSON object"),
                                     ("{", "is not JSON")] {
                try Data(body.utf8).write(to: URL(fileURLWithPath: dir + "/bad.json"))
                let bad = try start(["--config", dir + "/bad.json"], in: dir, log: "bad.log")
                #expect(await exited(bad) == 64 && text(dir + "/bad.log").contains(expected), "\(body): \(text(dir + "/bad.log"))")
            }
            let badEnvironment = try start(["serve"], environment: ["KEYPER_ENABLE_RAFT": "maybe"], in: dir, log: "env.log")
            #expect(await exited(badEnvironment) == 64 && text(dir + "/env.log").contains("KEYPER_ENABLE_RAFT must be true or false"))
        }
    }
}
