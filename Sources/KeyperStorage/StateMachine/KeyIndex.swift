#if canImport(Glibc)
import Glibc
#endif

/// An ordered map from byte-string keys to a small fixed-size value, packed for memory: the
/// in-memory index of a log-structured state machine (docs/storage-at-scale.md), where the
/// value is where a key's latest record lies on disk.
///
/// Keys live in leaves of up to ``leafCapacity`` entries, each leaf one contiguous byte buffer of
/// its keys plus an array of their end offsets and an array of values: no heap object per key.
/// A key costs its bytes, 4 bytes of offset and the value's size, plus the arrays' spare
/// capacity (leaves split in half when full, so they are between half full and full). The
/// leaves are kept in order in one array, found by binary search on each leaf's first key.
///
/// A value type: copying an index is cheap until one copy changes (copy-on-write, per leaf).
public struct KeyIndex<Value: BitwiseCopyable>: Sendable where Value: Sendable {
    /// Entries per leaf before it splits in two.
    public static var leafCapacity: Int { 128 }

    private var leaves: [Leaf] = []
    public private(set) var count = 0

    public init() {}

    /// The value stored for `key`, if any.
    public func get(_ key: [UInt8]) -> Value? {
        guard let leaf = leafIndex(for: key) else { return nil }
        let (position, found) = leaves[leaf].search(key)
        return found ? leaves[leaf].values[position] : nil
    }

    /// Stores `value` for `key`; returns the value it replaces.
    @discardableResult
    public mutating func set(_ key: [UInt8], _ value: Value) -> Value? {
        guard !leaves.isEmpty else {
            var leaf = Leaf()
            leaf.insert(key, value, at: 0)
            leaves.append(leaf)
            count = 1
            return nil
        }
        // A key before every first key goes to the first leaf.
        let index = leafIndex(for: key) ?? 0
        let (position, found) = leaves[index].search(key)
        if found {
            let old = leaves[index].values[position]
            leaves[index].values[position] = value
            return old
        }
        leaves[index].insert(key, value, at: position)
        count += 1
        if leaves[index].count > Self.leafCapacity {
            let upper = leaves[index].splitOffUpperHalf()
            leaves.insert(upper, at: index + 1)
        }
        return nil
    }

    /// Removes `key`; returns the value it had.
    @discardableResult
    public mutating func remove(_ key: [UInt8]) -> Value? {
        guard let index = leafIndex(for: key) else { return nil }
        let (position, found) = leaves[index].search(key)
        guard found else { return nil }
        let old = leaves[index].values[position]
        leaves[index].remove(at: position)
        count -= 1
        if leaves[index].count == 0 {
            leaves.remove(at: index)
        } else if leaves[index].count < Self.leafCapacity / 4, index + 1 < leaves.count,
                  leaves[index].count + leaves[index + 1].count <= Self.leafCapacity {
            // Keep leaves from thinning out under many deletes: merge with the next one.
            let next = leaves.remove(at: index + 1)
            leaves[index].append(contentsOf: next)
        }
        return old
    }

    /// Keys in byte order that start with `prefix` and sort after `after`, at most `limit`, and
    /// whether more follow.
    public func keys(prefix: [UInt8], after: [UInt8]?, limit: Int) -> (keys: [[UInt8]], more: Bool) {
        let (entries, more) = entries(prefix: prefix, after: after, limit: limit)
        return (entries.map(\.key), more)
    }

    /// ``keys(prefix:after:limit:)`` with each key's value.
    public func entries(prefix: [UInt8], after: [UInt8]?, limit: Int) -> (entries: [(key: [UInt8], value: Value)], more: Bool) {
        precondition(limit > 0, "limit=\(limit)")
        var result: [(key: [UInt8], value: Value)] = []
        var more = false
        let start = after.map { Self.compare($0, prefix) > 0 ? $0 : prefix } ?? prefix
        forEach(from: start, skippingEqualTo: after) { key, value in
            guard key.starts(with: prefix) else { return false }
            if result.count == limit {
                more = true
                return false
            }
            result.append((key, value))
            return true
        }
        return (result, more)
    }

    /// Calls `body` with every entry from `start` on, in key order, while it returns true.
    /// An entry whose key equals `skip` is passed over.
    public func forEach(from start: [UInt8] = [], skippingEqualTo skip: [UInt8]? = nil,
                        _ body: ([UInt8], Value) -> Bool) {
        guard !leaves.isEmpty else { return }
        var index = leafIndex(for: start) ?? 0
        var position = leaves[index].search(start).position
        while index < leaves.count {
            let leaf = leaves[index]
            while position < leaf.count {
                let key = leaf.key(at: position)
                if key != skip, !body(key, leaf.values[position]) { return }
                position += 1
            }
            index += 1
            position = 0
        }
    }

