import KeyperBase
import KeyperRaft
import KeyperStorage
import KeyperTestSupport
import KeyperWire
import Testing
@testable import KeyperReplica

@Suite("Peer records and commands")
struct PeerRecordTests {
    static let records: [PeerRecord] = [
        .raft(Message(from: NodeID("a"), to: NodeID("b"), term: Term(3), kind: .heartbeat(Heartbeat(commit: LogIndex(9), readRound: 2)))),
        .forward(request: RequestID(node: NodeID("b"), sequence: 77),
                 data: Command(request: RequestID(node: NodeID("b"), sequence: 77), operation: .put(key: [1], value: [2])).encoded()),
        .forwardRefused(request: RequestID(node: NodeID("b"), sequence: 78), failure: ReplicaError(.noLeader, "x")),
        .forwardRefused(request: RequestID(node: NodeID("b"), sequence: 79), failure: ReplicaError(.noLeader, "y", outcome: .unknown)),
        .adoptRequest(AdoptRequest(clusterID: "c1", leader: NodeID("a"), leaderRaftAddress: "127.0.0.1:1", token: 5)),
        .adoptResponse(AdoptResponse(token: 5, accepted: false, reason: "holds data", httpAddress: "127.0.0.1:2")),
        .snapshotChunk(SnapshotChunk(index: LogIndex(100), term: Term(2), offset: 4, totalBytes: 10, bytes: [1, 2, 3])),
    ]

    @Test("every record kind round-trips in one frame, and frames split at the size target")
    func roundTrip() throws {
        #expect(try PeerRecord.decodeFrame(PeerRecord.encodeFrame(Self.records)) == Self.records)
        let frames = PeerRecord.encodeFrames(Self.records, frameBytesTarget: 16)
        #expect(frames.count > 1)
        #expect(try frames.flatMap { try PeerRecord.decodeFrame($0) } == Self.records)
    }

    @Test("truncated and random frames are refused, never trap (seeded)")
    func fuzz() {
        let frame = PeerRecord.encodeFrame(Self.records)
        for cut in 0..<frame.count {
            #expect(throws: WireError.self) { try PeerRecord.decodeFrame(Array(frame[..<cut])) }
        }
        let seed: UInt64 = 0x5EED_0003
        var generator = SplitMix64(seed: seed)
        for _ in 0..<20_000 {
            var bytes = generator.bytes(Int.random(in: 0...48, using: &generator))
            if !bytes.isEmpty { bytes[0] = 1 }  // one record, so decoding gets past the count
            _ = try? PeerRecord.decodeFrame(bytes)
        }
    }

    @Test("a snapshot chunk claiming more bytes than its total is refused")
    func chunkBounds() {
        let bad = PeerRecord.snapshotChunk(SnapshotChunk(index: LogIndex(1), term: Term(1), offset: 9, totalBytes: 10, bytes: [1, 2]))
        #expect(throws: WireError.self) { try PeerRecord.decodeFrame(PeerRecord.encodeFrame([bad])) }
    }

    @Test("commands round-trip, and a command of an unknown version or operation is refused")
    func commands() throws {
        let command = Command(request: RequestID(node: NodeID("n"), sequence: 1 << 40), operation: .delete(key: Array("k".utf8)))
        #expect(try Command(decoding: command.encoded()) == command)
        var unknown = command.encoded()
        unknown[0] = 9
        #expect(throws: WireError.self) { try Command(decoding: unknown) }
        #expect(throws: WireError.self) { try Command(decoding: command.encoded() + [0]) }
    }

    @Test("a command with a condition is version 2 and round-trips; one without stays version 1, as earlier releases write it")
    func conditionalCommands() throws {
        let request = RequestID(node: NodeID("n"), sequence: 9)
        let plain = Command(request: request, operation: .put(key: [1], value: [2]))
        #expect(plain.encoded().first == 1)
        for condition in [KVCondition.modRevision(0), .modRevision(1 << 50), .exists] {
            let command = Command(request: request, operation: .put(key: [1], value: [2]), condition: condition)
            #expect(command.encoded().first == 2)
            #expect(try Command(decoding: command.encoded()) == command)
        }
        let prefix = Command(request: request, write: .deletePrefix(Array("app/".utf8)))
        #expect(prefix.encoded().first == 2)
        #expect(try Command(decoding: prefix.encoded()) == prefix)
        // An idempotency key makes it version 3, with or without a condition.
        for condition in [nil, KVCondition.exists] {
            let token = IdempotencyToken(key: Array("retry-1".utf8), time: 1_765_000_000_000)
            let command = Command(request: request, write: KVWrite(.put(key: [1], value: [2]), condition: condition, idempotency: token))
            #expect(command.encoded().first == 3)
            #expect(try Command(decoding: command.encoded()) == command)
            var transaction = KVWrite.transaction(KVTransaction(success: [.delete(key: [1])]))
            transaction.idempotency = token
            #expect(try Command(decoding: Command(request: request, write: transaction).encoded()).write == transaction)
        }
        var unknownCondition = Command(request: request, operation: .delete(key: [1]), condition: .exists).encoded()
        unknownCondition[unknownCondition.count - 1] = 7
        #expect(throws: WireError.self) { try Command(decoding: unknownCondition) }
    }

