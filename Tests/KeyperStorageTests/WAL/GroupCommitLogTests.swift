import Testing
import KeyperRaft
import KeyperStorage

@Suite("Group commit wrapper")
struct GroupCommitLogTests {
    @Test("Concurrent saves are all durable and share fdatasyncs")
    func concurrentSaves() async throws {
        let directory = WALTestDirectory()
        let path = directory.path + "/wal"
        let log = GroupCommitLog(try WriteAheadLog(directory: path))
        try await log.save([Entry(term: Term(1), index: LogIndex(1), data: [1])])
        // Hard states carry no ordering constraint, so concurrent callers may arrive in any order.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for term in 1...64 {
                group.addTask {
                    try await log.save([], hardState: HardState(term: Term(UInt64(term)), commit: LogIndex(1)))
                }
            }
            try await group.waitForAll()
        }
        let syncs = await log.syncCount
        print("group commit: 65 saves, \(syncs) syncs")
        #expect(syncs < 65, "syncs=\(syncs)")
        let hardState = try await log.withLog { $0.hardState }
        try await log.withLog { $0.close() }
        let reopened = try WriteAheadLog(directory: path)
        #expect(reopened.hardState == hardState)
        #expect(reopened.lastIndex == LogIndex(1))
    }
}
