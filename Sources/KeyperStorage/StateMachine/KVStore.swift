import CSQLite
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One change to the replicated state: a key, or the address book of cluster members.
public enum KVOperation: Hashable, Sendable {
    case put(key: [UInt8], value: [UInt8])
    case delete(key: [UInt8])
    /// Records where a member is reached (from its configuration change), so a restarted node or
    /// one installed from a snapshot knows every member's addresses, and whether a learner is
    /// to be promoted to voter once caught up (`promote`; false for one that asked to stay a
    /// learner).
    case setMember(id: String, raftAddress: String, httpAddress: String, promote: Bool)
    case removeMember(id: String)
}

/// A cluster member's addresses as the state machine holds them.
public struct MemberRecord: Hashable, Sendable {
    public var id: String
    public var raftAddress: String
    public var httpAddress: String
    public var promote: Bool
    public init(id: String, raftAddress: String, httpAddress: String, promote: Bool = true) {
        self.id = id
        self.raftAddress = raftAddress
        self.httpAddress = httpAddress
        self.promote = promote
    }
}

/// How hard SQLite itself works to make each commit durable.
public enum KVDurability: Sendable {
    /// `synchronous=FULL`: each commit is fsynced before it returns. Standalone mode, where
    /// SQLite is the only copy of the data.
    case full
    /// `synchronous=NORMAL` in WAL mode: commits are atomic and ordered, and the last few may be
    /// lost on power failure. Raft mode, where the Raft log is the source of truth and replays
    /// everything after the stored applied index.
    case normal
}

/// A page of an ordered key listing.
public struct KeyPage: Sendable, Equatable {
    public var keys: [[UInt8]]
    /// The last key returned when more keys follow; pass it as `after` to continue.
    public var nextAfter: [UInt8]?
}

/// The key-value state machine: one SQLite table, `key BLOB PRIMARY KEY, value BLOB`, in WAL mode.
///
/// One connection writes (``apply(_:appliedIndex:)``, a transaction per batch) and one reads;
/// in WAL mode the reader never waits for the writer. Statements are prepared once and reused.
/// Thread-safe: each connection is guarded by its own lock.
public final class KVStore: Sendable {
    /// The schema this build writes (`PRAGMA user_version`). 2 added `members.promote`.
    public static let schemaVersion: Int64 = 2

    public let path: String
    private let writer: Mutex<Writer?>
    private let reader: Mutex<Reader?>
    private let cache: Mutex<ReadCache>
    /// Held while ``copy(to:)`` has a connection of its own on the database, and by whatever
    /// swaps or closes the file. A connection left on a replaced file would, as the last one
    /// on its (old) file when it closes, checkpoint and delete `state.db-wal` by name: the new
    /// database's WAL. True once closed: no capture starts after ``close()``.
    private let captures = Mutex(false)
    private let backgroundCheckpoints: Bool
    private let checkpointer: Mutex<Checkpointer?>

    /// `cacheBytes`: how much memory recently read or written values may hold (``ReadCache``).
    /// `backgroundCheckpoints`: copy SQLite's WAL back into the database on a thread of its
    /// own (``Checkpointer``) rather than inside the commit that fills it.
    public init(path: String, durability: KVDurability, cacheBytes: Int = 64 << 20,
                backgroundCheckpoints: Bool = false) throws(SQLiteError) {
        self.path = path
        self.backgroundCheckpoints = backgroundCheckpoints
        cache = Mutex(ReadCache(bytesMax: cacheBytes))
        let writeConnection = try SQLiteConnection(path: path)
        try Self.prepareSchema(writeConnection, path: path, durability: durability)
        writer = Mutex(try Writer(connection: writeConnection, durability: durability, backgroundCheckpoints: backgroundCheckpoints))
        reader = Mutex(try Reader(connection: SQLiteConnection(path: path)))
        checkpointer = Mutex(backgroundCheckpoints ? try Checkpointer(path: path) : nil)
    }

