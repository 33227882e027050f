extension Error {
    /// ENOSPC/EDQUOT (or SQLITE_FULL) from any storage layer: a condition that clears.
    public var isDiskFull: Bool {
        switch self {
        case let error as SQLiteError: error.isDiskFull
        case let error as FileIOError: error.isDiskFull
        case let error as WALError:
            if case .diskFull = error { true } else { false }
        default: false
        }
    }
}
