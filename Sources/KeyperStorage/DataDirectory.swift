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
/// Layout (format 2):
/// - `KEYPER`: the marker, `keyper-data-dir format=<n>`; written atomically on creation.
/// - `LOCK`: held with `flock` while a process uses the directory.
/// - `IDENTITY`: mode, node id, cluster id and incarnation (see ``NodeIdentity``).
/// - `state/`: the key-value state machine, segment files of a log-structured store
///   (``KVStore``). An earlier Keyper kept it in `state.db`, a SQLite database, which the
///   first open carries over into `state/` and removes.
/// - `wal/`, `snapshots/`: the Raft log and snapshots (cluster mode).
///
/// Format 2 added incarnations: cluster configurations (in the log and in snapshots) record
/// the incarnation of each member. A format-1 standalone directory is upgraded in place; a
/// format-1 cluster directory is refused (its log cannot say who its members were).
public final class DataDirectory: Sendable {
    /// The newest layout this build reads and writes.
    public static let formatVersion = 2
    static let markerName = "KEYPER"
    static let markerPrefix = "keyper-data-dir format="
    /// Names a fresh filesystem or tooling may leave behind; their presence does not make a
    /// directory "someone else's".
    static let ignorableNames: Set<String> = ["lost+found", ".DS_Store"]

    public let path: String
    /// The format the marker named when the directory was opened.
    public let format: Int
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
        var format = Self.formatVersion
        if let marker = try? FileIO.readFile(markerPath) {
            let text = String(decoding: marker, as: UTF8.self).trimmingWhitespace()
            guard text.hasPrefix(Self.markerPrefix), let found = Int(text.dropFirst(Self.markerPrefix.count)) else {
                throw fail("\(Self.markerName) does not look like a Keyper marker (found \"\(text.prefix(60))\")")
            }
            guard found <= Self.formatVersion else {
                throw fail("written by a newer Keyper (data format \(found); this build reads up to \(Self.formatVersion))")
            }
            format = found
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
        guard Self.lock(fd) else {
            close(fd)
            throw fail("in use by another process (LOCK is held)")
        }
        lockDescriptor = Atomic(fd)
        self.format = format
    }

    deinit { release() }

    /// Takes the `flock` on `fd`, trying for up to 100 ms before giving up. A process that
    /// starts a child (a test runner, `keyper verify`) lends it every descriptor from fork to
    /// exec, `O_CLOEXEC` or not, and with them the lock of a directory it has just released:
    /// opened again at once (a node restarted in process), the directory would look in use.
    private static func lock(_ fd: Int32) -> Bool {
        for attempt in 0..<20 {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { return true }
            guard errno == EWOULDBLOCK, attempt < 19 else { return false }
            usleep(5_000)
        }
        return false
    }

    /// Gives the directory up so another opener may take it. Closing the descriptor releases
    /// the flock. Idempotent.
    public func release() {
        let fd = lockDescriptor.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { close(fd) }
    }

    /// The directory of the key-value state machine (``KVStore``).
    public var statePath: String { path + "/state" }

    /// Where an earlier Keyper kept the state machine (a SQLite database), carried over into
    /// ``statePath`` when the store first opens.
    public var legacyDatabasePath: String { path + "/state.db" }
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
    /// A random id (never 0) this directory was created with, renewed when the node's log lost
    /// entries it may have acknowledged (`--wal-truncate-corrupt`). Cluster configurations
    /// record it: a node whose incarnation they do not list is a new member, not the old one.
    public var incarnation: UInt64

    public init(mode: Mode, nodeID: String, clusterID: String = "", adopted: Bool = false,
                incarnation: UInt64 = NodeIdentity.newIncarnation()) {
        self.mode = mode
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.adopted = adopted
        self.incarnation = incarnation
    }

    public static func newIncarnation() -> UInt64 { UInt64.random(in: 1...UInt64.max) }

