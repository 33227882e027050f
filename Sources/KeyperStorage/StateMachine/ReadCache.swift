/// Values of recently read or written keys, so a read of a hot key touches neither SQLite's
/// file locks nor its pages (a SQLite point read was an eighth of the leader's CPU on a read
/// load). Write-through: every applied batch updates the keys it changed, in the store's write
/// lock, after the transaction commits and before the caller learns it applied, so a read that
/// waits for an applied index always sees the cache at or past it.
///
/// A miss is filled from SQLite only if no batch was applied between the lookup and the fill
/// (``version`` is unchanged): a fill can never put back a value older than one applied.
/// Bounded by bytes; when full, arbitrary entries are dropped (hash order).
struct ReadCache {
    /// A key's cached state: its value, or known to be absent.
    enum Cached: Equatable {
        case value([UInt8])
        case absent
    }

    let bytesMax: Int
    private(set) var version: UInt64 = 0
    private(set) var bytes = 0
    private var entries: [[UInt8]: Cached] = [:]

    init(bytesMax: Int) {
        self.bytesMax = bytesMax
    }

    var count: Int { entries.count }

    func lookup(_ key: [UInt8]) -> Cached? { entries[key] }

    /// Fills a miss read at `version`; ignored when a batch was applied since.
    mutating func fill(_ key: [UInt8], _ cached: Cached, readAt version: UInt64) {
        guard version == self.version else { return }
        store(key, cached)
    }

    /// Records what an applied batch did, in order.
    mutating func applied(_ changes: [(key: [UInt8], value: [UInt8]?)]) {
        version &+= 1
        for change in changes { store(change.key, change.value.map(Cached.value) ?? .absent) }
    }

    /// Forgets everything: the whole state was replaced.
    mutating func invalidate() {
        version &+= 1
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
        if let old = entries.updateValue(cached, forKey: key) { bytes -= Self.size(key, old) }
        bytes += size
        while bytes > bytesMax, let victim = entries.first {
            entries.remove(at: entries.startIndex)
            bytes -= Self.size(victim.key, victim.value)
        }
    }

    /// Bytes held for an entry, with a rough allowance for the dictionary and array headers.
    static func size(_ key: [UInt8], _ cached: Cached) -> Int {
        let value = if case .value(let bytes) = cached { bytes.count } else { 0 }
        return key.count + value + 64
    }
}