    private static func prepareSchema(_ db: SQLiteConnection, path: String,
                                      durability: KVDurability) throws(SQLiteError) {
        let version = try db.scalarInt("PRAGMA user_version") ?? 0
        guard version <= schemaVersion else {
            throw SQLiteError(code: SQLITE_ERROR,
                              message: "schema version \(version) was written by a newer Keyper (this build reads up to \(schemaVersion))",
                              context: "opening \(path)")
        }
        let mode = try db.scalarText("PRAGMA journal_mode=WAL")
        guard mode?.lowercased() == "wal" else {
            throw SQLiteError(code: SQLITE_ERROR, message: "cannot enable WAL journal mode (got \(mode ?? "nothing"))",
                              context: "opening \(path)")
        }
        switch durability {
        case .full: try db.execute("PRAGMA synchronous=FULL")
        case .normal: try db.execute("PRAGMA synchronous=NORMAL")
        }
        try db.execute("""
            CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS members (id TEXT PRIMARY KEY, raft_addr TEXT NOT NULL, http_addr TEXT NOT NULL,
                                                promote INTEGER NOT NULL DEFAULT 1);
            """)
        if version == 1 {
            // A table created by schema 1 lacks the column (CREATE ... IF NOT EXISTS kept it).
            // One transaction with the version: a crash leaves schema 1 or schema 2, never a
            // column added under version 1 (which the next open would try to add again).
            try db.execute("""
                BEGIN IMMEDIATE;
                ALTER TABLE members ADD COLUMN promote INTEGER NOT NULL DEFAULT 1;
                PRAGMA user_version = \(schemaVersion);
                COMMIT;
                """)
        } else {
            try db.execute("PRAGMA user_version = \(schemaVersion)")
        }
    }

    /// Closes both connections. Later calls throw.
    public func close() {
        captures.withLock { $0 = true }  // waits for a capture in flight
        stopCheckpointer()
        writer.withLock { $0 = nil }
        reader.withLock { $0 = nil }
        cache.withLock { $0.invalidate() }
    }

    // MARK: Reads

    public func get(_ key: [UInt8]) throws(SQLiteError) -> [UInt8]? {
        finishRead(try beginRead(key))
    }

    /// A read between its two steps: the value found (in the cache or the database), and the
    /// cache's version when it was looked up.
    public struct PendingRead: Sendable {
        public let key: [UInt8]
        public let value: [UInt8]?
        let version: UInt64
        let fromCache: Bool
    }

    /// The first step of ``get(_:)``: looks in the cache, and on a miss reads the database.
    /// A simulation runs the two steps apart, so applies can fall between them as they do
    /// between threads.
    public func beginRead(_ key: [UInt8]) throws(SQLiteError) -> PendingRead {
        let (cached, version) = cache.withLock { ($0.lookup(key), $0.version) }
        switch cached {
        case .value(let value): return PendingRead(key: key, value: value, version: version, fromCache: true)
        case .absent: return PendingRead(key: key, value: nil, version: version, fromCache: true)
        case nil: break
        }
        let value = try reader.withLock { (reader: inout Reader?) throws(SQLiteError) -> [UInt8]? in
            try Self.open(reader, path: path).get(key)
        }
        return PendingRead(key: key, value: value, version: version, fromCache: false)
    }

    /// The second step: a value read from the database fills the cache, unless a batch was
    /// applied since the lookup (see ``ReadCache``). Returns the value read.
    public func finishRead(_ read: PendingRead) -> [UInt8]? {
        if !read.fromCache {
            cache.withLock { $0.fill(read.key, read.value.map(ReadCache.Cached.value) ?? .absent, readAt: read.version) }
        }
        return read.value
    }

    /// Keys in byte order that start with `prefix` and sort after `after`, at most `limit`.
    public func list(prefix: [UInt8], after: [UInt8]?, limit: Int) throws(SQLiteError) -> KeyPage {
        precondition(limit > 0, "limit=\(limit)")
        return try reader.withLock { (reader: inout Reader?) throws(SQLiteError) -> KeyPage in
            try Self.open(reader, path: path).list(prefix: prefix, after: after, limit: limit)
        }
    }

    public func count() throws(SQLiteError) -> Int {
        try reader.withLock { (reader: inout Reader?) throws(SQLiteError) -> Int in
            try Self.open(reader, path: path).count()
        }
    }

    /// Every member's addresses, by id.
    public func members() throws(SQLiteError) -> [MemberRecord] {
        try reader.withLock { (reader: inout Reader?) throws(SQLiteError) -> [MemberRecord] in
            try Self.open(reader, path: path).members()
        }
    }

    // MARK: Snapshots

    /// Writes a consistent copy of the database to `path` (`VACUUM INTO`, on a connection of its
    /// own so neither reads nor writes wait) and returns the applied index the copy reflects.
    /// The copy is not yet fsynced.
    public func copy(to path: String) throws(SQLiteError) -> UInt64 {
        try captures.withLock { (closed: inout Bool) throws(SQLiteError) in
            guard !closed else { throw SQLiteError(code: SQLITE_MISUSE, message: "the store is closed", context: "copying \(self.path)") }
            let connection = try SQLiteConnection(path: self.path)
            defer { connection.close() }
            let statement = try connection.prepare("VACUUM INTO ?1")
            defer { statement.finalize() }
            try statement.bind(path, at: 1)
            try statement.run()
        }
        let copy = try SQLiteConnection(path: path, readOnly: true)
        defer { copy.close() }
        return UInt64(try copy.scalarInt("SELECT value FROM meta WHERE name = 'applied_index'") ?? 0)
    }