    /// Approximate bytes held: key bytes, offsets and values, with the arrays' spare capacity.
    public var bytesHeld: Int {
        leaves.reduce(leaves.capacity * MemoryLayout<Leaf>.stride) { $0 + $1.bytesHeld }
    }

    /// Changes every stored value in place (keys and order stay): one pass over the leaves,
    /// with no lookups.
    public mutating func updateValues(_ update: (inout Value) -> Void) {
        for leaf in leaves.indices {
            for position in leaves[leaf].values.indices { update(&leaves[leaf].values[position]) }
        }
    }

    /// The leaf whose key range holds `key`: the last one whose first key is not above it;
    /// nil when the key sorts before every leaf (or there is none).
    private func leafIndex(for key: [UInt8]) -> Int? {
        var low = 0
        var high = leaves.count
        while low < high {
            let middle = (low + high) / 2
            if Self.compare(leaves[middle].firstKey, key) <= 0 { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? nil : low - 1
    }

    /// Byte order (memcmp, then the shorter first).
    static func compare(_ a: [UInt8], _ b: [UInt8]) -> Int {
        a.withUnsafeBytes { a in b.withUnsafeBytes { b in compare(a, b) } }
    }

    static func compare(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
        let common = min(a.count, b.count)
        if common > 0, let aBase = a.baseAddress, let bBase = b.baseAddress {
            let order = memcmp(aBase, bBase, common)
            if order != 0 { return Int(order) }
        }
        return a.count - b.count
    }

    /// Up to ``leafCapacity`` (+1 before a split) entries in key order.
    private struct Leaf: Sendable {
        /// Every key's bytes, back to back, in order.
        var bytes: [UInt8] = []
        /// Where each key ends in `bytes`.
        var ends: [UInt32] = []
        var values: [Value] = []
        /// Kept apart so the leaf search does not slice `bytes` for its first comparison.
        var firstKey: [UInt8] = []

        var count: Int { ends.count }

        var bytesHeld: Int {
            bytes.capacity + ends.capacity * 4 + values.capacity * MemoryLayout<Value>.stride + firstKey.capacity
                + 3 * 32  // three array headers
        }

        func start(of position: Int) -> Int { position == 0 ? 0 : Int(ends[position - 1]) }

        func key(at position: Int) -> [UInt8] {
            Array(bytes[start(of: position)..<Int(ends[position])])
        }

        /// The position of `key`, or where it would be inserted.
        func search(_ key: [UInt8]) -> (position: Int, found: Bool) {
            bytes.withUnsafeBytes { all in
                key.withUnsafeBytes { key in
                    var low = 0
                    var high = count
                    while low < high {
                        let middle = (low + high) / 2
                        let candidate = UnsafeRawBufferPointer(rebasing: all[start(of: middle)..<Int(ends[middle])])
                        let order = KeyIndex.compare(candidate, key)
                        if order == 0 { return (middle, true) }
                        if order < 0 { low = middle + 1 } else { high = middle }
                    }
                    return (low, false)
                }
            }
        }

        mutating func insert(_ key: [UInt8], _ value: Value, at position: Int) {
            let offset = start(of: position)
            bytes.insert(contentsOf: key, at: offset)
            let length = UInt32(key.count)
            for later in position..<ends.count { ends[later] += length }
            ends.insert(UInt32(offset) + length, at: position)
            values.insert(value, at: position)
            if position == 0 { firstKey = key }
        }

        mutating func remove(at position: Int) {
            let offset = start(of: position)
            let length = Int(ends[position]) - offset
            bytes.removeSubrange(offset..<(offset + length))
            ends.remove(at: position)
            for later in position..<ends.count { ends[later] -= UInt32(length) }
            values.remove(at: position)
            if position == 0 { firstKey = count > 0 ? key(at: 0) : [] }
        }

        /// Leaves the lower half here and returns the upper half as a leaf of its own.
        mutating func splitOffUpperHalf() -> Leaf {
            let half = count / 2
            let cut = start(of: half)
            var upper = Leaf()
            upper.bytes = Array(bytes[cut...])
            upper.ends = ends[half...].map { $0 - UInt32(cut) }
            upper.values = Array(values[half...])
            upper.firstKey = upper.key(at: 0)
            // New arrays rather than truncated ones: both halves drop the spare capacity the
            // full leaf had grown.
            bytes = Array(bytes[..<cut])
            ends = Array(ends[..<half])
            values = Array(values[..<half])
            return upper
        }

        mutating func append(contentsOf next: Leaf) {
            if count == 0 { firstKey = next.firstKey }
            let base = UInt32(bytes.count)
            bytes.append(contentsOf: next.bytes)
            ends.append(contentsOf: next.ends.map { $0 + base })
            values.append(contentsOf: next.values)
        }
    }
}
