#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a data directory cannot be used. The message names the path and what was found there.
public struct DataDirectoryError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let message: String
    public var description: String { "data directory \(path): \(message)" }
}

/// A Keyper data directory: created on first use, marked with a format file, and locked so
/// that two processes never share it.
///
/// Layout (format 1):
/// - `KEYPER`: the marker, `keyper-data-dir format=<n>`; written atomically on creation.
/// - `LOCK`: held with `flock` while a process uses the directory.
/// - `state.db` (+ `-wal`, `-shm`): the SQLite state machine.
public final class DataDirectory: Sendable {
    /// The newest layout this build reads and writes.
    public static let formatVersion = 1
    static let markerName = "KEYPER"
    static let markerPrefix = "keyper-data-dir format="
    /// Names a fresh filesystem or tooling may leave behind; their presence does not make a
    /// directory "someone else's".
    static let ignorableNames: Set<String> = ["lost+found", ".DS_Store"]

    public let path: String
    private let lockDescriptor: Int32

    /// Opens `path`, creating it (and its parents) when absent.
    ///
    /// Refuses a directory that holds files but no Keyper marker, one written by a newer
    /// format, one that is a file, and one another process holds.
    public init(path: String) throws(DataDirectoryError) {
        self.path = path
        func fail(_ message: String) -> DataDirectoryError { DataDirectoryError(path: path, message: message) }

        var info = stat()
        if stat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else { throw fail("exists and is not a directory") }
        } else {
            do { try FileIO.makeDirectories(path) } catch { throw fail(error.description) }
        }

        let markerPath = path + "/" + Self.markerName
        if let marker = try? FileIO.readFile(markerPath) {
            let text = String(decoding: marker, as: UTF8.self).trimmingWhitespace()
            guard text.hasPrefix(Self.markerPrefix), let format = Int(text.dropFirst(Self.markerPrefix.count)) else {
                throw fail("\(Self.markerName) does not look like a Keyper marker (found \"\(text.prefix(60))\")")
            }
            guard format <= Self.formatVersion else {
                throw fail("written by a newer Keyper (data format \(format); this build reads up to \(Self.formatVersion))")
            }
        } else {
            let names: [String]
            do { names = try FileIO.listDirectory(path) } catch { throw fail(error.description) }
            let foreign = names.filter { !Self.ignorableNames.contains($0) }.sorted()
            guard foreign.isEmpty else {
                let shown = foreign.prefix(5).joined(separator: ", ") + (foreign.count > 5 ? ", ..." : "")
                throw fail("not a Keyper data directory (no \(Self.markerName) file; found \(shown)); refusing to use it")
            }
            do {
                try FileIO.writeFileAtomically(markerPath, Array("\(Self.markerPrefix)\(Self.formatVersion)\n".utf8))
            } catch {
                throw fail(error.description)
            }
        }

        let fd = open(path + "/LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("cannot open LOCK: \(FileIO.errnoDescription())") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw fail("in use by another process (LOCK is held)")
        }
        lockDescriptor = fd
    }

    deinit {
        // Closing the descriptor releases the flock.
        close(lockDescriptor)
    }

    /// The SQLite database holding the key-value state machine.
    public var databasePath: String { path + "/state.db" }
}

extension String {
    func trimmingWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }) else { return "" }
        let end = lastIndex(where: { !isSpace($0) })!
        return self[start...end]
    }
}
