import Glibc
import KeyperBase
import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("State machine segments: rolling, garbage collection, recovery")
struct StateLogTests {
    /// Random puts (some with leases), deletes, member changes and lease grants and revokes
    /// over a small key space, in small segments, with garbage collection between them; the
    /// store must agree with a model throughout and after a reopen (deletes carried through
    /// collected segments never let a key come back; a moved put never changes a key's lease).
    @Test("garbage collection keeps every live key, every delete and every lease, across reopen", arguments: [3, 17, 90])
    func collectionAgreesWithModel(seed: UInt64) throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/state"
            var store = try KVStore(path: path, durability: .normal, cacheBytes: 1_024, segmentBytes: 4_096)
            var model: [[UInt8]: [UInt8]] = [:]
            var revisions: [[UInt8]: KeyRevisions] = [:]
            var revision: UInt64 = 0
            var members: [String: MemberRecord] = [:]
            var leases: [UInt64: UInt64] = [:]
            var owners: [[UInt8]: UInt64] = [:]
            var random = SplitMix64(seed: seed)
            var collected = 0
            for step in 1...4_000 {
                let key: [UInt8] = Array("k\(random.next(below: 60))".utf8)
                let lease = UInt64(random.next(below: 8) + 1)
                switch random.next(below: 100) {
                case 0..<50:
                    let value = (0..<random.next(below: 120)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                    let leased = random.next(below: 3) == 0
                    let result = try store.apply([KVWrite(.put(key: key, value: value), lease: leased ? lease : nil)], appliedIndex: UInt64(step))
                    if leased && leases[lease] == nil {
                        #expect(result == [.leaseNotFound(lease)], "seed \(seed) step \(step)")
                        continue
                    }
                    owners[key] = leased ? lease : nil
                    model[key] = value
                    revision += 1
                    revisions[key] = KeyRevisions(create: revisions[key]?.create ?? revision, mod: revision,
                                                  version: (revisions[key]?.version ?? 0) + 1)
                case 50..<75:
                    try store.apply([.delete(key: key)], appliedIndex: UInt64(step))
                    if model.removeValue(forKey: key) != nil { revision += 1 }
                    revisions[key] = nil
                    owners[key] = nil
                case 75..<80:
                    let result = try store.apply([KVWrite(.grantLease(id: lease, ttlSeconds: lease * 10))], appliedIndex: UInt64(step))
                    #expect(result == [leases[lease] == nil ? .applied(revision: revision, key: nil) : .leaseExists(lease)], "seed \(seed) step \(step)")
                    if leases[lease] == nil { leases[lease] = lease * 10 }
                case 80..<82:
                    let result = try store.apply([KVWrite(.revokeLease(id: lease))], appliedIndex: UInt64(step))
                    guard leases.removeValue(forKey: lease) != nil else {
                        #expect(result == [.leaseNotFound(lease)], "seed \(seed) step \(step)")
                        continue
                    }
                    let attached = owners.filter { $0.value == lease }.keys
                    for key in attached {
                        model[key] = nil
                        revisions[key] = nil
                        owners[key] = nil
                    }
                    if !attached.isEmpty { revision += 1 }
                    #expect(result == [.revoked(count: attached.count, revision: revision)], "seed \(seed) step \(step)")
                case 82..<85:
                    let member = MemberRecord(id: "n\(random.next(below: 4))", raftAddress: "r\(step)", httpAddress: "h\(step)")
                    try store.apply([.setMember(id: member.id, raftAddress: member.raftAddress, httpAddress: member.httpAddress,
                                                promote: member.promote)], appliedIndex: UInt64(step))
                    members[member.id] = member
                case 85..<87:
                    let id = "n\(random.next(below: 4))"
                    try store.apply([.removeMember(id: id)], appliedIndex: UInt64(step))
                    members[id] = nil
                case 87..<94:
                    while try store.collectGarbage() { collected += 1 }
                case 94..<95:
                    try store.makeDurable()
                    store.close()
                    store = try KVStore(path: path, durability: .normal, cacheBytes: 1_024, segmentBytes: 4_096)
                default:
                    #expect(try store.get(key) == model[key], "seed \(seed) step \(step)")
                    let versioned = try store.getVersioned(key)
                    #expect(versioned.value?.revisions == revisions[key] && versioned.revision == revision, "seed \(seed) step \(step)")
                    #expect(try store.lease(ofKey: key) == owners[key], "seed \(seed) step \(step)")
                }
            }
            while try store.collectGarbage() { collected += 1 }
            #expect(collected > 10, "seed \(seed): only \(collected) segments collected")
            try store.makeDurable()
            store.close()
            let reopened = try KVStore(path: path, durability: .normal, segmentBytes: 4_096)
            defer { reopened.close() }
            #expect(try reopened.count() == model.count, "seed \(seed)")
            for k in 0..<60 {
                let key = Array("k\(k)".utf8)
                #expect(try reopened.get(key) == model[key], "seed \(seed) key k\(k)")
                #expect(try reopened.getVersioned(key).value?.revisions == revisions[key], "seed \(seed) key k\(k)")
            }
            #expect(try reopened.revision() == revision)
            #expect(try reopened.members() == members.values.sorted { $0.id < $1.id })
            for id in UInt64(1)...8 {
                let keys = owners.filter { $0.value == id }.keys.sorted { $0.lexicographicallyPrecedes($1) }
                #expect(try reopened.lease(id) == leases[id].map { LeaseInfo(id: id, ttlSeconds: $0, keys: keys, keyCount: keys.count) },
                        "seed \(seed) lease \(id)")
            }
            #expect(leases.count > 0 && owners.count > 0, "seed \(seed): the run ended with no leased key")
            #expect(try reopened.appliedIndex() == 4_000)
            // Space stays bounded by about twice what is live.
            let usage = try reopened.diskUsage()
            #expect(usage.bytes < max(4 * usage.liveBytes, 64 * 4_096), "seed \(seed): \(usage)")
        }
    }

    @Test("a torn write at the end of the newest segment is cut, and the store opens without it")
    func tornTailCut() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/state"
            do {
                let store = try KVStore(path: path, durability: .full)
                try store.apply([.put(key: [1], value: [1])], appliedIndex: 1)
                try store.apply([.put(key: [2], value: [UInt8](repeating: 2, count: 500))], appliedIndex: 2)
                store.close()
            }
            let segment = path + "/" + StateLog.fileName(1)
            var bytes = try FileIO.readFile(segment)
            bytes.removeLast(100)  // the last record lost its end
            unlink(segment)
            try FileIO.writeFileAtomically(segment, bytes)
            let store = try KVStore(path: path, durability: .full)
            #expect(store.recoveryNote?.contains("torn write") == true)
            #expect(try store.get([1]) == [1])
            #expect(try store.get([2]) == nil)
            #expect(try store.appliedIndex() == 1)
            // The cut tail is gone for good: the next write follows the last whole record.
            try store.apply([.put(key: [3], value: [3])], appliedIndex: 2)
            store.close()
            let again = try KVStore(path: path, durability: .full)
            #expect(try again.get([3]) == [3] && again.recoveryNote == nil)
            again.close()
        }
    }

    @Test("damage followed by a whole record, or in a sealed segment, stops the open with file and offset")
    func corruptionRefused() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/state"
            do {
                let store = try KVStore(path: path, durability: .full, segmentBytes: 2_048)
                for i in 0..<40 {
                    try store.apply([.put(key: [UInt8(i)], value: [UInt8](repeating: UInt8(i), count: 200))], appliedIndex: UInt64(i + 1))
                }
                store.close()
            }
            let ids = try KVStore.segmentIDs(in: path)
            #expect(ids.count > 2)
            // A byte flipped inside a value of the first (sealed) segment.
            let sealed = path + "/" + StateLog.fileName(ids[0])
            var bytes = try FileIO.readFile(sealed)
            bytes[bytes.count - 50] ^= 0xFF
            try FileIO.writeBytes([bytes[bytes.count - 50]], to: sealed, at: bytes.count - 50)
            #expect {
                _ = try KVStore(path: path, durability: .full, segmentBytes: 2_048)
            } throws: { error in
                let text = "\(error)"
                return text.contains(sealed) && text.contains("offset") && text.contains("checksum")
            }
            // Repaired, then damage in the newest segment's first record, with whole ones after.
            bytes[bytes.count - 50] ^= 0xFF
            try FileIO.writeBytes([bytes[bytes.count - 50]], to: sealed, at: bytes.count - 50)
            let newest = path + "/" + StateLog.fileName(ids[ids.count - 1])
            let newestBytes = try FileIO.readFile(newest)
            let header = StateLog.segmentHeader(base: false, applied: 0, durable: 0, revision: 0, members: []).count
            if newestBytes.count > header + 40 {
                try FileIO.writeBytes([newestBytes[header + 30] ^ 0xFF], to: newest, at: header + 30)
                let after = newestBytes.count
                #expect {
                    _ = try KVStore(path: path, durability: .full, segmentBytes: 2_048)
                } throws: { error in "\(error)".contains(newest) }
                #expect(try FileIO.readFile(newest).count == after, "nothing was cut")
            }
        }
    }

    @Test("a snapshot installed, then a crash before the old segments went: the restart takes the snapshot")
    func interruptedInstall() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/state"
            let store = try KVStore(path: path, durability: .normal, segmentBytes: 1_024)
            for i in 0..<30 { try store.apply([.put(key: [UInt8(i)], value: [UInt8(i)])], appliedIndex: UInt64(i + 1)) }
            let snapshot = dir + "/snapshot"
            #expect(try store.copy(to: snapshot) == 30)
            // Later changes the snapshot does not hold, including deletes of keys it does.
            for i in 0..<10 { try store.apply([.delete(key: [UInt8(i)]), .put(key: [UInt8(100 + i)], value: [1])], appliedIndex: UInt64(31 + i)) }
            try store.makeDurable()
            let ids = try KVStore.segmentIDs(in: path)
            store.close()
            // What an install does first: the snapshot named as the newest segment.
            try FileIO.copyFile(from: snapshot, to: path + "/" + StateLog.fileName(ids.last! + 1))
            let reopened = try KVStore(path: path, durability: .normal, segmentBytes: 1_024)
            #expect(try reopened.appliedIndex() == 30)
            #expect(try reopened.count() == 30)
            #expect(try reopened.get([5]) == [5] && reopened.get([105]) == nil)
            #expect(try KVStore.segmentIDs(in: path).allSatisfy { $0 > ids.last! }, "older segments are removed")
            reopened.close()
        }
    }

    @Test("a reset survives a restart, and a snapshot copy replaces another store's state whole")
    func resetAndReplace() throws {
        try withTemporaryDirectory { dir in
            let a = try KVStore(path: dir + "/a", durability: .normal)
            try a.apply([.put(key: [1], value: [1]), .setMember(id: "n1", raftAddress: "r", httpAddress: "h", promote: false)],
                        appliedIndex: 7)
            _ = try a.copy(to: dir + "/copy")
            try a.reset()
            try a.apply([.put(key: [2], value: [2])], appliedIndex: 1)
            a.close()
            let reopened = try KVStore(path: dir + "/a", durability: .normal)
            #expect(try reopened.get([1]) == nil && reopened.get([2]) == [2] && reopened.members().isEmpty)
            try reopened.replace(with: dir + "/copy")
            #expect(try reopened.get([1]) == [1] && reopened.get([2]) == nil)
            #expect(try reopened.appliedIndex() == 7 && reopened.durableIndex() == 7)
            #expect(try reopened.members() == [MemberRecord(id: "n1", raftAddress: "r", httpAddress: "h", promote: false)])
            // A file that is not a snapshot is refused, and the state stays.
            try FileIO.writeFileAtomically(dir + "/junk", Array("not a snapshot at all".utf8))
            #expect(throws: (any Error).self) { try reopened.replace(with: dir + "/junk") }
            #expect(try reopened.get([1]) == [1])
            reopened.close()
        }
    }

    @Test("a replacement read off to the side while the store goes on writing (and starts segments) installs whole, renumbered, and survives a reopen")
    func preparedReplacement() throws {
        try withTemporaryDirectory { dir in
            let source = try KVStore(path: dir + "/source", durability: .normal)
            let keys = (0..<500).map { Array("key-\($0)".utf8) }
            try source.apply(keys.map { .put(key: $0, value: $0 + [9]) }, appliedIndex: 40)
            try source.apply([.delete(key: keys[0])], appliedIndex: 41)
            _ = try source.copy(to: dir + "/snapshot")
            let expected = try keys.map { try source.getVersioned($0).value }
            source.close()

            let store = try KVStore(path: dir + "/store", durability: .normal, segmentBytes: 4_096)
            try store.apply([.put(key: Array("old".utf8), value: [1])], appliedIndex: 5)
            let prepared = try store.prepareReplacement(moving: dir + "/snapshot")
            #expect(prepared.keys == 499 && prepared.appliedIndex == 41)
            #expect(access(dir + "/snapshot", F_OK) == 0, "not moved until installed")
            // Meanwhile the store is still its old self, takes writes and starts new segments:
            // the id the replacement was read under is taken by the time it is installed.
            for index in 6..<30 { try store.apply([.put(key: Array("old-\(index)".utf8), value: [UInt8](repeating: 7, count: 400))], appliedIndex: UInt64(index)) }
            #expect(try store.get(Array("old".utf8)) == [1])
            try store.install(prepared)
            #expect(access(dir + "/snapshot", F_OK) != 0, "consumed")

            func check(_ store: KVStore) throws {
                #expect(try store.appliedIndex() == 41 && store.count() == 499)
                #expect(try store.get(Array("old".utf8)) == nil && store.get(Array("old-9".utf8)) == nil)
                #expect(try keys.map { try store.getVersioned($0).value } == expected)
            }
            try check(store)
            // Writes after it land beside it; a reopen replays the installed file and those.
            try store.apply([.put(key: keys[0], value: [1, 2])], appliedIndex: 42)
            store.close()
            let reopened = try KVStore(path: dir + "/store", durability: .normal, segmentBytes: 4_096)
            #expect(try reopened.get(keys[0]) == [1, 2])
            try reopened.apply([.delete(key: keys[0])], appliedIndex: 43)
            #expect(try reopened.count() == 499 && reopened.get(keys[1]) == keys[1] + [9])
            reopened.close()
        }
    }

    @Test("an earlier Keyper's SQLite state is carried over, and its snapshots install")
    func legacyDatabase() throws {
        try withTemporaryDirectory { dir in
            let legacy = dir + "/state.db"
            let db = try SQLiteConnection(path: legacy)
            try db.execute("""
                CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
                CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                CREATE TABLE members (id TEXT PRIMARY KEY, raft_addr TEXT NOT NULL, http_addr TEXT NOT NULL, promote INTEGER NOT NULL DEFAULT 1);
                INSERT INTO kv VALUES (x'01', x'0A'), (x'02', x'');
                INSERT INTO meta VALUES ('applied_index', 12);
                INSERT INTO members VALUES ('n1', '127.0.0.1:1', '127.0.0.1:2', 0);
                """)
            db.close()
            try FileIO.copyFile(from: legacy, to: dir + "/old-snapshot")
            let store = try KVStore(path: dir + "/state", durability: .normal, legacyDatabase: legacy)
            #expect(try store.get([1]) == [0x0A] && store.get([2]) == [] && store.count() == 2)
            #expect(try store.appliedIndex() == 12 && store.durableIndex() == 12)
            // Revisions the database never had: one per key, in key order.
            #expect(try store.revision() == 2)
            #expect(try store.getVersioned([2]).value?.revisions == KeyRevisions(create: 2, mod: 2, version: 1))
            #expect(try store.members() == [MemberRecord(id: "n1", raftAddress: "127.0.0.1:1", httpAddress: "127.0.0.1:2", promote: false)])
            #expect(access(legacy, F_OK) != 0, "the old database is removed once carried over")
            try store.apply([.delete(key: [1])], appliedIndex: 13)
            try store.replace(with: dir + "/old-snapshot")
            #expect(try store.get([1]) == [0x0A] && store.appliedIndex() == 12)
            store.close()
        }
    }

    @Test("a live value is carried out of a collected segment, and reads find it there")
    func readDuringCollection() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal, cacheBytes: 0, segmentBytes: 1_024)
            try store.apply([.put(key: [1], value: [UInt8](repeating: 7, count: 300))], appliedIndex: 1)
            for i in 0..<20 { try store.apply([.put(key: [2], value: [UInt8](repeating: UInt8(i), count: 300))], appliedIndex: UInt64(i + 2)) }
            let pending = try store.beginRead([1])
            while try store.collectGarbage() {}
            #expect(try KVStore.segmentIDs(in: dir + "/state").count <= 3)
            #expect(store.finishRead(pending) == [UInt8](repeating: 7, count: 300))
            #expect(try store.get([1]) == [UInt8](repeating: 7, count: 300))
            store.close()
        }
    }

    @Test("revisions: a put is one, a delete of a present key is one; versions count writes since creation")
    func revisions() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full)
            try store.apply([.put(key: [1], value: [1]), .put(key: [2], value: [2]), .put(key: [1], value: [3])])
            #expect(try store.getVersioned([1]).value?.revisions == KeyRevisions(create: 1, mod: 3, version: 2))
            #expect(try store.getVersioned([2]).value?.revisions == KeyRevisions(create: 2, mod: 2, version: 1))
            // Deleting an absent key changes nothing; a delete then a put in one batch starts over.
            try store.apply([.delete(key: [9])])
            #expect(try store.revision() == 3)
            try store.apply([.delete(key: [1]), .put(key: [1], value: [4]), .setMember(id: "n", raftAddress: "r", httpAddress: "h", promote: true)])
            #expect(try store.getVersioned([1]).value == KVStore.VersionedValue(value: [4], revisions: KeyRevisions(create: 5, mod: 5, version: 1)))
            #expect(try store.getVersioned([9]).value == nil && store.getVersioned([9]).revision == 5)
            // A snapshot carries them.
            _ = try store.copy(to: dir + "/copy")
            let other = try KVStore(path: dir + "/other", durability: .full)
            try other.replace(with: dir + "/copy")
            #expect(try other.revision() == 5)
            #expect(try other.getVersioned([2]).value?.revisions == KeyRevisions(create: 2, mod: 2, version: 1))
            store.close()
            other.close()
        }
    }

    @Test("conditional writes are decided in batch order against the state with the earlier ones applied; a failed one changes nothing")
    func conditionalWrites() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            let a = Array("a".utf8), b = Array("b".utf8)
            let results = try store.apply([
                KVWrite(.put(key: a, value: [1]), condition: .modRevision(0)),   // create only: applies (rev 1)
                KVWrite(.put(key: a, value: [2]), condition: .modRevision(0)),   // exists now: fails
                KVWrite(.put(key: a, value: [3]), condition: .modRevision(1)),   // CAS on rev 1: applies (rev 2)
                KVWrite(.delete(key: b), condition: .exists),                    // absent: fails
                KVWrite(.put(key: b, value: [4]), condition: .exists),           // absent: fails
                KVWrite(.delete(key: a), condition: .modRevision(1)),            // stale: fails, current 2
                KVWrite(.delete(key: a)),                                        // applies (rev 3)
            ], appliedIndex: 10)
            #expect(results == [
                .applied(revision: 1, key: KeyRevisions(create: 1, mod: 1, version: 1)),
                .conditionFailed(modRevision: 1),
                .applied(revision: 2, key: KeyRevisions(create: 1, mod: 2, version: 2)),
                .conditionFailed(modRevision: 0),
                .conditionFailed(modRevision: 0),
                .conditionFailed(modRevision: 2),
                .applied(revision: 3, key: nil),
            ])
            #expect(try store.get(a) == nil && store.get(b) == nil && store.revision() == 3 && store.appliedIndex() == 10)
            // A batch whose every condition fails still records its applied index, and changes nothing else.
            #expect(try store.apply([KVWrite(.put(key: b, value: [5]), condition: .modRevision(7))], appliedIndex: 11)
                    == [.conditionFailed(modRevision: 0)])
            store.close()
            let reopened = try KVStore(path: dir + "/state", durability: .normal)
            #expect(try reopened.get(a) == nil && reopened.get(b) == nil && reopened.revision() == 3 && reopened.appliedIndex() == 11)
            reopened.close()
        }
    }

    @Test("a prefix delete removes every key under it, those the same batch made too, in one revision, and survives a reopen")
    func prefixDelete() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            let k = { (text: String) in Array(text.utf8) }
            try store.apply(["app/a", "app/b", "app/c", "apple", "b"].map { KVWrite(.put(key: k($0), value: [1])) }, appliedIndex: 1)
            let results = try store.apply([
                KVWrite(.delete(key: k("app/b"))),                 // rev 6
                KVWrite(.put(key: k("app/new"), value: [2])),      // rev 7
                .deletePrefix(k("app/")),                          // app/a, app/c, app/new: rev 8
                .deletePrefix(k("zzz")),                           // nothing: no revision
                KVWrite(.put(key: k("app/after"), value: [3])),    // rev 9
            ], appliedIndex: 2)
            #expect(results[2] == .deletedPrefix(count: 3, revision: 8))
            #expect(results[3] == .deletedPrefix(count: 0, revision: 8))
            #expect(results[4] == .applied(revision: 9, key: KeyRevisions(create: 9, mod: 9, version: 1)))
            func check(_ store: KVStore) throws {
                #expect(try store.list(prefix: [], after: nil, limit: 100).keys == ["app/after", "apple", "b"].map(k))
                #expect(try store.revision() == 9)
            }
            try check(store)
            store.close()
            let reopened = try KVStore(path: dir + "/state", durability: .normal)
            try check(reopened)
            reopened.close()
        }
    }

    /// A format-1 segment as Keyper wrote it before idempotency records (built by hand from
    /// that format's description, and kept as bytes so no later encoder can change it): a
    /// base checkpoint with member node1, then one batch at applied index 5 putting a=1, b=2
    /// and a=x (store revision 3).
    static let formatOneSegment: [String] = [
        "4b45595053454731430000000cf99322020100000000000000000000000000000000000000000000000001000000056e",
        "6f6465310e3132372e302e302e313a373030300e3132372e302e302e313a38303830017e000000b17e23d40105000000",
        "000000000300000000000000030000000101000000610100000000000000010000000000000001000000000000000100",
        "000031010100000062020000000000000002000000000000000100000000000000010000003201010000006101000000",
        "00000000030000000000000002000000000000000100000078",
    ]

    @Test("a format-1 segment is read as it was written; new records go to a segment of this build's format after it; both survive a reopen")
    func formatOneIsRead() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/state"
            try FileIO.makeDirectories(path)
            let hex = Self.formatOneSegment.joined()
            let bytes = stride(from: 0, to: hex.count, by: 2).map { offset -> UInt8 in
                let start = hex.index(hex.startIndex, offsetBy: offset)
                return UInt8(hex[start..<hex.index(start, offsetBy: 2)], radix: 16)!
            }
            try FileIO.writeFileAtomically(path + "/" + StateLog.fileName(1), bytes)
            let k = { (text: String) in Array(text.utf8) }
            func check(_ store: KVStore) throws {
                #expect(try store.getVersioned(k("a")).value == KVStore.VersionedValue(value: k("x"), revisions: KeyRevisions(create: 1, mod: 3, version: 2)))
                #expect(try store.get(k("b")) == k("2"))
                #expect(try store.members().map(\.id) == ["node1"])
            }
            let store = try KVStore(path: path, durability: .normal)
            try check(store)
            #expect(try store.revision() == 3 && store.appliedIndex() == 5)
            let token = IdempotencyToken(key: k("retry"), time: 1)
            let write = KVWrite(.put(key: k("c"), value: k("3")), idempotency: token)
            let first = try store.apply([write], appliedIndex: 6)
            #expect(first == [.applied(revision: 4, key: KeyRevisions(create: 4, mod: 4, version: 1))])
            store.close()
            #expect(try KVStore.segmentIDs(in: path) == [1, 2])
            #expect(try SegmentScanner.formatVersion(of: SegmentFile(id: 2, path: path + "/" + StateLog.fileName(2), create: false)) == StateLog.formatVersion)
            let reopened = try KVStore(path: path, durability: .normal)
            try check(reopened)
            #expect(try reopened.apply([write]) == [.replayed(first[0])])
            #expect(try reopened.revision() == 4 && reopened.appliedIndex() == 6)
            reopened.close()
        }
    }

    @Test("a segment of a newer format is refused, naming both formats")
    func newerFormatRefused() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/state"
            try FileIO.makeDirectories(path)
            try FileIO.writeFileAtomically(path + "/" + StateLog.fileName(1), Array("KEYPSEG7".utf8) + [UInt8](repeating: 0, count: 40))
            #expect {
                _ = try KVStore(path: path, durability: .full)
            } throws: { error in
                let text = "\(error)"
                return text.contains("segment format 7") && text.contains("newer") && text.contains("reads formats 1 to 3")
            }
        }
    }

    @Test("a read that can be served from memory is; one that would wait for the disk says so, and a blocking get serves it")
    func readsWithoutWaiting() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .full, cacheBytes: 0)
            let value = [UInt8](repeating: 9, count: 3_000)
            try store.apply([.put(key: [1], value: value)])
            #expect(try store.getIfCached([2]) == .done(KVStore.VersionedRead(value: nil, revision: 1)))
            // Written a moment ago: in the page cache.
            let found = KVStore.VersionedRead(value: .init(value: value, revisions: KeyRevisions(create: 1, mod: 1, version: 1)), revision: 1)
            #expect(try store.getIfCached([1]) == .done(found))
            // Dropped from the page cache (where the file system allows it): the read would block.
            let segment = dir + "/state/" + StateLog.fileName(1)
            let fd = open(segment, O_RDONLY)
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
            close(fd)
            let read = try store.getIfCached([1])
            // tmpfs keeps every page in memory: there the read never blocks.
            let onTmpfs = Self.fileSystemType(of: segment) == "tmpfs"
            #expect(read == (onTmpfs ? .done(found) : .wouldBlock), "tmpfs: \(onTmpfs)")
            #expect(try store.get([1]) == value)
            store.close()
        }
    }

    /// The type of the file system holding `path`, from the longest mount point above it in
    /// /proc/mounts.
    static func fileSystemType(of path: String) -> String? {
        guard let mounts = try? FileIO.readFile("/proc/mounts") else { return nil }
        var best: (point: String, type: String)?
        for line in String(decoding: mounts, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = String(fields[1])
            guard path == point || path.hasPrefix(point == "/" ? "/" : point + "/") else { continue }
            if point.count >= (best?.point.count ?? -1) { best = (point, String(fields[2])) }
        }
        return best?.type
    }
}
