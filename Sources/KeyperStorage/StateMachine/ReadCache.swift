/// Values of recently read or written keys, so a read of a hot key takes neither the index
/// lock nor a `pread` (a point read from the store was an eighth of the leader's CPU on a read
/// load, when the store was SQLite). Write-through: every applied batch updates the keys it
/// changed, in the store's write lock, after the batch is appended and before the caller
/// learns it applied, so a read that waits for an applied index always sees the cache at or
/// past it.
///
/// A miss is filled from the store only if no batch was applied, or was being applied, between
/// the lookup and the fill (``version`` unchanged, no apply in progress): a fill can never put
/// back a value older than one a reader may already have seen, not even in the moment between
/// the store's append and the cache's update. Bounded by bytes; when a new entry would not fit,
/// the cache starts over empty (cheap, and only a working set larger than the bound pays).
struct ReadCache {
    /// A key's cached state: its value and revisions, or known to be absent.
    enum Cached: Equatable {
        case value([UInt8], KeyRevisions)
        case absent
    }

    let bytesMax: Int
    private(set) var version: UInt64 = 0
    /// The store revision the entries reflect: moved with every batch they learn, so that a
    /// hit reads a value and the revision it is current at together.
    private(set) var revision: UInt64
    private(set) var bytes = 0
    /// Between ``beginApply()`` and ``applied(_:)`` or ``applyFailed()``: the store may already
    /// hold the batch while the cache does not, so no fill is trusted.
    private(set) var applying = false
    private var entries: [[UInt8]: Cached] = [:]

    init(bytesMax: Int, revision: UInt64) {
        self.bytesMax = bytesMax
        self.revision = revision
    }

    var count: Int { entries.count }

    func lookup(_ key: [UInt8]) -> Cached? { entries[key] }

    /// Fills a miss read at `version`; ignored when a batch was applied since.
    mutating func fill(_ key: [UInt8], _ cached: Cached, readAt version: UInt64) {
        guard version == self.version, !applying else { return }
        store(key, cached)
    }

    /// A batch is about to be committed.
    mutating func beginApply() {
        applying = true
        version &+= 1
    }

    /// The batch was rolled back: nothing changed, but fills read meanwhile are not trusted.
    mutating func applyFailed() {
        applying = false
        version &+= 1
    }

    /// Records what a committed batch did, in order, and the store revision after it.
    mutating func applied(_ changes: [(key: [UInt8], state: Cached)], revision: UInt64) {
        applying = false
        version &+= 1
        self.revision = revision
        for change in changes { store(change.key, change.state) }
    }

    /// Forgets everything: the whole state was replaced by one at `revision`.
    mutating func invalidate(revision: UInt64) {
        version &+= 1
        self.revision = revision
        entries = [:]
        bytes = 0
    }

    private mutating func store(_ key: [UInt8], _ cached: Cached) {
        let size = Self.size(key, cached)
        guard size <= bytesMax / 4 else {
            // Too large to be worth holding: forget any older copy instead.
            if let old = entries.removeValue(forKey: key) { bytes -= Self.size(key, old) }
            return
        }
        if let old = entries.removeValue(forKey: key) { bytes -= Self.size(key, old) }
        if bytes + size > bytesMax {
            entries.removeAll(keepingCapacity: true)
            bytes = 0
        }
        entries[key] = cached
        bytes += size
    }

    /// Bytes held for an entry, with a rough allowance for the dictionary and array headers.
    static func size(_ key: [UInt8], _ cached: Cached) -> Int {
        let value = if case .value(let bytes, _) = cached { bytes.count } else { 0 }
        return key.count + value + 64
    }
}
