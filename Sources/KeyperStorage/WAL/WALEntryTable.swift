import KeyperRaft

/// Where an entry's record lives, and its term (kept in memory so `term(at:)` never reads disk).
struct WALEntryLocation: Hashable {
    var segment: UInt64
    /// Offset of the record (its header) in the segment file.
    var offset: Int64
    /// Whole record size, header included.
    var recordBytes: Int
    var term: Term
}

/// The in-memory index: one location per live entry, for indexes `firstIndex...lastIndex`.
///
/// During replay the table may not reach back to the compaction point yet (when older segments
/// were deleted, an entry can overwrite an index whose predecessors lived in them); recovery
/// checks at the end that it does.
struct WALEntryTable {
    /// Index of `locations[0]`. Invariant: firstIndex >= 1.
    private(set) var firstIndex: LogIndex
    private var locations: [WALEntryLocation] = []

    init(firstIndex: LogIndex) {
        precondition(firstIndex.rawValue >= 1, "firstIndex=\(firstIndex)")
        self.firstIndex = firstIndex
    }

    var count: Int { locations.count }
    var isEmpty: Bool { locations.isEmpty }
    var lastIndex: LogIndex { LogIndex(firstIndex.rawValue + UInt64(locations.count) - 1) }
    var first: WALEntryLocation? { locations.first }

    func contains(_ index: LogIndex) -> Bool { index >= firstIndex && index <= lastIndex }

    subscript(index: LogIndex) -> WALEntryLocation {
        precondition(contains(index), "index=\(index) range=\(firstIndex)...\(lastIndex)")
        return locations[Int(index.rawValue - firstIndex.rawValue)]
    }

    /// Records that the entry at `index` now lives at `location`, discarding any entries at
    /// `index` and above (Raft §5.3: a conflicting suffix is replaced).
    /// Precondition: `index <= lastIndex + 1` (no gaps).
    mutating func place(_ location: WALEntryLocation, at index: LogIndex) {
        precondition(index <= lastIndex.next(), "gap: index=\(index) lastIndex=\(lastIndex)")
        if index < firstIndex {
            // Only in replay: the entries before `index` lived in deleted segments.
            locations.removeAll(keepingCapacity: true)
            firstIndex = index
        } else {
            locations.removeLast(Int(lastIndex.rawValue + 1 - index.rawValue))
        }
        locations.append(location)
    }

    /// Drops entries up to and including `index` (compaction). Entries after it stay.
    mutating func dropThrough(_ index: LogIndex) {
        guard index >= firstIndex else { return }
        if index >= lastIndex {
            locations.removeAll(keepingCapacity: true)
        } else {
            locations.removeFirst(Int(index.rawValue - firstIndex.rawValue + 1))
        }
        firstIndex = index.next()
    }

    /// Drops every entry; the log continues at `index + 1` (an installed snapshot).
    mutating func reset(after index: LogIndex) {
        locations.removeAll(keepingCapacity: true)
        firstIndex = index.next()
    }
}

/// A bounded cache of the most recent entries, by encoded bytes, so that replication to
/// followers that keep up never reads the disk. It always holds a contiguous range ending at
/// the log's last index (or nothing).
struct WALEntryCache {
    let bytesMax: Int
    private var entries: [Entry] = []
    /// Entries before `head` are evicted; they are removed from the array in bulk.
    private var head = 0
    private(set) var bytes = 0

    init(bytesMax: Int) { self.bytesMax = bytesMax }

    var firstIndex: LogIndex? { head < entries.count ? entries[head].index : nil }
    var lastIndex: LogIndex? { entries.last?.index }

    func entry(at index: LogIndex) -> Entry? {
        guard let firstIndex, let lastIndex, index >= firstIndex, index <= lastIndex else { return nil }
        return entries[head + Int(index.rawValue - firstIndex.rawValue)]
    }

    /// Adds the newest entry, replacing any cached entries at or after its index.
    mutating func append(_ entry: Entry) {
        if let firstIndex, let lastIndex, entry.index >= firstIndex, entry.index <= lastIndex.next() {
            truncate(from: entry.index)
        } else {
            removeAll()
        }
        guard bytesMax > 0 else { return }
        entries.append(entry)
        bytes += entry.walCacheCost
        evict()
    }

    /// Drops cached entries at `index` and above.
    mutating func truncate(from index: LogIndex) {
        while let last = entries.last, entries.count > head, last.index >= index {
            bytes -= last.walCacheCost
            entries.removeLast()
        }
        compactStorage()
    }

    /// Drops cached entries up to and including `index`.
    mutating func dropThrough(_ index: LogIndex) {
        while head < entries.count, entries[head].index <= index {
            bytes -= entries[head].walCacheCost
            head += 1
        }
        compactStorage()
    }

    mutating func removeAll() {
        entries.removeAll(keepingCapacity: true)
        head = 0
        bytes = 0
    }

    private mutating func evict() {
        while bytes > bytesMax, head < entries.count {
            bytes -= entries[head].walCacheCost
            head += 1
        }
        compactStorage()
    }

    private mutating func compactStorage() {
        if head == entries.count {
            removeAll()
        } else if head >= 1024 && head * 2 >= entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }
}

extension Entry {
    /// What an entry costs the cache: its data plus a fixed overhead for the struct.
    var walCacheCost: Int { data.count + 48 }
}
