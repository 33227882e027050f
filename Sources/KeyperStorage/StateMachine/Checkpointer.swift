import CSQLite
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Copies SQLite's WAL back into the database on a thread of its own.
///
/// By default SQLite checkpoints inside the commit that crosses 1,000 WAL pages: the
/// committing thread writes those pages back at random offsets and fsyncs the database. In
/// Keyper that thread is the Raft loop, and with a large state (random keys touch a different
/// page each) it was the loop's longest stall. With this, the writer's automatic checkpoints
/// are off, and a passive checkpoint runs here every few milliseconds: it never waits for the
/// writer or for readers, and the writer restarts the WAL from its beginning once a
/// checkpoint has copied all of it.
final class Checkpointer: Sendable {
    private let sqlite: Mutex<SQLiteConnection?>

    init(path: String, everyMilliseconds interval: UInt32 = 20) throws(SQLiteError) {
        sqlite = Mutex(try SQLiteConnection(path: path))
        // A loop of its own, for the life of the store: checkpoints must never queue behind
        // other work, and the loop ends by itself once stopped.
        DispatchQueue(label: "keyper.checkpoint").async { [self] in
            while checkpoint() { usleep(interval * 1_000) }
        }
    }

    /// Runs one passive checkpoint; false once stopped.
    private func checkpoint() -> Bool {
        sqlite.withLock { sqlite in
            guard let sqlite else { return false }
            // A failure (a full disk, a busy lock) leaves the WAL longer; the next try may succeed.
            try? sqlite.execute("PRAGMA wal_checkpoint(PASSIVE)")
            return true
        }
    }

    /// Closes the connection; a checkpoint under way finishes first, and none starts after.
    func stop() {
        sqlite.withLock { sqlite in
            sqlite?.close()
            sqlite = nil
        }
    }
}
