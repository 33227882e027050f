import KeyperBase
import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("Idempotency keys in the store")
struct IdempotencyTests {
    private func k(_ text: String) -> [UInt8] { Array(text.utf8) }

    private func put(_ key: String, _ value: String, token: String? = nil, at time: UInt64 = 1_000, condition: KVCondition? = nil) -> KVWrite {
        KVWrite(.put(key: k(key), value: k(value)), condition: condition, idempotency: token.map { IdempotencyToken(key: k($0), time: time) })
    }

    @Test("a retry is answered with the first result and applies nothing; another change under the same key is refused; both survive a reopen")
    func retries() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            let first = try store.apply([put("a", "1", token: "t1"), put("a", "x", token: "t1", at: 1_500)], appliedIndex: 1)
            let applied = KVWriteResult.applied(revision: 1, key: KeyRevisions(create: 1, mod: 1, version: 1))
            // The retry in the same batch is already a retry.
            #expect(first == [applied, .replayed(applied)] || first == [applied, .idempotencyKeyReused])
            #expect(first[1] == .idempotencyKeyReused)  // its value differs: another change
            #expect(try store.apply([put("a", "1", token: "t1", at: 2_000)], appliedIndex: 2) == [.replayed(applied)])
            // A condition that failed is remembered as failed: the retry does not succeed now that it would hold.
            let failed = try store.apply([put("b", "1", token: "t2", condition: .modRevision(5))], appliedIndex: 3)
            #expect(failed == [.conditionFailed(modRevision: 0)])
            #expect(try store.revision() == 1 && store.get(k("a")) == k("1"))
            func check(_ store: KVStore) throws {
                #expect(try store.apply([put("a", "1", token: "t1", at: 3_000)]) == [.replayed(applied)])
                #expect(try store.apply([put("b", "1", token: "t2", at: 3_000, condition: .modRevision(5))]) == [.replayed(.conditionFailed(modRevision: 0))])
                #expect(try store.apply([put("a", "2", token: "t1", at: 3_000)]) == [.idempotencyKeyReused])
                #expect(try store.revision() == 1)
            }
            try check(store)
            store.close()
            let reopened = try KVStore(path: dir + "/state", durability: .normal)
            try check(reopened)
            reopened.close()
        }
    }

    @Test("a transaction's result, reads included, is remembered; one too large to keep answers already applied")
    func transactions() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            try store.apply([put("big", String(repeating: "v", count: IdempotencyTable.resultBytesMax + 1))])
            var small = KVWrite.transaction(KVTransaction(success: [.put(key: k("x"), value: k("1")), .get(key: k("x"))]))
            small.idempotency = IdempotencyToken(key: k("small"), time: 10)
            let result = try store.apply([small])[0]
            guard case .transaction(let done) = result else { Issue.record("\(result)"); return }
            #expect(done.revision == 2 && done.results.count == 2)
            #expect(try store.apply([small]) == [.replayed(result)])
            // A prefix delete of many keys: its small result names a count larger than its bytes.
            try store.apply((0..<20).map { KVWrite(.put(key: k("p/\($0)"), value: [1])) })
            var wipe = KVWrite.deletePrefix(k("p/"))
            wipe.idempotency = IdempotencyToken(key: k("wipe"), time: 10)
            let wiped = try store.apply([wipe])[0]
            #expect(wiped == .deletedPrefix(count: 20, revision: 23))
            #expect(try store.apply([wipe]) == [.replayed(wiped)])
            var large = KVWrite.transaction(KVTransaction(success: [.put(key: k("y"), value: k("1")), .get(key: k("big"))]))
            large.idempotency = IdempotencyToken(key: k("large"), time: 10)
            guard case .transaction(let largeDone) = try store.apply([large])[0] else { Issue.record("not a transaction"); return }
            #expect(largeDone.revision == 24)
            #expect(try store.apply([large]) == [.replayed(.alreadyApplied(revision: 24))])
            #expect(try store.revision() == 24)
            store.close()
        }
    }

    @Test("a record stops counting after the retention, or once enough records or bytes came after it")
    func bounds() {
        let record = IdempotencyRecord(key: [1], fingerprint: 7, time: 1_000, sequence: 10, bytesBefore: 500, result: [5, 0])
        typealias Counters = IdempotencyTable.Counters
        let retention = IdempotencyTable.retentionMilliseconds
        var counters = Counters(latest: 1_000, inserted: 11, bytesInserted: 500 + record.bytes)
        #expect(counters.counts(record, at: 0))
        #expect(counters.counts(record, at: 1_000 + retention))
        #expect(!counters.counts(record, at: 1_001 + retention))
        counters.latest = 1_001 + retention
        #expect(!counters.counts(record, at: 0))
        counters = Counters(latest: 1_000, inserted: 10 + IdempotencyTable.recordsMax, bytesInserted: 500 + record.bytes)
        #expect(counters.counts(record, at: 0))
        counters.inserted += 1
        #expect(!counters.counts(record, at: 0))
        counters = Counters(latest: 1_000, inserted: 11, bytesInserted: 500 + IdempotencyTable.bytesMax)
        #expect(counters.counts(record, at: 0))
        counters.bytesInserted += 1
        #expect(!counters.counts(record, at: 0))
        // Pruning drops what no longer counts, oldest first, and keeps what does.
        var table = IdempotencyTable()
        var live = Counters()
        for (index, time) in [UInt64(0), 1, 2 + retention].enumerated() {
            table.insert(live.record(key: [UInt8(index)], fingerprint: 0, time: time, result: .conditionFailed(modRevision: 0)))
        }
        table.prune()
        #expect(table.count == 1 && table.lookUp([2], at: 0, counters: table.counters) != nil)
    }

    @Test("retries expire with the retention, measured on the log's own clock")
    func expiry() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            let retention = IdempotencyTable.retentionMilliseconds
            #expect(try store.apply([put("a", "1", token: "t", at: 1_000)]) == [.applied(revision: 1, key: KeyRevisions(create: 1, mod: 1, version: 1))])
            // A retry made after the retention (by its own clock) is a new write.
            #expect(try store.apply([put("a", "1", token: "t", at: 1_001 + retention)])
                    == [.applied(revision: 2, key: KeyRevisions(create: 1, mod: 2, version: 2))])
            // So is one made in time, once a later record moved the log past the retention.
            try store.apply([put("b", "1", token: "u", at: 5_000)])
            try store.apply([put("c", "1", token: "v", at: 5_001 + retention)])
            #expect(try store.apply([put("b", "1", token: "u", at: 5_000)]) == [.applied(revision: 5, key: KeyRevisions(create: 3, mod: 5, version: 2))])
            store.close()
        }
    }

    @Test("applied in one batch or one at a time, writes with keys give the same results and leave the same table (seeded)")
    func batchIndependence() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var random = SplitMix64(seed: seed)
        var writes: [KVWrite] = []
        var time: UInt64 = 0
        for _ in 0..<300 {
            time += random.next() % 200_000  // minutes pass: some records expire
            let key = "k\(random.next() % 8)"
            let token = random.next() % 4 == 0 ? nil : "t\(random.next() % 30)"
            let condition: KVCondition? = random.next() % 3 == 0 ? .modRevision(random.next() % 40) : nil
            writes.append(put(key, "v\(random.next() % 3)", token: token, at: time, condition: condition))
        }
        try withTemporaryDirectory { dir in
            let together = try KVStore(path: dir + "/together", durability: .normal)
            let apart = try KVStore(path: dir + "/apart", durability: .normal, segmentBytes: 4_096)
            var batched: [KVWriteResult] = []
            var start = 0
            while start < writes.count {
                let end = min(writes.count, start + 1 + Int(random.next() % 20))
                batched += try together.apply(Array(writes[start..<end]))
                start = end
            }
            let single = try writes.flatMap { try apart.apply([$0]) }
            #expect(batched == single, "seed \(seed)")
            #expect(try together.revision() == apart.revision(), "seed \(seed)")
            // Reopened (the small segments of the second went through many checkpoints), both still agree.
            together.close()
            apart.close()
            let reopenedTogether = try KVStore(path: dir + "/together", durability: .normal)
            let reopenedApart = try KVStore(path: dir + "/apart", durability: .normal)
            let probe = writes.suffix(40).map { write -> KVWrite in
                var retry = write
                retry.idempotency?.time = time
                return retry
            }
            #expect(try reopenedTogether.apply(probe) == reopenedApart.apply(probe), "seed \(seed)")
            reopenedTogether.close()
            reopenedApart.close()
        }
    }

    @Test("garbage collection and a snapshot keep the table: the newest checkpoint carries it")
    func collectionAndSnapshots() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal, segmentBytes: 2_048)
            for round in 0..<40 {
                try store.apply([put("hot", String(repeating: "x", count: 200), token: "r\(round)", at: UInt64(round))], appliedIndex: UInt64(round + 1))
            }
            while try store.collectGarbage() {}
            _ = try store.copy(to: dir + "/snapshot")
            let copy = try KVStore(path: dir + "/copy", durability: .normal)
            try copy.replace(with: dir + "/snapshot")
            for target in [store, copy] {
                let results = try target.apply((0..<40).map { put("hot", String(repeating: "x", count: 200), token: "r\($0)", at: 100) })
                #expect(results.allSatisfy { if case .replayed = $0 { true } else { false } })
                #expect(try target.revision() == 40)
            }
            store.close()
            copy.close()
        }
    }

    @Test("every kind of write result survives being remembered: encode then decode gives it back (seeded)")
    func resultRoundTrip() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var random = SplitMix64(seed: seed)
        func revisions() -> KeyRevisions {
            KeyRevisions(create: random.next() >> UInt64(random.next(below: 64)), mod: random.next() >> UInt64(random.next(below: 64)),
                         version: random.next() >> UInt64(random.next(below: 64)))
        }
        func bytes() -> [UInt8] { (0..<random.next(below: 40)).map { _ in UInt8(truncatingIfNeeded: random.next()) } }
        func count() -> Int { [0, 1, 7, 1_000_000, Int(Int32.max)][random.next(below: 5)] }
        for _ in 0..<500 {
            let result: KVWriteResult
            switch random.next(below: 8) {
            case 0: result = .applied(revision: random.next(), key: random.next(below: 2) == 0 ? nil : revisions())
            case 1: result = .conditionFailed(modRevision: random.next())
            case 2: result = .deletedPrefix(count: count(), revision: random.next())
            case 3: result = .alreadyApplied(revision: random.next())
            case 4: result = .leaseNotFound(random.next())
            case 5: result = .leaseExists(random.next())
            case 6: result = .revoked(count: count(), revision: random.next())
            default:
                var operations: [KVTransactionOperationResult] = []
                for _ in 0..<random.next(below: 6) {
                    switch random.next(below: 5) {
                    case 0: operations.append(.put(revisions()))
                    case 1: operations.append(.delete(count: random.next(below: 2)))
                    case 2: operations.append(.deletePrefix(count: count()))
                    case 3: operations.append(.get(random.next(below: 2) == 0 ? nil : KVStore.VersionedValue(value: bytes(), revisions: revisions())))
                    default:
                        let entries = (0..<random.next(below: 4)).map { _ in (key: bytes(), value: KVStore.VersionedValue(value: bytes(), revisions: revisions())) }
                        operations.append(.list(entries: entries, nextAfter: random.next(below: 2) == 0 ? nil : bytes()))
                    }
                }
                result = .transaction(KVTransactionResult(succeeded: random.next(below: 2) == 0, revision: random.next(), results: operations))
            }
            #expect(try KVWriteResult(decoding: result.encoded()) == result, "seed \(seed): \(result)")
        }
    }
}
