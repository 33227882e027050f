import KeyperBase
import KeyperRaft
#if canImport(Glibc)
import Glibc
#endif

/// An in-memory file system that models what a crash keeps, for tests and simulation.
///
/// The model: each file has its current bytes and the bytes a `sync` last made durable; each
/// directory has its current entries and the entries a `syncDirectory` last made durable.
/// ``crash(keepingUnsynced:)`` throws away everything not durable (optionally keeping a
/// random part of unsynced appends, as a torn write does), and invalidates open handles.
///
/// Faults: ``capacityBytes`` makes writes fail with `ENOSPC` once the files would outgrow it
/// (after writing what fits, as a real short write does); ``failSyncs`` makes `sync` fail with `EIO`.
///
/// Not thread-safe: one test or one simulated node at a time.
public final class SimulatedFileSystem: WALFileSystem {
    final class Node {
        var data: [UInt8] = []
        var durable: [UInt8] = []
    }

    /// What a crash keeps of data written since the last sync.
    public enum UnsyncedData: Sendable {
        /// Nothing: the file reverts to what was last synced.
        case nothing
        /// A random prefix of each file's unsynced appended bytes, its last `tornGarbage` bytes
        /// possibly replaced by garbage or zeros (a torn sector), chosen by the seed.
        case randomPrefix(seed: UInt64)
    }

    private var directories: Set<String> = ["/", "."]
    private var names: [String: Node] = [:]
    private var durableNames: [String: Node] = [:]
    /// Paths locked by ``lockFile(_:)``; a crash (the process dying) releases them.
    fileprivate var lockedPaths: Set<String> = []
    /// Bumped by every crash; handles opened before it fail with EIO.
    private(set) var generation = 0

    /// When set, writes that would make the total size of all files exceed it fail with ENOSPC.
    public var capacityBytes: Int?
    /// When true, `sync` fails with EIO.
    public var failSyncs = false
    /// How many file syncs and directory syncs happened (to check group commit).
    public private(set) var fileSyncCount = 0
    public private(set) var directorySyncCount = 0

    public init() {}

    // MARK: inspection for tests

    /// Current bytes of the file at `path`, or nil if there is none.
    public func contents(of path: String) -> [UInt8]? { names[path]?.data }

    /// Replaces the bytes of `path` (creating it) and makes them durable, as if written long ago.
    public func setContents(_ bytes: [UInt8], of path: String) {
        let node = names[path] ?? Node()
        node.data = bytes
        node.durable = bytes
        names[path] = node
        durableNames[path] = node
    }

    /// Paths of all files, sorted.
    public var filePaths: [String] { names.keys.sorted() }

    /// Total bytes of all files.
    public var usedBytes: Int { names.values.reduce(0) { $0 + $1.data.count } }

    /// A deep copy: an independent file system with the same current and durable state.
    public func copy() -> SimulatedFileSystem {
        let other = SimulatedFileSystem()
        var copies: [ObjectIdentifier: Node] = [:]
        func copyNode(_ node: Node) -> Node {
            if let existing = copies[ObjectIdentifier(node)] { return existing }
            let copy = Node()
            copy.data = node.data
            copy.durable = node.durable
            copies[ObjectIdentifier(node)] = copy
            return copy
        }
        other.directories = directories
        other.names = names.mapValues(copyNode)
        other.durableNames = durableNames.mapValues(copyNode)
        other.capacityBytes = capacityBytes
        return other
    }

    /// A power loss: everything not made durable is lost, open handles die.
    public func crash(keepingUnsynced unsynced: UnsyncedData = .nothing) {
        generation += 1
        lockedPaths.removeAll()
        var rng: SplitMix64?
        if case .randomPrefix(let seed) = unsynced { rng = SplitMix64(seed: seed) }
        names = durableNames
        var seen = Set<ObjectIdentifier>()
        // In path order, so a seed tears the same bytes in every process.
        for path in names.keys.sorted() {
            guard let node = names[path], seen.insert(ObjectIdentifier(node)).inserted else { continue }
            var kept = node.durable
            if var generator = rng, node.data.count > kept.count, node.data.starts(with: kept) {
                let extra = node.data.count - kept.count
                let keep = Int.random(in: 0...extra, using: &generator)
                kept += node.data[kept.count..<(kept.count + keep)]
                // Sometimes the last sector written is torn: garbage or zeros in its last bytes.
                if keep > 0 && Bool.random(using: &generator) {
                    let torn = Int.random(in: 1...min(keep, 64), using: &generator)
                    let zeros = Bool.random(using: &generator)
                    for position in (kept.count - torn)..<kept.count {
                        kept[position] = zeros ? 0 : UInt8.random(in: 0...255, using: &generator)
                    }
                }
                rng = generator
            }
            node.data = kept
            node.durable = kept
        }
    }

    // MARK: WALFileSystem

    public func createDirectory(_ path: String) throws(FileSystemError) {
        guard directories.contains(path.walParentDirectory) else {
            throw FileSystemError(operation: "mkdir", path: path, errno: ENOENT)
        }
        // Directories are treated as durable at once: the WAL syncs the parent anyway.
        directories.insert(path)
    }

    public func contentsOfDirectory(_ path: String) throws(FileSystemError) -> [String] {
        guard directories.contains(path) else { throw FileSystemError(operation: "opendir", path: path, errno: ENOENT) }
        return names.keys.filter { $0.walParentDirectory == path }.map(\.walLastPathComponent)
    }

