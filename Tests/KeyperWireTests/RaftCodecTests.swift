import Testing
import KeyperRaft
import KeyperWire

func sampleEntries() -> [Entry] {
    [
        Entry(term: .zero, index: LogIndex(1)),
        Entry(term: Term(3), index: LogIndex(42), kind: .normal, data: Array("hello".utf8)),
        Entry(term: Term(UInt64.max), index: LogIndex(UInt64.max), kind: .configChange, data: [0, 1, 2, 255]),
        Entry(term: Term(7), index: LogIndex(1 << 40), data: [UInt8](repeating: 0xAA, count: 300)),
    ]
}

func sampleHardStates() -> [HardState] {
    [HardState(), HardState(term: Term(5), vote: NodeID("node2"), commit: LogIndex(99)),
     HardState(term: Term(1 << 50), vote: nil, commit: LogIndex(3)), HardState(term: Term(2), vote: NodeID(""), commit: .zero)]
}

func sampleConfigurations() -> [Configuration] {
    [Configuration(), Configuration(voters: [NodeID("n3"), NodeID("n1"), NodeID("n2")], learners: [NodeID("l1")]),
     Configuration(voters: [NodeID("b"), NodeID("a"), NodeID("ab"), NodeID("é")], learners: []),
     Configuration(voters: [NodeID("n1"), NodeID("n2")], learners: [NodeID("l1")],
                   incarnations: [NodeID("n2"): 0x0123_4567_89ab_cdef, NodeID("l1"): 1, NodeID("n1"): .max])]
}

func sampleSnapshots() -> [SnapshotMetadata] {
    sampleConfigurations().enumerated().map { i, configuration in
        SnapshotMetadata(index: LogIndex(UInt64(i * 1000)), term: Term(UInt64(i)), configuration: configuration)
    }
}

@Suite("Raft type codecs")
struct RaftCodecTests {
    @Test("Entries round-trip and wireSize equals the encoded length")
    func entries() throws {
        for entry in sampleEntries() {
            let bytes = entry.wireBytes()
            #expect(bytes.count == entry.wireSize)
            #expect(try Entry(wireBytes: bytes) == entry)
        }
    }

    @Test("Hard states round-trip, with and without a vote")
    func hardStates() throws {
        for state in sampleHardStates() {
            #expect(try HardState(wireBytes: state.wireBytes()) == state)
        }
    }

    @Test("Configurations round-trip and encode deterministically in sorted order")
    func configurations() throws {
        for configuration in sampleConfigurations() {
            let bytes = configuration.wireBytes()
            #expect(try Configuration(wireBytes: bytes) == configuration)
            // A set built in another insertion order encodes to the same bytes.
            let shuffled = Configuration(voters: Set(configuration.voters.reversed()), learners: Set(configuration.learners.reversed()),
                                         incarnations: configuration.incarnations)
            #expect(shuffled.wireBytes() == bytes)
        }
        let bytes = Configuration(voters: [NodeID("b"), NodeID("a")]).wireBytes()
        #expect(bytes == [2, 1, UInt8(ascii: "a"), 1, UInt8(ascii: "b"), 0, 0])
        let recorded = Configuration(voters: [NodeID("a")], incarnations: [NodeID("a"): 7]).wireBytes()
        #expect(recorded == [1, 1, UInt8(ascii: "a"), 0, 1, 1, UInt8(ascii: "a")] + ByteWriterBytes.uint64(7))
    }

    @Test("Incarnations are refused for non-members and when zero")
    func incarnationStrictness() {
        let nonMember: [UInt8] = [1, 1, UInt8(ascii: "a"), 0, 1, 1, UInt8(ascii: "b")] + ByteWriterBytes.uint64(7)
        #expect(throws: WireError.invalidValue(field: "incarnation of a non-member", offset: 4)) { try Configuration(wireBytes: nonMember) }
        let zero: [UInt8] = [1, 1, UInt8(ascii: "a"), 0, 1, 1, UInt8(ascii: "a")] + ByteWriterBytes.uint64(0)
        #expect(throws: WireError.invalidValue(field: "incarnation", offset: 7)) { try Configuration(wireBytes: zero) }
    }

    @Test("Unsorted or duplicated node ids are rejected")
    func unsortedConfiguration() {
        let unsorted: [UInt8] = [2, 1, UInt8(ascii: "b"), 1, UInt8(ascii: "a"), 0, 0]
        #expect(throws: WireError.invalidValue(field: "voters order", offset: 3)) { try Configuration(wireBytes: unsorted) }
        let duplicate: [UInt8] = [0, 2, 1, UInt8(ascii: "a"), 1, UInt8(ascii: "a"), 0]
        #expect(throws: WireError.self) { try Configuration(wireBytes: duplicate) }
    }

    @Test("Snapshot metadata round-trips")
    func snapshots() throws {
        for snapshot in sampleSnapshots() {
            #expect(try SnapshotMetadata(wireBytes: snapshot.wireBytes()) == snapshot)
        }
    }

    @Test("An unknown entry kind and trailing bytes are rejected")
    func strictness() {
        var bytes = Entry(term: Term(1), index: LogIndex(1)).wireBytes()
        bytes[2] = 9
        #expect(throws: WireError.invalidValue(field: "entry kind", offset: 2)) { try Entry(wireBytes: bytes) }
        #expect(throws: WireError.trailingBytes(offset: 4, count: 1)) { try Entry(wireBytes: Entry(term: Term(1), index: LogIndex(1)).wireBytes() + [0]) }
    }
}

/// How ByteWriter lays out a fixed-width integer, for expected bytes.
enum ByteWriterBytes {
    static func uint64(_ value: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.writeUInt64(value)
        return writer.bytes
    }
}
