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
        var unknownCondition = Command(request: request, operation: .delete(key: [1]), condition: .exists).encoded()
        unknownCondition[unknownCondition.count - 1] = 7
        #expect(throws: WireError.self) { try Command(decoding: unknownCondition) }
    }
}
