import KeyperRaft

/// A thread-safe front for ``WriteAheadLog`` that merges the syncs of concurrent callers.
///
/// Each ``save(_:hardState:)`` appends at once, then waits for a shared sync. The first caller
/// after a sync schedules one; every caller that appends before it runs rides on it, so N
/// concurrent saves cost one `fdatasync`, not N.
///
/// The server's Raft loop does not need this: it owns a ``WriteAheadLog`` directly and calls
/// `append` for everything in one `Ready`, then `sync` once. This wrapper is for callers that
/// arrive concurrently (tools, tests, a non-Raft standalone mode).
///
/// `fdatasync` runs on the actor's executor and blocks that thread for its duration (~1 ms on
/// this machine's disk); give the actor a dedicated executor if that matters.
public actor GroupCommitLog {
    private let log: WriteAheadLog
    private var scheduledSync: Task<Void, any Error>?
    /// Number of syncs performed (for tests and metrics).
    public private(set) var syncCount = 0

    public init(_ log: sending WriteAheadLog) {
        self.log = log
    }

    /// Appends and returns once the batch is durable.
    public func save(_ entries: [Entry], hardState: HardState? = nil) async throws(WALError) {
        try log.append(entries, hardState: hardState)
        let sync: Task<Void, any Error>
        if let scheduledSync {
            sync = scheduledSync
        } else {
            // Runs on this actor after the calls already queued on it, which append first.
            sync = Task { try self.syncScheduled() }
            scheduledSync = sync
        }
        do {
            try await sync.value
        } catch let error as WALError {
            throw error
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
    }

    private func syncScheduled() throws(WALError) {
        scheduledSync = nil
        syncCount += 1
        try log.sync()
    }

    /// Runs `body` with the log, for reads (`entries`, `term(at:)`, ...) and compaction.
    public func withLog<T: Sendable>(_ body: (WriteAheadLog) throws(WALError) -> T) throws(WALError) -> T {
        try body(log)
    }
}