    @Test("lease commands (grant, revoke, a put with a lease, with a condition and a key) are version 2 or 3 and round-trip; truncations are refused")
    func leaseCommands() throws {
        let request = RequestID(node: NodeID("n"), sequence: 5)
        let token = IdempotencyToken(key: Array("k".utf8), time: 1)
        let writes = [
            KVWrite(.grantLease(id: (1 << 53) - 1, ttlSeconds: 10)),
            KVWrite(.revokeLease(id: 1)),
            KVWrite(.put(key: [1], value: [2, 3]), lease: 42),
            KVWrite(.put(key: [1], value: []), condition: .modRevision(0), lease: 1 << 60),
            KVWrite(.put(key: [1], value: [2]), idempotency: token, lease: 7),
        ]
        for write in writes {
            let bytes = Command(request: request, write: write).encoded()
            #expect(bytes.first == (write.idempotency == nil ? 2 : 3))
            #expect(try Command(decoding: bytes).write == write)
            for length in 0..<bytes.count {
                #expect(throws: WireError.self) { try Command(decoding: Array(bytes[..<length])) }
            }
        }
        // A lease changes the fingerprint: a retry must name the same lease.
        #expect(KVWrite(.put(key: [1], value: [2]), lease: 7).fingerprint != KVWrite(.put(key: [1], value: [2]), lease: 8).fingerprint)
        #expect(KVWrite(.put(key: [1], value: [2]), lease: 7).fingerprint != KVWrite(.put(key: [1], value: [2])).fingerprint)
        // Version 1 knows no lease operation.
        var grant = Command(request: request, write: KVWrite(.grantLease(id: 1, ttlSeconds: 5))).encoded()
        grant[0] = 1
        #expect(throws: WireError.self) { try Command(decoding: grant) }
    }

    @Test("a transaction command round-trips every comparison and operation; a malformed one is refused, never trusted")
    func transactionCommands() throws {
        let request = RequestID(node: NodeID("n"), sequence: 3)
        let transaction = KVTransaction(
            compare: [KVComparison(key: [1], target: .modRevision, relation: .equal, operand: .number(1 << 40)),
                      KVComparison(key: [2], target: .createRevision, relation: .less, operand: .number(0)),
                      KVComparison(key: [3], target: .version, relation: .greater, operand: .number(7)),
                      KVComparison(key: [4], target: .value, relation: .notEqual, operand: .bytes([0, 255])),
                      KVComparison(key: [5], target: .exists, relation: .equal, operand: .bool(false))],
            success: [.put(key: [1], value: [2, 3]), .delete(key: [4]), .deletePrefix(prefix: []), .get(key: [5]),
                      .list(prefix: [6], after: [7], limit: 1_000, values: true), .list(prefix: [], after: nil, limit: 1, values: false)],
            failure: [.get(key: [9])])
        let command = Command(request: request, write: .transaction(transaction))
        let bytes = command.encoded()
        #expect(bytes.first == 2)
        #expect(try Command(decoding: bytes) == command)
        #expect(try Command(decoding: Command(request: request, write: .transaction(KVTransaction())).encoded()).write == .transaction(KVTransaction()))
        // Every truncation is refused.
        for length in 0..<bytes.count {
            #expect(throws: WireError.self) { try Command(decoding: Array(bytes[..<length])) }
        }
        // A comparison whose operand does not fit its target (exists with <) is refused.
        var bad = KVTransaction(compare: [KVComparison(key: [5], target: .exists, relation: .less, operand: .bool(true))])
        #expect(throws: WireError.self) { try Command(decoding: Command(request: request, write: .transaction(bad)).encoded()) }
        // A list with limit 0 is refused.
        bad = KVTransaction(success: [.list(prefix: [], after: nil, limit: 0, values: false)])
        #expect(throws: WireError.self) { try Command(decoding: Command(request: request, write: .transaction(bad)).encoded()) }
    }
}
