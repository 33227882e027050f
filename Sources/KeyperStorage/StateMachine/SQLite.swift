import CSQLite

/// An error from SQLite, with the result code and SQLite's own message.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let message: String
    public let context: String

    public var description: String { "\(context): \(message) (sqlite code \(code))" }

    /// `SQLITE_FULL`: the disk (or the database's size limit) is full.
    public var isDiskFull: Bool { code & 0xFF == SQLITE_FULL }
}

/// `SQLITE_TRANSIENT` is a macro Swift does not import: it tells SQLite to copy bound bytes.
private let transientDestructor = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection. Not thread-safe: the owner serialises access (see ``KVStore``).
final class SQLiteConnection {
    private(set) var handle: OpaquePointer?
    let path: String

    init(path: String, readOnly: Bool = false) throws(SQLiteError) {
        self.path = path
        // NOMUTEX: each connection is used by one thread at a time under our own lock, so
        // SQLite's per-connection mutex would only add cost.
        let flags = (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE))
            | SQLITE_OPEN_NOMUTEX
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc, message: message, context: "opening \(path)")
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        // Wait for a writer's lock rather than failing at once (readers never block in WAL mode,
        // but a checkpoint can briefly need the lock).
        sqlite3_busy_timeout(db, 5_000)
    }

    deinit { close() }

    func close() {
        guard let handle else { return }
        sqlite3_close_v2(handle)
        self.handle = nil
    }

    func execute(_ sql: String) throws(SQLiteError) {
        var errorMessage: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &errorMessage)
        guard rc == SQLITE_OK else {
            let message = errorMessage.map { String(cString: $0) } ?? lastErrorMessage
            sqlite3_free(errorMessage)
            throw SQLiteError(code: rc, message: message, context: sql)
        }
    }

    func prepare(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        var statement: OpaquePointer?
        // PERSISTENT: these statements live as long as the connection and are reused.
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else {
            throw SQLiteError(code: rc, message: lastErrorMessage, context: "preparing \(sql)")
        }
        return SQLiteStatement(statement: statement, connection: self, sql: sql)
    }

    /// Runs a single-value query such as `PRAGMA journal_mode`.
    func scalarText(_ sql: String) throws(SQLiteError) -> String? {
        let statement = try prepare(sql)
        defer { statement.finalize() }
        guard try statement.step() else { return nil }
        return statement.columnText(0)
    }

    func scalarInt(_ sql: String) throws(SQLiteError) -> Int64? {
        let statement = try prepare(sql)
        defer { statement.finalize() }
        guard try statement.step() else { return nil }
        return statement.columnInt(0)
    }

    var lastErrorMessage: String {
        guard let handle else { return "connection closed" }
        return String(cString: sqlite3_errmsg(handle))
    }

    var changes: Int { Int(sqlite3_changes(handle)) }
}

/// A prepared statement, reset and reused for every call.
final class SQLiteStatement {
    private var statement: OpaquePointer?
    private unowned let connection: SQLiteConnection
    let sql: String

    fileprivate init(statement: OpaquePointer, connection: SQLiteConnection, sql: String) {
        self.statement = statement
        self.connection = connection
        self.sql = sql
    }

    deinit { finalize() }

    func finalize() {
        sqlite3_finalize(statement)
        statement = nil
    }

    /// Clears bindings and the previous run so the statement can run again.
    func reset() {
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
    }

    func bind(_ bytes: [UInt8], at position: Int32) throws(SQLiteError) {
        let rc = bytes.withUnsafeBytes { raw in
            // A zero-length blob must still bind as a blob, not NULL: pass a non-nil pointer.
            sqlite3_bind_blob64(statement, position, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
                                sqlite3_uint64(raw.count), transientDestructor)
        }
        try check(rc, "binding blob \(position)")
    }

    func bind(_ value: Int64, at position: Int32) throws(SQLiteError) {
        try check(sqlite3_bind_int64(statement, position, value), "binding int \(position)")
    }

    func bind(_ text: String, at position: Int32) throws(SQLiteError) {
        try check(sqlite3_bind_text(statement, position, text, -1, transientDestructor), "binding text \(position)")
    }

    /// Steps once: `true` when a row is available, `false` when done.
    func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(statement)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw SQLiteError(code: rc, message: connection.lastErrorMessage, context: sql)
        }
    }

    /// Runs a statement that returns no rows, then resets it.
    func run() throws(SQLiteError) {
        defer { reset() }
        while try step() {}
    }

    func columnBytes(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(statement, column))
        guard count > 0, let pointer = sqlite3_column_blob(statement, column) else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: pointer, count: count))
    }

    func columnInt(_ column: Int32) -> Int64 { sqlite3_column_int64(statement, column) }

    func columnText(_ column: Int32) -> String? {
        guard let text = sqlite3_column_text(statement, column) else { return nil }
        return String(cString: text)
    }

    private func check(_ rc: Int32, _ what: String) throws(SQLiteError) {
        guard rc == SQLITE_OK else {
            throw SQLiteError(code: rc, message: connection.lastErrorMessage, context: "\(what) in \(sql)")
        }
    }
}
