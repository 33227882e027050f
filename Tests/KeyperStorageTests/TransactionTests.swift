import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("Transactions in the store")
struct TransactionTests {
    private func k(_ text: String) -> [UInt8] { Array(text.utf8) }

    private func compare(_ key: String, _ target: KVComparison.Target, _ relation: KVComparison.Relation,
                         _ operand: KVComparison.Operand) -> KVComparison {
        KVComparison(key: k(key), target: target, relation: relation, operand: operand)
    }

    @Test("comparisons pick the branch; every write of a transaction shares one revision; a get sees the earlier operations")
    func branchesAndRevisions() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            try store.apply([KVWrite(.put(key: k("a"), value: k("1"))), KVWrite(.put(key: k("b"), value: k("2")))], appliedIndex: 1)
            // a: create 1, mod 1, version 1; b: create 2, mod 2, version 1; store revision 2.
            let transaction = KVTransaction(
                compare: [compare("a", .modRevision, .equal, .number(1)), compare("b", .value, .equal, .bytes(k("2"))),
                          compare("c", .exists, .equal, .bool(false)), compare("a", .version, .less, .number(2)),
                          compare("b", .createRevision, .greater, .number(1))],
                success: [.put(key: k("a"), value: k("10")), .get(key: k("a")), .put(key: k("c"), value: k("30")), .delete(key: k("b")),
                          .get(key: k("b")), .delete(key: k("nothing")), .list(prefix: [], after: nil, limit: 10, values: true)],
                failure: [.get(key: k("a"))])
            let results = try store.apply([.transaction(transaction)], appliedIndex: 2)
            let three = KeyRevisions(create: 1, mod: 3, version: 2)
            let created = KeyRevisions(create: 3, mod: 3, version: 1)
            #expect(results == [.transaction(KVTransactionResult(succeeded: true, revision: 3, results: [
                .put(three),
                .get(KVStore.VersionedValue(value: k("10"), revisions: three)),
                .put(created),
                .delete(count: 1),
                .get(nil),
                .delete(count: 0),
                .list(entries: [(k("a"), KVStore.VersionedValue(value: k("10"), revisions: three)),
                                (k("c"), KVStore.VersionedValue(value: k("30"), revisions: created))], nextAfter: nil),
            ]))])
            #expect(try store.revision() == 3)
            // The same transaction again: a's mod revision is 3 now, so the failure branch runs,
            // reads, changes nothing and costs no revision.
            let again = try store.apply([.transaction(transaction)], appliedIndex: 3)
            #expect(again == [.transaction(KVTransactionResult(succeeded: false, revision: 3, results: [
                .get(KVStore.VersionedValue(value: k("10"), revisions: three)),
            ]))])
            func check(_ store: KVStore) throws {
                #expect(try store.revision() == 3 && store.appliedIndex() == 3)
                #expect(try store.getVersioned(k("a")).value == KVStore.VersionedValue(value: k("10"), revisions: three))
                #expect(try store.getVersioned(k("c")).value?.revisions == created)
                #expect(try store.get(k("b")) == nil)
            }
            try check(store)
            store.close()
            let reopened = try KVStore(path: dir + "/state", durability: .normal)
            try check(reopened)
            reopened.close()
        }
    }

    @Test("comparisons of an absent key: revisions and version are 0, a value comparison never holds")
    func absentKeys() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            let cases: [(KVComparison, Bool)] = [
                (compare("x", .modRevision, .equal, .number(0)), true),
                (compare("x", .createRevision, .less, .number(1)), true),
                (compare("x", .version, .greater, .number(0)), false),
                (compare("x", .value, .equal, .bytes([])), false),
                (compare("x", .value, .notEqual, .bytes(k("v"))), false),
                (compare("x", .exists, .notEqual, .bool(true)), true),
            ]
            for (comparison, holds) in cases {
                let result = try store.read(KVTransaction(compare: [comparison]))
                #expect(result.succeeded == holds, "\(comparison)")
            }
            try store.apply([KVWrite(.put(key: k("x"), value: k("m")))])
            for (relation, operand, holds) in [(KVComparison.Relation.less, "n", true), (.greater, "l", true), (.greater, "mm", false),
                                               (.less, "mm", true), (.equal, "m", true), (.notEqual, "m", false)] {
                let result = try store.read(KVTransaction(compare: [compare("x", .value, relation, .bytes(k(operand)))]))
                #expect(result.succeeded == holds, "\(relation) \(operand)")
            }
            store.close()
        }
    }

    @Test("a listing inside a transaction merges the batch's changes with the index, and pages correctly")
    func listingOverChanges() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            try store.apply((0..<20).map { KVWrite(.put(key: k($0 < 10 ? "p/0\($0)" : "p/\($0)"), value: [UInt8($0)])) }, appliedIndex: 1)
            // Earlier writes of the same batch, and of the transaction itself, are seen.
            let transaction = KVTransaction(success: [
                .delete(key: k("p/00")), .delete(key: k("p/01")), .put(key: k("p/015"), value: k("new")),
                .list(prefix: k("p/"), after: nil, limit: 3, values: false),
                .list(prefix: k("p/"), after: k("p/17"), limit: 5, values: true),
                .deletePrefix(prefix: k("p/1")),
                .list(prefix: k("p/"), after: k("p/05"), limit: 100, values: false),
            ])
            let results = try store.apply([KVWrite(.put(key: k("p/19x"), value: [9])), KVWrite(.delete(key: k("p/02"))),
                                           .transaction(transaction)], appliedIndex: 2)
            guard case .transaction(let result) = results[2] else { Issue.record("not a transaction: \(results[2])"); return }
            guard case let .list(first, firstNext) = result.results[3], case let .list(second, secondNext) = result.results[4],
                  case let .deletePrefix(count) = result.results[5], case let .list(third, thirdNext) = result.results[6] else {
                Issue.record("unexpected results: \(result.results)")
                return
            }
            #expect(first.map(\.key) == ["p/015", "p/03", "p/04"].map(k) && firstNext == k("p/04"))
            #expect(first.allSatisfy { $0.value.value.isEmpty })
            #expect(second.map(\.key) == ["p/18", "p/19", "p/19x"].map(k) && secondNext == nil)
            #expect(second.map(\.value.value) == [[18], [19], [9]])
            #expect(count == 11)  // p/10 … p/19 and p/19x
            #expect(third.map(\.key) == ["p/06", "p/07", "p/08", "p/09"].map(k) && thirdNext == nil)
            // Five puts/deletes before it, then one revision for the whole transaction.
            #expect(try result.revision == 23 && store.revision() == 23)
            #expect(try store.list(prefix: k("p/"), after: nil, limit: 100).keys
                    == ["p/015", "p/03", "p/04", "p/05", "p/06", "p/07", "p/08", "p/09"].map(k))
            store.close()
        }
    }

    @Test("a read-only transaction reads one consistent state; conflicts in a branch are named")
    func readOnlyAndConflicts() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            try store.apply([KVWrite(.put(key: k("a"), value: k("1")))])
            let read = KVTransaction(compare: [compare("a", .exists, .equal, .bool(true))], success: [.get(key: k("a")), .get(key: k("b"))])
            #expect(read.isReadOnly)
            #expect(try store.read(read) == KVTransactionResult(succeeded: true, revision: 1, results: [
                .get(KVStore.VersionedValue(value: k("1"), revisions: KeyRevisions(create: 1, mod: 1, version: 1))), .get(nil),
            ]))
            #expect(!KVTransaction(failure: [.delete(key: k("a"))]).isReadOnly)
            #expect(KVTransaction(success: [.put(key: k("a"), value: []), .put(key: k("a"), value: [])]).conflict()?.contains("success[1]") == true)
            #expect(KVTransaction(failure: [.put(key: k("a/b"), value: []), .deletePrefix(prefix: k("a/"))]).conflict()?.contains("failure[1]") == true)
            #expect(KVTransaction(success: [.delete(key: k("a")), .put(key: k("a"), value: [])]).conflict() != nil)
            // Different branches never run together: no conflict.
            #expect(KVTransaction(success: [.put(key: k("a"), value: [])], failure: [.put(key: k("a"), value: []), .delete(key: k("b")),
                                                                                    .delete(key: k("b"))]).conflict() == nil)
            store.close()
        }
    }
}
