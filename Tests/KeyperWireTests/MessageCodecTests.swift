import KeyperTestSupport
import KeyperRaft
import KeyperWire
import Testing

@Suite("Raft message codec")
struct MessageCodecTests {
    static let configuration = Configuration(voters: [NodeID("a"), NodeID("b")], learners: [NodeID("c")])

    /// One message of every kind, with non-default fields so a swapped field would show.
    static let samples: [Message] = {
        let kinds: [MessageKind] = [
            .append(AppendEntries(prevIndex: LogIndex(7), prevTerm: Term(2), entries: [
                Entry(term: Term(3), index: LogIndex(8), kind: .normal, data: [1, 2, 3]),
                Entry(term: Term(3), index: LogIndex(9), kind: .configChange, data: []),
            ], commit: LogIndex(6))),
            .append(AppendEntries(prevIndex: .zero, prevTerm: .zero, entries: [], commit: .zero)),
            .appendResponse(AppendResponse(index: LogIndex(9), rejected: true, hintIndex: LogIndex(4), hintTerm: Term(1))),
            .preVote(VoteRequest(lastIndex: LogIndex(10), lastTerm: Term(3), transfer: false)),
            .preVoteResponse(VoteResponse(granted: true)),
            .vote(VoteRequest(lastIndex: LogIndex(11), lastTerm: Term(4), transfer: true)),
            .voteResponse(VoteResponse(granted: false)),
            .heartbeat(Heartbeat(commit: LogIndex(12), readRound: 99)),
            .heartbeatResponse(HeartbeatResponse(readRound: 98)),
            .snapshot(SnapshotMetadata(index: LogIndex(500), term: Term(5), configuration: configuration)),
            .timeoutNow,
            .readIndex(ReadIndexRequest(context: [9, 9])),
            .readIndexResponse(ReadIndexResponse(context: [8], index: LogIndex(13))),
        ]
        return kinds.map { Message(from: NodeID("node1"), to: NodeID("node2"), term: Term(1 << 40), kind: $0) }
    }()

    @Test("every message kind round-trips exactly")
    func roundTrip() throws {
        for message in Self.samples {
            #expect(try Message(wireBytes: message.wireBytes()) == message)
        }
    }

    @Test("every proper prefix of every message throws, and random bytes never trap")
    func truncationsAndNoise() {
        for message in Self.samples {
            let bytes = message.wireBytes()
            for cut in 0..<bytes.count {
                #expect(throws: WireError.self) { try Message(wireBytes: Array(bytes[..<cut])) }
            }
        }
        let seed: UInt64 = 0x5EED_0002
        var generator = WireTestGenerator(seed: seed)
        for _ in 0..<20_000 {
            let bytes = generator.bytes(Int.random(in: 0...40, using: &generator))
            if let message = try? Message(wireBytes: bytes) {
                #expect(message.wireBytes() == bytes, "non-canonical decode seed=\(seed) bytes=\(bytes)")
            }
        }
    }

    @Test("an unknown kind tag is refused")
    func unknownTag() {
        var bytes = Message(from: NodeID("a"), to: NodeID("b"), term: Term(1), kind: .timeoutNow).wireBytes()
        bytes[bytes.count - 1] = 200
        #expect(throws: WireError.self) { try Message(wireBytes: bytes) }
    }
}
