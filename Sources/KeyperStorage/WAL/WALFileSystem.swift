#if canImport(Glibc)
import Glibc
#endif

/// A failed file-system call: the operation, the path and the `errno` it returned.
public struct FileSystemError: Error, Hashable, Sendable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: Int32

    public init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    /// The device (or quota) is full: the caller may retry once space is freed.
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    public var description: String {
        "\(operation)(\(path)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// An open file as the WAL uses it: positional reads and writes, a data sync, truncation.
///
/// Implementations: ``GlibcFileSystem`` (the real thing) and ``SimulatedFileSystem`` (in memory,
/// with crashes that lose unsynced data and an injectable full disk).
public protocol WALFile: AnyObject {
    var path: String { get }
    /// Current size in bytes.
    func size() throws(FileSystemError) -> Int64
    /// Up to `count` bytes from `offset`; fewer only at the end of the file.
    func read(at offset: Int64, count: Int) throws(FileSystemError) -> [UInt8]
    /// All of `bytes` at `offset`, or throws. After a throw, a prefix of `bytes` may have been
    /// written: the caller truncates it away.
    func write(_ bytes: [UInt8], at offset: Int64) throws(FileSystemError)
    /// Makes the file's data and size durable (`fdatasync`).
    func sync() throws(FileSystemError)
    /// Sets the size to `size` (`ftruncate`).
    func truncate(to size: Int64) throws(FileSystemError)
    func close()
}

/// The directory operations the WAL needs. Paths are plain strings joined with "/".
public protocol WALFileSystem: AnyObject {
    /// Creates `path` if it does not exist (its parent must exist), and makes the new entry
    /// durable by syncing the parent.
    func createDirectory(_ path: String) throws(FileSystemError)
    /// Names (not paths) of the entries in `path`, without "." and "..".
    func contentsOfDirectory(_ path: String) throws(FileSystemError) -> [String]
    /// Opens `path` for reading and writing; with `create`, creates it empty if missing.
    func openFile(_ path: String, create: Bool) throws(FileSystemError) -> any WALFile
    func removeFile(_ path: String) throws(FileSystemError)
    /// Atomically replaces `destination` with `source`.
    func rename(_ source: String, to destination: String) throws(FileSystemError)
    /// Makes creations, renames and removals in directory `path` durable (`fsync` on the directory).
    func syncDirectory(_ path: String) throws(FileSystemError)
    /// Takes an exclusive lock on `path` (creating the file if needed) that lasts until the
    /// returned handle is closed or the process dies. Throws `EWOULDBLOCK` if it is held.
    func lockFile(_ path: String) throws(FileSystemError) -> any WALFile
}

extension String {
    /// The directory part of a path ("a/b/c" -> "a/b", "c" -> ".").
    var walParentDirectory: String {
        guard let slash = lastIndex(of: "/") else { return "." }
        return slash == startIndex ? "/" : String(self[..<slash])
    }

    /// The last component of a path.
    var walLastPathComponent: String {
        guard let slash = lastIndex(of: "/") else { return self }
        return String(self[index(after: slash)...])
    }
}