    /// Stops background checkpoints (a connection left on a file about to be replaced or
    /// closed must not outlive it).
    private func stopCheckpointer() {
        checkpointer.withLock { checkpointer in
            checkpointer?.stop()
            checkpointer = nil
        }
    }

    /// Replaces the whole state with the database file at `snapshotPath` (a snapshot from
    /// ``copy(to:)``, taken here or received from a leader). The file is copied, so the
    /// snapshot stays; the replacement is atomic (rename) and durable. The copy is file-sized
    /// work, done while holding both connections: reads wait for it.
    public func replace(with snapshotPath: String, durability: KVDurability) throws {
        try replaceDatabase(durability: durability) { () throws(FileIOError) in
            try FileIO.copyFileAtomically(from: snapshotPath, to: path)
        }
    }

    /// Replaces the whole state with `preparedPath`, a complete, fsynced copy of a snapshot
    /// (``SnapshotStore/prepareInstall(of:)``) on this file system, which is renamed into place:
    /// no file-sized work, so it may run where a long copy may not. The file is consumed.
    public func replace(moving preparedPath: String, durability: KVDurability) throws {
        try replaceDatabase(durability: durability) { () throws(FileIOError) in
            try FileIO.renameDurably(from: preparedPath, to: path)
        }
    }

    private func replaceDatabase(durability: KVDurability, install: () throws(FileIOError) -> Void) throws {
        // Waits for a capture in flight (see `captures`): rare, and the alternative is a
        // connection on the old file deleting the new one's WAL.
        try captures.withLock { (_: inout Bool) throws in try replaceDatabaseFiles(durability: durability, install: install) }
    }

    private func replaceDatabaseFiles(durability: KVDurability, install: () throws(FileIOError) -> Void) throws {
        try writer.withLock { (writer: inout Writer?) throws in
            try reader.withLock { (reader: inout Reader?) throws in
                stopCheckpointer()
                writer = nil
                reader = nil
                cache.withLock { $0.invalidate() }
                // The old database's WAL must not be replayed onto the new one.
                unlink(path + "-wal")
                unlink(path + "-shm")
                // If this fails (a full disk), the store stays closed: reads and applies fail
                // rather than serve the old database without its WAL, and the caller retries.
                try install()
                let connection = try SQLiteConnection(path: path)
                try Self.prepareSchema(connection, path: path, durability: durability)
                writer = try Writer(connection: connection, durability: durability, backgroundCheckpoints: backgroundCheckpoints)
                reader = try Reader(connection: SQLiteConnection(path: path))
                if backgroundCheckpoints {
                    let restarted = try Checkpointer(path: path)
                    checkpointer.withLock { $0 = restarted }
                }
            }
        }
    }

    /// Empties the state machine: keys, members and the applied index, in one transaction.
    /// Used when a node that only ever bootstrapped itself is adopted by another cluster.
    public func reset() throws(SQLiteError) {
        try writer.withLock { (writer: inout Writer?) throws(SQLiteError) in
            // A full checkpoint makes the reset durable even with synchronous=NORMAL.
            try Self.open(writer, path: path).connection.execute(
                "BEGIN IMMEDIATE; DELETE FROM kv; DELETE FROM members; DELETE FROM meta; COMMIT; PRAGMA wal_checkpoint(FULL);")
            cache.withLock { $0.invalidate() }
        }
    }

    /// The Raft index of the last entry applied, stored in the same transaction as its data.
    public func appliedIndex() throws(SQLiteError) -> UInt64 {
        try reader.withLock { (reader: inout Reader?) throws(SQLiteError) -> UInt64 in
            try Self.open(reader, path: path).appliedIndex()
        }
    }

    /// The applied index the last ``makeDurable()`` made durable (0 before the first).
    public func durableIndex() throws(SQLiteError) -> UInt64 {
        try reader.withLock { (reader: inout Reader?) throws(SQLiteError) -> UInt64 in
            try Self.open(reader, path: path).durableIndex()
        }
    }

    // MARK: Writes