    public func openFile(_ path: String, create: Bool) throws(FileSystemError) -> any WALFile {
        if let node = names[path] { return SimulatedFile(path: path, node: node, fileSystem: self) }
        guard create else { throw FileSystemError(operation: "open", path: path, errno: ENOENT) }
        guard directories.contains(path.walParentDirectory) else { throw FileSystemError(operation: "open", path: path, errno: ENOENT) }
        let node = Node()
        names[path] = node
        return SimulatedFile(path: path, node: node, fileSystem: self)
    }

    public func removeFile(_ path: String) throws(FileSystemError) {
        guard names.removeValue(forKey: path) != nil else { throw FileSystemError(operation: "unlink", path: path, errno: ENOENT) }
    }

    public func rename(_ source: String, to destination: String) throws(FileSystemError) {
        guard let node = names.removeValue(forKey: source) else {
            throw FileSystemError(operation: "rename", path: source, errno: ENOENT)
        }
        names[destination] = node
    }

    public func syncDirectory(_ path: String) throws(FileSystemError) {
        guard directories.contains(path) else { throw FileSystemError(operation: "fsync", path: path, errno: ENOENT) }
        directorySyncCount += 1
        for name in durableNames.keys where name.walParentDirectory == path && names[name] == nil {
            durableNames.removeValue(forKey: name)
        }
        for (name, node) in names where name.walParentDirectory == path {
            durableNames[name] = node
        }
    }

    /// Locks are kept out of the file list: the lock file holds no data worth modelling.
    public func lockFile(_ path: String) throws(FileSystemError) -> any WALFile {
        guard lockedPaths.insert(path).inserted else { throw FileSystemError(operation: "flock", path: path, errno: EWOULDBLOCK) }
        return SimulatedLock(path: path, fileSystem: self, generation: generation)
    }

    // MARK: used by SimulatedFile

    fileprivate func checkAlive(_ file: SimulatedFile, _ operation: String) throws(FileSystemError) {
        guard file.generation == generation else { throw FileSystemError(operation: operation, path: file.path, errno: EIO) }
    }

    fileprivate func didSync() { fileSyncCount += 1 }
}

final class SimulatedFile: WALFile {
    let path: String
    fileprivate let node: SimulatedFileSystem.Node
    fileprivate let generation: Int
    private unowned let fileSystem: SimulatedFileSystem
    private var isClosed = false

    init(path: String, node: SimulatedFileSystem.Node, fileSystem: SimulatedFileSystem) {
        self.path = path
        self.node = node
        self.fileSystem = fileSystem
        self.generation = fileSystem.generation
    }

    private func check(_ operation: String) throws(FileSystemError) {
        guard !isClosed else { throw FileSystemError(operation: operation, path: path, errno: EBADF) }
        try fileSystem.checkAlive(self, operation)
    }

    func size() throws(FileSystemError) -> Int64 {
        try check("fstat")
        return Int64(node.data.count)
    }

    func read(at offset: Int64, count: Int) throws(FileSystemError) -> [UInt8] {
        try check("pread")
        let start = min(Int(offset), node.data.count)
        let end = min(start + count, node.data.count)
        return Array(node.data[start..<end])
    }

    func write(_ bytes: [UInt8], at offset: Int64) throws(FileSystemError) {
        try check("pwrite")
        let offset = Int(offset)
        var writable = bytes.count
        if let capacity = fileSystem.capacityBytes {
            let growth = max(0, offset + bytes.count - node.data.count)
            let free = max(0, capacity - fileSystem.usedBytes)
            if growth > free { writable = max(0, bytes.count - (growth - free)) }
        }
        if offset > node.data.count {
            node.data += [UInt8](repeating: 0, count: offset - node.data.count)
        }
        let overlap = min(writable, node.data.count - offset)
        if overlap > 0 { node.data.replaceSubrange(offset..<(offset + overlap), with: bytes[0..<overlap]) }
        if writable > overlap { node.data += bytes[overlap..<writable] }
        if writable < bytes.count { throw FileSystemError(operation: "pwrite", path: path, errno: ENOSPC) }
    }

    func sync() throws(FileSystemError) {
        try check("fdatasync")
        if fileSystem.failSyncs { throw FileSystemError(operation: "fdatasync", path: path, errno: EIO) }
        node.durable = node.data
        fileSystem.didSync()
    }

    func truncate(to size: Int64) throws(FileSystemError) {
        try check("ftruncate")
        let size = Int(size)
        if size < node.data.count {
            node.data.removeSubrange(size...)
        } else {
            node.data += [UInt8](repeating: 0, count: size - node.data.count)
        }
    }

    func close() { isClosed = true }
}

/// The handle of a simulated lock: closing it releases the lock.
final class SimulatedLock: WALFile {
    let path: String
    private weak var fileSystem: SimulatedFileSystem?
    private let generation: Int
    private var isClosed = false

    init(path: String, fileSystem: SimulatedFileSystem, generation: Int) {
        self.path = path
        self.fileSystem = fileSystem
        self.generation = generation
    }

    deinit { close() }

    func size() throws(FileSystemError) -> Int64 { 0 }
    func read(at offset: Int64, count: Int) throws(FileSystemError) -> [UInt8] { [] }
    func write(_ bytes: [UInt8], at offset: Int64) throws(FileSystemError) {
        throw FileSystemError(operation: "pwrite", path: path, errno: EBADF)
    }
    func sync() throws(FileSystemError) {}
    func truncate(to size: Int64) throws(FileSystemError) {}

    func close() {
        guard !isClosed else { return }
        isClosed = true
        // A lock from before a crash was already released with its process.
        if let fileSystem, fileSystem.generation == generation { fileSystem.lockedPaths.remove(path) }
    }
}
