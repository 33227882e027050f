import KeyperBase
import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("Change feed: watch history and watchers")
struct ChangeFeedTests {
    private func k(_ text: String) -> [UInt8] { Array(text.utf8) }

    private func events(_ watcher: Watcher) async -> [KVEvent] {
        guard case .events(let events) = await watcher.next() else { return [] }
        return events
    }

    @Test("a watcher sees its keys' puts and deletes in revision order; a key watcher only its key")
    func liveEvents() async throws {
        try await withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            let prefix = try store.changes.watch(.prefix(k("app/")), from: nil)
            let key = try store.changes.watch(.key(k("app/a")), from: nil)
            try store.apply([KVWrite(.put(key: k("app/a"), value: k("1"))), KVWrite(.put(key: k("other"), value: k("x"))),
                             KVWrite(.delete(key: k("nothing"))), KVWrite(.put(key: k("app/b"), value: k("2")))])
            try store.apply([.deletePrefix(k("app/"))])
            var seen: [KVEvent] = []
            while seen.count < 4 { seen += await events(prefix) }
            #expect(seen.map(\.kind) == [.put, .put, .delete, .delete])
            #expect(seen.map(\.key) == ["app/a", "app/b", "app/a", "app/b"].map(k))
            #expect(seen.map(\.revision) == [1, 3, 4, 4])
            #expect(seen.map(\.index) == [0, 0, 0, 1] && seen.map(\.count) == [1, 1, 2, 2])
            #expect(seen[0].value == k("1") && seen[0].revisions == KeyRevisions(create: 1, mod: 1, version: 1))
            var only: [KVEvent] = []
            while only.count < 2 { only += await events(key) }
            #expect(only.map(\.revision) == [1, 4])
            #expect(store.changes.watcherCount == 2)
            key.cancel()
            #expect(await key.next() == .ended(.cancelled) && store.changes.watcherCount == 1)
            store.changes.wakeIdle()
            #expect(await prefix.next() == .idle(revision: 4))
            store.close()
            #expect(await prefix.next() == .ended(.cancelled))
        }
    }

    @Test("a watch from a past revision replays the history, then goes on live: every event once (seeded, concurrent)")
    func historyThenLive() async throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        try await withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            let total = 600
            // Writes in batches of 1-5 on a thread of its own, while watchers join at random revisions.
            let writer = Task.detached {
                var random = SplitMix64(seed: seed)
                var written = 0
                while written < total {
                    let count = min(total - written, 1 + random.next(below: 5))
                    let batch = (0..<count).map { n in KVWrite(.put(key: Array("w/\((written + n) % 7)".utf8), value: Array("\(written + n)".utf8))) }
                    _ = try store.apply(batch)
                    written += count
                    if random.next(below: 4) == 0 { await Task.yield() }
                }
            }
            var random = SplitMix64(seed: seed ^ 1)
            var watchers: [(start: UInt64, watcher: Watcher)] = []
            for _ in 0..<20 {
                let current = store.changes.revisions.current
                let start = UInt64(1 + random.next(below: Int(current) + 1))
                watchers.append((start, try store.changes.watch(.prefix(k("w/")), from: WatchStart(revision: start))))
                await Task.yield()
            }
            try await writer.value
            for (start, watcher) in watchers {
                var revisions: [UInt64] = []
                while revisions.last != UInt64(total) {
                    guard case .events(let events) = await watcher.next() else { Issue.record("seed \(seed): ended early"); break }
                    revisions += events.map(\.revision)
                }
                #expect(revisions == Array(start...UInt64(total)), "seed \(seed), start \(start)")
            }
            store.close()
        }
    }

    @Test("resuming inside a revision skips the events already seen; a start older than the history is compacted")
    func resumeAndCompaction() async throws {
        try await withTemporaryDirectory { dir in
            let limits = ChangeFeed.Limits(historyRevisions: 5, historyBytes: 1 << 20, watcherEvents: 3, watcherBytes: 1 << 20)
            let store = try KVStore(path: dir + "/state", durability: .normal, changeLimits: limits)
            try store.apply([.transaction(KVTransaction(success: [.put(key: k("t/a"), value: [1]), .put(key: k("t/b"), value: [2]),
                                                                   .put(key: k("t/c"), value: [3])]))])
            let resumed = try store.changes.watch(.prefix(k("t/")), from: WatchStart(revision: 1, skip: 2))
            #expect(await events(resumed).map(\.key) == [k("t/c")])
            for n in 0..<10 { try store.apply([KVWrite(.put(key: k("n/\(n)"), value: [UInt8(n)]))]) }
            #expect(throws: WatchEnd.compacted(compactRevision: 6)) { try store.changes.watch(.prefix([]), from: WatchStart(revision: 2)) }
            // A backlog larger than the buffer goes out whole (ending it would only bring the same
            // request back); more events on top of an untaken buffer end the watcher.
            let caughtUp = try store.changes.watch(.prefix(k("n/")), from: WatchStart(revision: 7))
            #expect(await events(caughtUp).count == 5)
            caughtUp.cancel()
            let recent = try store.changes.watch(.prefix(k("n/")), from: WatchStart(revision: 7))
            try store.apply([KVWrite(.put(key: k("n/late"), value: [1]))])
            #expect(await recent.next() == .ended(.lagging(events: 6)))
            #expect(store.changes.watcherCount == 1)
            // A watch from beyond the current revision waits for it.
            let ahead = try store.changes.watch(.prefix([]), from: WatchStart(revision: 14))
            try store.apply([KVWrite(.put(key: k("early"), value: [1]))])
            try store.apply([KVWrite(.put(key: k("due"), value: [1]))])
            #expect(await events(ahead).map(\.key) == [k("due")])
            ahead.cancel()
            // A snapshot installed ends the watchers still there: their next events are unknown.
            let other = try KVStore(path: dir + "/other", durability: .normal)
            try other.apply([KVWrite(.put(key: k("x"), value: [1]))])
            _ = try other.copy(to: dir + "/snapshot")
            try store.replace(with: dir + "/snapshot")
            #expect(await resumed.next() == .ended(.compacted(compactRevision: 1)))
            #expect(store.changes.watcherCount == 0 && store.changes.revisions == (1, 1))
            other.close()
            store.close()
        }
    }
}
