import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("Leases in the store")
struct LeaseTableTests {
    private func k(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test("a revoke deletes every attached key in one revision (watchers see the deletes), and only those; put without a lease detaches")
    func revokeDeletesAttachedKeys() async throws {
        try await withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            defer { store.close() }
            #expect(try store.apply([KVWrite(.grantLease(id: 7, ttlSeconds: 10))]) == [.applied(revision: 0, key: nil)])
            #expect(try store.apply([KVWrite(.grantLease(id: 7, ttlSeconds: 30))]) == [.leaseExists(7)])
            #expect(try store.apply([KVWrite(.put(key: k("nope"), value: k("x")), lease: 8)]) == [.leaseNotFound(8)])
            #expect(try store.get(k("nope")) == nil && store.revision() == 0)
            try store.apply([KVWrite(.put(key: k("a"), value: k("1")), lease: 7), KVWrite(.put(key: k("b"), value: k("2")), lease: 7),
                             KVWrite(.put(key: k("c"), value: k("3")), lease: 7), KVWrite(.put(key: k("free"), value: k("4")))])
            // c is put again without the lease: detached, as in etcd; b is deleted: detached too.
            try store.apply([KVWrite(.put(key: k("c"), value: k("33"))), KVWrite(.delete(key: k("b")))])
            #expect(try store.lease(7) == LeaseInfo(id: 7, ttlSeconds: 10, keys: [k("a")], keyCount: 1))
            #expect(try store.lease(ofKey: k("c")) == nil && store.lease(ofKey: k("a")) == 7)
            try store.apply([KVWrite(.put(key: k("b"), value: k("22")), lease: 7)])
            let watcher = try store.changes.watch(.prefix([]), from: nil)
            let revision = try store.revision()
            #expect(try store.apply([KVWrite(.revokeLease(id: 7))]) == [.revoked(count: 2, revision: revision + 1)])
            guard case .events(let events) = await watcher.next() else { Issue.record("no events"); return }
            #expect(events.map(\.kind) == [.delete, .delete] && events.map(\.key) == [k("a"), k("b")])
            #expect(events.allSatisfy { $0.revision == revision + 1 })
            #expect(try store.get(k("a")) == nil && store.get(k("b")) == nil && store.get(k("c")) == k("33") && store.get(k("free")) == k("4"))
            #expect(try store.lease(7) == nil && store.leases().isEmpty)
            #expect(try store.apply([KVWrite(.revokeLease(id: 7))]) == [.leaseNotFound(7)])
            // A lease without keys revokes without a revision.
            try store.apply([KVWrite(.grantLease(id: 9, ttlSeconds: 5))])
            #expect(try store.apply([KVWrite(.revokeLease(id: 9))]) == [.revoked(count: 0, revision: revision + 1)])
        }
    }

    @Test("within one batch each write sees the leases the earlier ones granted, revoked and attached")
    func batchSeesEarlierLeaseChanges() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            defer { store.close() }
            let results = try store.apply([
                KVWrite(.put(key: k("early"), value: k("0")), lease: 1),  // not granted yet
                KVWrite(.grantLease(id: 1, ttlSeconds: 10)),
                KVWrite(.put(key: k("a"), value: k("1")), lease: 1),
                KVWrite(.put(key: k("b"), value: k("2")), lease: 1),
                .transaction(KVTransaction(success: [.put(key: k("b"), value: k("3"))])),  // detaches b
                KVWrite(.revokeLease(id: 1)),  // deletes a only
                KVWrite(.put(key: k("late"), value: k("9")), lease: 1),  // revoked
                KVWrite(.grantLease(id: 1, ttlSeconds: 20)),  // the id is free again
                KVWrite(.put(key: k("c"), value: k("4")), lease: 1),
            ])
            #expect(results[0] == .leaseNotFound(1) && results[6] == .leaseNotFound(1))
            #expect(results[5] == .revoked(count: 1, revision: 4))
            func check(_ store: KVStore) throws {
                #expect(try store.get(k("a")) == nil && store.get(k("b")) == k("3") && store.get(k("early")) == nil)
                #expect(try store.lease(1) == LeaseInfo(id: 1, ttlSeconds: 20, keys: [k("c")], keyCount: 1))
                #expect(try store.lease(ofKey: k("b")) == nil)
            }
            try check(store)
            // A snapshot of it installs the same leases elsewhere.
            let copy = dir + "/snapshot"
            _ = try store.copy(to: copy)
            let other = try KVStore(path: dir + "/other", durability: .normal)
            defer { other.close() }
            try other.apply([KVWrite(.grantLease(id: 5, ttlSeconds: 5))])
            let before = try other.leaseGeneration()
            try other.replace(with: copy)
            try check(other)
            #expect(try other.lease(5) == nil && other.leaseGeneration() != before)
        }
    }

    @Test("leases and their keys survive a reopen, a segment roll and the collection of the segment that granted them")
    func leasesSurviveCollection() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/state"
            var store = try KVStore(path: path, durability: .normal, segmentBytes: 4_096)
            try store.apply([KVWrite(.grantLease(id: 3, ttlSeconds: 60))], appliedIndex: 1)
            try store.apply([KVWrite(.put(key: k("held"), value: [UInt8](repeating: 1, count: 100)), lease: 3)], appliedIndex: 2)
            // Churn other keys until the first segments are mostly dead and collected.
            for step in UInt64(3)...400 {
                try store.apply([.put(key: k("churn\(step % 5)"), value: [UInt8](repeating: 2, count: 200))], appliedIndex: step)
            }
            var collected = 0
            while try store.collectGarbage() { collected += 1 }
            #expect(collected > 0)
            #expect(try KVStore.segmentIDs(in: path).first! > 1)
            try store.makeDurable()
            store.close()
            store = try KVStore(path: path, durability: .normal, segmentBytes: 4_096)
            defer { store.close() }
            #expect(try store.lease(3) == LeaseInfo(id: 3, ttlSeconds: 60, keys: [k("held")], keyCount: 1))
            #expect(try store.apply([KVWrite(.revokeLease(id: 3))]) == [.revoked(count: 1, revision: 400)])
            #expect(try store.get(k("held")) == nil)
        }
    }
}