    /// The incarnation as people see it: 16 hex digits.
    public static func describe(_ incarnation: UInt64) -> String {
        let digits = String(incarnation, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    func encoded() -> [UInt8] {
        Array(("mode=\(mode.rawValue)\nnode_id=\(nodeID)\ncluster_id=\(clusterID)\nadopted=\(adopted)\n"
            + "incarnation=\(Self.describe(incarnation))\n").utf8)
    }

    init?(decoding bytes: [UInt8]) {
        var fields: [Substring: Substring] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { return nil }
            fields[line[..<equals]] = line[line.index(after: equals)...]
        }
        guard let mode = fields["mode"].flatMap({ Mode(rawValue: String($0)) }), let nodeID = fields["node_id"] else { return nil }
        // Written before incarnations existed (format 1): 0 until ``DataDirectory/claim`` gives it one.
        var incarnation: UInt64 = 0
        if let text = fields["incarnation"] {
            guard let value = UInt64(text, radix: 16), value != 0 else { return nil }
            incarnation = value
        }
        self.init(mode: mode, nodeID: String(nodeID), clusterID: String(fields["cluster_id"] ?? ""),
                  adopted: fields["adopted"] == "true", incarnation: incarnation)
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
    ///
    /// A format-1 directory is upgraded here (its marker rewritten, its identity given an
    /// incarnation) unless it holds a cluster node's log, which format 2 cannot read.
    /// `newIncarnation` draws an incarnation when one is needed (a simulation's is seeded).
    public func claim(mode: NodeIdentity.Mode, nodeID: String,
                      newIncarnation: () -> UInt64 = NodeIdentity.newIncarnation) throws(DataDirectoryError) -> NodeIdentity {
        if format < Self.formatVersion { try upgrade() }
        guard var existing = try identity() else {
            let identity = NodeIdentity(mode: mode, nodeID: nodeID, incarnation: newIncarnation())
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
        if existing.incarnation == 0 {
            existing.incarnation = newIncarnation()
            try saveIdentity(existing)
        }
        return existing
    }

    private func upgrade() throws(DataDirectoryError) {
        let existing = try identity()
        if existing?.mode == .raft || fileExists(walPath) {
            throw DataDirectoryError(path: path, message:
                "holds a cluster node's data in format \(format), written by an earlier Keyper whose Raft log does not record "
                + "incarnations; this build reads format \(Self.formatVersion) only. Copy the keys out with the earlier build, "
                + "then start this node on an empty --data-dir and add it to a cluster with --join")
        }
        do {
            try FileIO.writeFileAtomically(path + "/" + Self.markerName, Array("\(Self.markerPrefix)\(Self.formatVersion)\n".utf8))
        } catch {
            throw DataDirectoryError(path: path, message: error.description)
        }
    }

    /// Why this directory cannot be started as the cluster member its identity says it is,
    /// nil when it can: the identity names a cluster but the Raft log or the state machine
    /// is gone (a replaced disk, or files removed by hand). Starting anyway would present an
    /// empty node as the member that held that data; it could vote as if it remembered.
    public func missingMemberData(_ identity: NodeIdentity, logFiles: any WALFileSystem = GlibcFileSystem()) -> String? {
        guard identity.mode == .raft, !identity.clusterID.isEmpty else { return nil }
        let segments = ((try? logFiles.contentsOfDirectory(walPath)) ?? []).filter { $0.hasSuffix(".wal") }
        let missing = segments.isEmpty ? "the Raft log (wal/)" : !hasStateMachine ? "the state machine (state/)" : nil
        guard let missing else { return nil }
        return "IDENTITY says this is node \(identity.nodeID) of cluster \(identity.clusterID), but \(missing) is missing: "
            + "its data is lost. To bring the node back, remove this data directory and start it again with "
            + "--join http://<any member> (the cluster then replaces the old member with this new one). Do not restore this "
            + "directory from a backup: an older copy of the log under the same incarnation could vote as if it held what it lost"
    }

    /// Whether a state machine is here: segments in `state/`, or an earlier build's `state.db`.
    private var hasStateMachine: Bool {
        fileExists(legacyDatabasePath) || ((try? FileIO.listDirectory(statePath)) ?? []).contains { $0.hasSuffix(".seg") }
    }

    /// The directory of the Raft log.
    public var walPath: String { path + "/wal" }
}

private func fileExists(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0
}