    /// Applies `operations` in one transaction, and records `appliedIndex` in it when given,
    /// so the data and the index that covers it are durable together or not at all.
    public func apply(_ operations: [KVOperation], appliedIndex: UInt64? = nil) throws(SQLiteError) {
        try writer.withLock { (writer: inout Writer?) throws(SQLiteError) in
            let writer = try Self.open(writer, path: path)
            cache.withLock { $0.beginApply() }
            do throws(SQLiteError) {
                try writer.apply(operations, appliedIndex: appliedIndex)
            } catch {
                cache.withLock { $0.applyFailed() }
                throw error
            }
            // Committed: now, still holding the write lock, the cache learns the same changes.
            cache.withLock { cache in
                cache.applied(operations.compactMap { operation in
                    switch operation {
                    case let .put(key, value): (key, value)
                    case let .delete(key): (key, nil)
                    case .setMember, .removeMember: nil
                    }
                })
            }
        }
    }

    /// Makes everything applied so far durable, and returns the applied index that now is.
    ///
    /// Under `synchronous=NORMAL` (raft mode) a commit reaches SQLite's WAL without an fsync,
    /// so the last commits may be lost on power failure: harmless while the Raft log still
    /// holds the entries, since the log replays everything after the stored applied index. Log
    /// compaction may only drop entries the state machine holds durably, and this is the
    /// barrier it waits for: one small commit with `synchronous=FULL`, whose fsync of the WAL
    /// covers every frame written before it. No file-sized work, whatever the data size.
    public func makeDurable() throws(SQLiteError) -> UInt64 {
        try writer.withLock { (writer: inout Writer?) throws(SQLiteError) -> UInt64 in
            try Self.open(writer, path: path).makeDurable()
        }
    }

    /// The smallest byte string greater than every string starting with `prefix`, or nil when
    /// there is none (empty prefix, or all 0xFF).
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8]? {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return nil
    }

    private static func open<T>(_ value: T?, path: String) throws(SQLiteError) -> T {
        guard let value else { throw SQLiteError(code: SQLITE_MISUSE, message: "store is closed", context: path) }
        return value
    }
}

/// The write connection and its statements.
private final class Writer {
    let connection: SQLiteConnection
    let durability: KVDurability
    let begin, commit, rollback, put, delete, setApplied, setMember, removeMember: SQLiteStatement
    let applied, setDurable: SQLiteStatement

    init(connection: SQLiteConnection, durability: KVDurability, backgroundCheckpoints: Bool) throws(SQLiteError) {
        self.connection = connection
        self.durability = durability
        // Interior pages of a large table, and the leaves recently touched, in memory: a
        // write to a random key then reads no page from the file to find its place.
        try connection.execute("PRAGMA cache_size=-65536")
        if backgroundCheckpoints { try connection.execute("PRAGMA wal_autocheckpoint=0") }
        applied = try connection.prepare("SELECT value FROM meta WHERE name = 'applied_index'")
        setDurable = try connection.prepare("INSERT INTO meta (name, value) VALUES ('durable_index', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value")
        begin = try connection.prepare("BEGIN IMMEDIATE")
        commit = try connection.prepare("COMMIT")
        rollback = try connection.prepare("ROLLBACK")
        put = try connection.prepare("INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        delete = try connection.prepare("DELETE FROM kv WHERE key = ?1")
        setApplied = try connection.prepare("INSERT INTO meta (name, value) VALUES ('applied_index', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value")
        setMember = try connection.prepare("INSERT INTO members (id, raft_addr, http_addr, promote) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET raft_addr = excluded.raft_addr, http_addr = excluded.http_addr, promote = excluded.promote")
        removeMember = try connection.prepare("DELETE FROM members WHERE id = ?1")
    }

    func makeDurable() throws(SQLiteError) -> UInt64 {
        // The same statement the reader uses, on this connection: what this writer committed.
        let index: UInt64
        do {
            defer { applied.reset() }
            index = try applied.step() ? UInt64(applied.columnInt(0)) : 0
        }
        try connection.execute("PRAGMA synchronous=FULL")
        defer { try? connection.execute("PRAGMA synchronous=\(durability == .full ? "FULL" : "NORMAL")") }
        // A commit that changes nothing writes no frame and syncs nothing: record the mark.
        try begin.run()
        do {
            try setDurable.bind(Int64(index), at: 1)
            try setDurable.run()
            try commit.run()
        } catch {
            setDurable.reset()
            try? rollback.run()
            throw error
        }
        return index
    }

    func apply(_ operations: [KVOperation], appliedIndex: UInt64?) throws(SQLiteError) {
        try begin.run()
        do {
            for operation in operations {
                switch operation {
                case let .put(key, value):
                    try put.bind(key, at: 1)
                    try put.bind(value, at: 2)
                    try put.run()
                case let .delete(key):
                    try delete.bind(key, at: 1)
                    try delete.run()
                case let .setMember(id, raftAddress, httpAddress, promote):
                    try setMember.bind(id, at: 1)
                    try setMember.bind(raftAddress, at: 2)
                    try setMember.bind(httpAddress, at: 3)
                    try setMember.bind(Int64(promote ? 1 : 0), at: 4)
                    try setMember.run()
                case let .removeMember(id):
                    try removeMember.bind(id, at: 1)
                    try removeMember.run()
                }
            }
            if let appliedIndex {
                precondition(appliedIndex <= UInt64(Int64.max), "appliedIndex=\(appliedIndex)")
                try setApplied.bind(Int64(appliedIndex), at: 1)
                try setApplied.run()
            }
            try commit.run()
        } catch {
            // Leave no half-applied batch behind: the caller sees the error and nothing changed.
            for statement in [put, delete, setApplied, setMember, removeMember] { statement.reset() }
            try? rollback.run()
            throw error
        }
    }
}

/// The read connection and its statements.
private final class Reader {
    let connection: SQLiteConnection
    let get, listBounded, listUnbounded, countAll, applied, durable, allMembers: SQLiteStatement

