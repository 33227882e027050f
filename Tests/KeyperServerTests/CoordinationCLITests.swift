import Foundation
import KeyperBase
import KeyperClient
import KeyperTestSupport
import NIOHTTP1
import Testing

/// A standalone node process for the client commands to talk to.
private func withNode(_ body: (String, String) async throws -> Void) async throws {
    guard KeyperProcess.binaryIsBuilt() else { return }
    try await withTemporaryDirectory { dir in
        let node = try KeyperProcess(arguments: ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:0"], logPath: dir + "/node.log")
        defer {
            node.signal(SIGKILL)
            _ = node.waitForExit()
        }
        try await node.waitUntilListening()
        try await body("http://127.0.0.1:\(node.port)", dir)
    }
}

private func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

@Suite("keyper lock and keyper elect", .serialized)
struct CoordinationCLITests {
    @Test("keyper lock: commands under one lock never overlap, each gets a larger fencing token, and the exit status passes through")
    func lockSerializes() async throws {
        try await withNode { url, dir in
            // Each command fails loudly if another holds the lock at the same time.
            let script = #"if [ -e "$1/busy" ]; then echo overlap >> "$1/errors"; fi; touch "$1/busy"; echo "$KEYPER_LOCK_REVISION" >> "$1/tokens"; sleep 0.3; rm "$1/busy"; exit 7"#
            let runs = try (0..<4).map { index in
                try KeyperProcess(arguments: ["lock", "--endpoints", url, "job", "--", "sh", "-c", script, "sh", dir], logPath: dir + "/lock\(index).log")
            }
            for run in runs { #expect(await run.exited() == 7, "\(text(run.logPath))") }
            #expect(text(dir + "/errors").isEmpty, "two holders at once")
            let tokens = text(dir + "/tokens").split(separator: "\n").compactMap { UInt64($0) }
            #expect(tokens.count == 4 && tokens == tokens.sorted() && Set(tokens).count == 4, "\(tokens)")
            // The lock is free again (every run released it): a try-once takes it.
            let again = try KeyperProcess(arguments: ["lock", "--endpoints", url, "--wait", "0", "job", "--", "true"], logPath: dir + "/again.log")
            #expect(await again.exited() == 0, "\(text(again.logPath))")
        }
    }

    @Test("keyper lock: a lost lock stops the command and exits 3; a lock held elsewhere past --wait exits 4")
    func lockLostAndBusy() async throws {
        try await withNode { url, dir in
            let endpoints = try KeyperClient(endpoints: url)
            let holder = try KeyperProcess(arguments: ["lock", "--endpoints", url, "--ttl", "2s", "job", "--", "sleep", "60"], logPath: dir + "/holder.log")
            var lease: UInt64?
            try await waitFor("the lock to be held") {
                lease = try await endpoints.send(.GET, "/v1/locks/job").jsonNumber("lease")
                return lease != nil
            }
            let busy = try KeyperProcess(arguments: ["lock", "--endpoints", url, "--wait", "300ms", "job", "--", "true"], logPath: dir + "/busy.log")
            #expect(await busy.exited() == 4, "\(text(busy.logPath))")
            // Someone revokes the holder's lease: the lock is gone, so is the command.
            let revoked = ContinuousClock.now
            #expect(try await endpoints.send(.DELETE, "/v1/leases/\(lease!)").status == 200)
            #expect(await holder.exited() == 3, "\(text(holder.logPath))")
            #expect(ContinuousClock.now - revoked < .seconds(30))
            #expect(text(holder.logPath).contains("lost the lock job"))
        }
    }

    @Test("keyper elect: the first candidate is elected; when it resigns (SIGINT) the next is; observers see each leader")
    func election() async throws {
        try await withNode { url, dir in
            let alpha = try KeyperProcess(arguments: ["elect", "--endpoints", url, "--value", "alpha", "sched"], logPath: dir + "/alpha.log")
            try await waitFor("alpha to be elected") { text(dir + "/alpha.log").contains("elected") }
            let observer = try KeyperProcess(arguments: ["elect", "--endpoints", url, "--observe", "sched"], logPath: dir + "/observer.log")
            let beta = try KeyperProcess(arguments: ["elect", "--endpoints", url, "--value", "beta", "sched"], logPath: dir + "/beta.log")
            try await waitFor("the observer to see alpha") { text(dir + "/observer.log").contains("leader alpha") }
            #expect(!text(dir + "/beta.log").contains("elected"))
            alpha.signal(SIGINT)
            #expect(await alpha.exited() == 0, "\(text(alpha.logPath))")
            try await waitFor("beta to be elected") { text(dir + "/beta.log").contains("elected") }
            try await waitFor("the observer to see beta") { text(dir + "/observer.log").contains("leader beta") }
            beta.signal(SIGTERM)
            #expect(await beta.exited() == 0)
            try await waitFor("the observer to see no leader") { text(dir + "/observer.log").hasSuffix("no leader\n") }
            observer.signal(SIGINT)
            #expect(await observer.exited() == 0)
        }
    }
}
