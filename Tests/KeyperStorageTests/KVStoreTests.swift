import KeyperRaft
import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("Key-value state machine (SQLite)")
struct KVStoreTests {
    @Test("put, get and delete round-trip")
    func putGetDelete() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state.db", durability: .full)
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
            let store = try KVStore(path: dir + "/state.db", durability: .full)
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
                let store = try KVStore(path: dir + "/state.db", durability: .full)
                try store.apply([.put(key: Array("k".utf8), value: Array("v".utf8))], appliedIndex: 42)
                store.close()
            }
            let reopened = try KVStore(path: dir + "/state.db", durability: .full)
            #expect(try reopened.get(Array("k".utf8)) == Array("v".utf8))
            #expect(try reopened.appliedIndex() == 42)
        }
    }

    @Test("a batch is one transaction: a failure leaves nothing applied")
    func batchAtomicity() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state.db", durability: .full)
            try store.apply([.put(key: [1], value: [1])], appliedIndex: 1)
            store.close()
            #expect(throws: SQLiteError.self) { try store.apply([.put(key: [2], value: [2])], appliedIndex: 2) }
            let reopened = try KVStore(path: dir + "/state.db", durability: .full)
            #expect(try reopened.get([2]) == nil)
            #expect(try reopened.appliedIndex() == 1)
        }
    }

    @Test("listing is ordered, prefix-bounded and paginated")
    func listing() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state.db", durability: .full)
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
    func prefixEnd() throws {
        #expect(KVStore.prefixEnd([0x61, 0xFF]) == [0x62])
        #expect(KVStore.prefixEnd([0xFF, 0xFF]) == nil)
        #expect(KVStore.prefixEnd([]) == nil)
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state.db", durability: .full)
            try store.apply([.put(key: [0xFF, 1], value: []), .put(key: [0xFE], value: [])])
            #expect(try store.list(prefix: [0xFF], after: nil, limit: 10).keys == [[0xFF, 1]])
        }
    }

    @Test("a database from a newer schema is refused")
    func newerSchemaRefused() throws {
        try withTemporaryDirectory { dir in
            let connection = try SQLiteConnection(path: dir + "/state.db")
            try connection.execute("PRAGMA user_version = 99")
            connection.close()
            #expect {
                _ = try KVStore(path: dir + "/state.db", durability: .full)
            } throws: { error in
                "\(error)".contains("newer Keyper")
            }
        }
    }
}