    init(connection: SQLiteConnection) throws(SQLiteError) {
        self.connection = connection
        get = try connection.prepare("SELECT value FROM kv WHERE key = ?1")
        // Two shapes so SQLite can use the primary key for both bounds; `key > ?2` with an empty
        // blob is true for every (non-empty) key.
        listBounded = try connection.prepare("SELECT key FROM kv WHERE key >= ?1 AND key > ?2 AND key < ?3 ORDER BY key LIMIT ?4")
        listUnbounded = try connection.prepare("SELECT key FROM kv WHERE key >= ?1 AND key > ?2 ORDER BY key LIMIT ?3")
        countAll = try connection.prepare("SELECT COUNT(*) FROM kv")
        applied = try connection.prepare("SELECT value FROM meta WHERE name = 'applied_index'")
        durable = try connection.prepare("SELECT value FROM meta WHERE name = 'durable_index'")
        allMembers = try connection.prepare("SELECT id, raft_addr, http_addr, promote FROM members ORDER BY id")
    }

    func members() throws(SQLiteError) -> [MemberRecord] {
        defer { allMembers.reset() }
        var records: [MemberRecord] = []
        while try allMembers.step() {
            records.append(MemberRecord(id: allMembers.columnText(0) ?? "", raftAddress: allMembers.columnText(1) ?? "",
                                        httpAddress: allMembers.columnText(2) ?? "", promote: allMembers.columnInt(3) != 0))
        }
        return records
    }

    func get(_ key: [UInt8]) throws(SQLiteError) -> [UInt8]? {
        defer { get.reset() }
        try get.bind(key, at: 1)
        guard try get.step() else { return nil }
        return get.columnBytes(0)
    }

    func list(prefix: [UInt8], after: [UInt8]?, limit: Int) throws(SQLiteError) -> KeyPage {
        let statement: SQLiteStatement
        if let upper = KVStore.prefixEnd(prefix) {
            statement = listBounded
            try statement.bind(upper, at: 3)
            try statement.bind(Int64(limit + 1), at: 4)
        } else {
            statement = listUnbounded
            try statement.bind(Int64(limit + 1), at: 3)
        }
        defer { statement.reset() }
        try statement.bind(prefix, at: 1)
        try statement.bind(after ?? [], at: 2)
        var keys: [[UInt8]] = []
        // One row beyond the limit tells whether another page exists.
        while try statement.step() {
            keys.append(statement.columnBytes(0))
        }
        guard keys.count > limit else { return KeyPage(keys: keys, nextAfter: nil) }
        keys.removeLast(keys.count - limit)
        return KeyPage(keys: keys, nextAfter: keys.last)
    }

    func count() throws(SQLiteError) -> Int {
        defer { countAll.reset() }
        _ = try countAll.step()
        return Int(countAll.columnInt(0))
    }

    func appliedIndex() throws(SQLiteError) -> UInt64 {
        defer { applied.reset() }
        guard try applied.step() else { return 0 }
        return UInt64(applied.columnInt(0))
    }

    func durableIndex() throws(SQLiteError) -> UInt64 {
        defer { durable.reset() }
        guard try durable.step() else { return 0 }
        return UInt64(durable.columnInt(0))
    }
}
