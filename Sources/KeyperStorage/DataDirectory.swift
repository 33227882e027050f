import Synchronization

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

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
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
    /// The `flock`ed LOCK file; -1 once released.
    private let lockDescriptor: Atomic<Int32>

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
        lockDescriptor = Atomic(fd)
    }

    deinit { release() }

    /// Gives the directory up so another opener may take it. Closing the descriptor releases
    /// the flock. Idempotent.
    public func release() {
        let fd = lockDescriptor.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { close(fd) }
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

/// Which kind of node a data directory belongs to, recorded on first start so that a later
/// start in another mode, or under another node id, is refused instead of mixing histories.
public struct NodeIdentity: Equatable, Sendable {
    public enum Mode: String, Sendable {
        case standalone
        case raft
    }

    public var mode: Mode
    public var nodeID: String
    /// The Raft cluster this node belongs to; empty while a joining node waits to be adopted.
    public var clusterID: String
    /// True once another cluster's leader adopted this node: its log then comes only from that
    /// cluster, so an empty log after a crash means "wait for the leader", never "bootstrap".
    public var adopted: Bool

    public init(mode: Mode, nodeID: String, clusterID: String = "", adopted: Bool = false) {
        self.mode = mode
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.adopted = adopted
    }

    func encoded() -> [UInt8] {
        Array("mode=\(mode.rawValue)\nnode_id=\(nodeID)\ncluster_id=\(clusterID)\nadopted=\(adopted)\n".utf8)
    }

    init?(decoding bytes: [UInt8]) {
        var fields: [Substring: Substring] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { return nil }
            fields[line[..<equals]] = line[line.index(after: equals)...]
        }
        guard let mode = fields["mode"].flatMap({ Mode(rawValue: String($0)) }), let nodeID = fields["node_id"] else { return nil }
        self.init(mode: mode, nodeID: String(nodeID), clusterID: String(fields["cluster_id"] ?? ""),
                  adopted: fields["adopted"] == "true")
    }
}

extension DataDirectory {
    static let identityName = "IDENTITY"

    /// The recorded identity, or nil before the first start.
    public func identity() throws(DataDirectoryError) -> NodeIdentity? {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readFile(path + "/" + Self.identityName)
        } catch {
            if error.errorNumber == ENOENT { return nil }
            throw DataDirectoryError(path: path, message: error.description)
        }
        guard let identity = NodeIdentity(decoding: bytes) else {
            throw DataDirectoryError(path: path, message: "\(Self.identityName) is malformed")
        }
        return identity
    }

    /// Records `identity` durably (atomic replace).
    public func saveIdentity(_ identity: NodeIdentity) throws(DataDirectoryError) {
        do {
            try FileIO.writeFileAtomically(path + "/" + Self.identityName, identity.encoded())
        } catch {
            throw DataDirectoryError(path: path, message: error.description)
        }
    }

    /// Checks the directory against the mode and node id this process starts with, recording
    /// them on first start. Returns the identity in force.
    public func claim(mode: NodeIdentity.Mode, nodeID: String) throws(DataDirectoryError) -> NodeIdentity {
        guard let existing = try identity() else {
            let identity = NodeIdentity(mode: mode, nodeID: nodeID)
            try saveIdentity(identity)
            return identity
        }
        guard existing.mode == mode else {
            let hint = mode == .raft ? "start it without --enable-raft, or use a new --data-dir for Raft mode"
                                     : "start it with --enable-raft"
            throw DataDirectoryError(path: path, message: "holds a \(existing.mode.rawValue) node's data; \(hint)")
        }
        guard mode == .standalone || existing.nodeID == nodeID else {
            throw DataDirectoryError(path: path, message: "belongs to node \(existing.nodeID), not \(nodeID) (check --node-id)")
        }
        return existing
    }

    /// The directory of the Raft log.
    public var walPath: String { path + "/wal" }
}
