import Glibc
import KeyperBase
import KeyperRaft
import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("Key-value state machine (log-structured)")
struct KVStoreTests {
    @Test("put, get and delete round-trip")
    func putGetDelete() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            #expect(try store.get(Array("foo".utf8)) == nil)
            try store.apply([.put(key: Array("foo".utf8), value: Array("hello".utf8))])
            #expect(try store.get(Array("foo".utf8)) == Array("hello".utf8))
            try store.apply([.put(key: Array("foo".utf8), value: Array("world".utf8))])
            #expect(try store.get(Array("foo".utf8)) == Array("world".utf8))
            try store.apply([.delete(key: Array("foo".utf8))])
            #expect(try store.get(Array("foo".utf8)) == nil)
            // Deleting an absent key is not an error.
            try store.apply([.delete(key: Array("foo".utf8))])
            #expect(try store.count() == 0)
        }
    }

    @Test("binary, empty and large values are stored byte-exact")
    func binaryValues() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            var generator = SplitMix64(seed: 7)
            let large = (0..<(1 << 20)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let allBytes = (0...255).map { UInt8($0) }
            try store.apply([
                .put(key: [1], value: large),
                .put(key: [2], value: []),
                .put(key: [3], value: allBytes),
            ])
            #expect(try store.get([1]) == large)
            #expect(try store.get([2]) == [])  // present and empty, not absent
            #expect(try store.get([3]) == allBytes)
        }
    }

    @Test("data survives closing and reopening")
    func persistence() throws {
        try withTemporaryDirectory { dir in
            do {
                let store = try KVStore(path: dir + "/state", durability: .full)
                try store.apply([.put(key: Array("k".utf8), value: Array("v".utf8))], appliedIndex: 42)
                store.close()
            }
            let reopened = try KVStore(path: dir + "/state", durability: .full)
            #expect(try reopened.get(Array("k".utf8)) == Array("v".utf8))
            #expect(try reopened.appliedIndex() == 42)
        }
    }

    @Test("a closed store refuses writes, and what it had survives")
    func batchAtomicity() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            try store.apply([.put(key: [1], value: [1])], appliedIndex: 1)
            store.close()
            #expect(throws: KVStoreClosedError.self) { try store.apply([.put(key: [2], value: [2])], appliedIndex: 2) }
            let reopened = try KVStore(path: dir + "/state", durability: .full)
            #expect(try reopened.get([2]) == nil)
            #expect(try reopened.appliedIndex() == 1)
        }
    }

    @Test("reads through the cache agree with a model across puts, deletes, evictions, replace and reset")
    func cacheModel() throws {
        try withTemporaryDirectory { dir in
            // A cache of 2 KiB holds a handful of entries: evictions happen all the time.
            let store = try KVStore(path: dir + "/state", durability: .normal, cacheBytes: 2_048)
            var model: [[UInt8]: [UInt8]] = [:]
            var random = SplitMix64(seed: 41)
            var snapshot: (path: String, model: [[UInt8]: [UInt8]])?
            for step in 0..<3_000 {
                let key: [UInt8] = [UInt8(random.next(below: 40))]
                switch random.next(below: 100) {
                case 0..<35:
                    let value = (0..<random.next(below: 300)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                    try store.apply([.put(key: key, value: value)], appliedIndex: UInt64(step + 1))
                    model[key] = value
                case 35..<45:
                    try store.apply([.delete(key: key), .put(key: key + [1], value: [UInt8(step % 256)])], appliedIndex: UInt64(step + 1))
                    model[key] = nil
                    model[key + [1]] = [UInt8(step % 256)]
                case 45..<46 where snapshot == nil:
                    let path = dir + "/snap-\(step).db"
                    _ = try store.copy(to: path)
                    snapshot = (path, model)
                case 46..<47:
                    if let taken = snapshot {
                        try store.replace(with: taken.path)
                        model = taken.model
                        snapshot = nil
                    }
                case 47..<48:
                    try store.reset()
                    model = [:]
                default:
                    #expect(try store.get(key) == model[key], "step \(step), key \(key)")
                }
            }
            for (key, value) in model { #expect(try store.get(key) == value) }
        }
    }

    @Test("a cache fill read before an apply is dropped, so a stale value never comes back; the cache's revision moves with its entries")
    func cacheFillAfterApply() {
        let r1 = KeyRevisions(create: 1, mod: 1, version: 1)
        let r2 = KeyRevisions(create: 1, mod: 2, version: 2)
        var cache = ReadCache(bytesMax: 1 << 20, revision: 1)
        let readAt = cache.version
        // A reader missed, read the old value from the files; meanwhile a batch changed the key.
        cache.applied([(key: [1], state: .value([2], r2))], revision: 2)
        cache.fill([1], .value([1], r1), readAt: readAt)
        #expect(cache.lookup([1]) == .value([2], r2) && cache.revision == 2)
        // Filling at the current version works; an absent key is remembered as absent.
        cache.fill([9], .absent, readAt: cache.version)
        #expect(cache.lookup([9]) == .absent)
        // While a batch is being committed no fill is trusted, even one read at that version:
        // the files may already hold the new value that another reader has seen.
        cache.beginApply()
        cache.fill([5], .value([5], r1), readAt: cache.version)
        #expect(cache.lookup([5]) == nil)
        cache.applyFailed()
        cache.fill([5], .value([5], r1), readAt: cache.version)
        #expect(cache.lookup([5]) == .value([5], r1) && cache.revision == 2)
        cache.invalidate(revision: 7)
        #expect(cache.lookup([1]) == nil && cache.bytes == 0 && cache.revision == 7)
        // Over the bound, the cache starts over rather than grow.
        var small = ReadCache(bytesMax: 1_000, revision: 0)
        for key in 0..<50 {
            small.applied([(key: [UInt8(key)], state: .value([UInt8](repeating: 1, count: 20), r1))], revision: UInt64(key + 1))
        }
        #expect(small.bytes <= 1_000 && small.count > 0 && small.revision == 50)
        #expect(small.lookup([49]) == .value([UInt8](repeating: 1, count: 20), r1))
    }

    @Test("a closed store does not answer from its cache")
    func closedStoreHasNoCache() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            try store.apply([.put(key: [1], value: [1])])
            #expect(try store.get([1]) == [1])
            store.close()
            #expect(throws: KVStoreClosedError.self) { try store.get([1]) }
        }
    }

    @Test("listing is ordered, prefix-bounded and paginated")
    func listing() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            let keys = ["a", "app/1", "app/2", "app/3", "apple", "b", "app0"]
            try store.apply(keys.map { .put(key: Array($0.utf8), value: [0]) })
            func names(_ page: KeyPage) -> [String] { page.keys.map { String(decoding: $0, as: UTF8.self) } }

            let first = try store.list(prefix: Array("app/".utf8), after: nil, limit: 2)
            #expect(names(first) == ["app/1", "app/2"])
            #expect(first.nextAfter == Array("app/2".utf8))
            let second = try store.list(prefix: Array("app/".utf8), after: first.nextAfter, limit: 2)
            #expect(names(second) == ["app/3"])
            #expect(second.nextAfter == nil)

            let all = try store.list(prefix: [], after: nil, limit: 100)
            #expect(names(all) == keys.sorted())
            #expect(try store.count() == keys.count)
        }
    }

    @Test("a prefix of 0xFF bytes has no upper bound and still lists correctly")
    func prefixOfFF() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            try store.apply([.put(key: [0xFF, 1], value: []), .put(key: [0xFE], value: [])])
            #expect(try store.list(prefix: [0xFF], after: nil, limit: 10).keys == [[0xFF, 1]])
        }
    }
}
