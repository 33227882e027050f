import KeyperRaft

// Encodings of the shared Raft value types (Types.swift). Integers that are usually small
// (terms, indexes, lengths) are LEB128 varints; every encoding is canonical so that
// `decode(encode(x)) == x` and `encode(decode(b)) == b` for every `b` that decodes.

extension Term: WireCodable {
    public func encode(to writer: inout ByteWriter) { writer.writeVarint(rawValue) }
    public init(from reader: inout ByteReader) throws(WireError) { self.init(try reader.readVarint()) }
}

extension LogIndex: WireCodable {
    public func encode(to writer: inout ByteWriter) { writer.writeVarint(rawValue) }
    public init(from reader: inout ByteReader) throws(WireError) { self.init(try reader.readVarint()) }
}

extension NodeID: WireCodable {
    public func encode(to writer: inout ByteWriter) { writer.writeString(rawValue) }
    public init(from reader: inout ByteReader) throws(WireError) { self.init(try reader.readString()) }
}

extension EntryKind: WireCodable {
    public func encode(to writer: inout ByteWriter) { writer.writeUInt8(rawValue) }
    public init(from reader: inout ByteReader) throws(WireError) {
        let offset = reader.position
        guard let kind = EntryKind(rawValue: try reader.readUInt8()) else {
            throw .invalidValue(field: "entry kind", offset: offset)
        }
        self = kind
    }
}

/// Layout: term (varint), index (varint), kind (u8), data (varint length + bytes).
extension Entry: WireCodable {
    public func encode(to writer: inout ByteWriter) {
        term.encode(to: &writer)
        index.encode(to: &writer)
        kind.encode(to: &writer)
        writer.writeLengthPrefixed(data)
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let term = try Term(from: &reader)
        let index = try LogIndex(from: &reader)
        let kind = try EntryKind(from: &reader)
        let data = try reader.readLengthPrefixed()
        self.init(term: term, index: index, kind: kind, data: data)
    }

    /// Exactly `wireBytes().count`, computed without encoding. Used for byte budgets
    /// (`bytesMax` of a read, the WAL's entry cache).
    public var wireSize: Int {
        ByteWriter.varintSize(term.rawValue) + ByteWriter.varintSize(index.rawValue) + 1
            + ByteWriter.varintSize(UInt64(data.count)) + data.count
    }
}

/// Layout: term (varint), vote flag (u8 0/1) and vote (string) if set, commit (varint).
extension HardState: WireCodable {
    public func encode(to writer: inout ByteWriter) {
        term.encode(to: &writer)
        writer.writeBool(vote != nil)
        if let vote { vote.encode(to: &writer) }
        commit.encode(to: &writer)
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let term = try Term(from: &reader)
        let vote: NodeID? = try reader.readBool(field: "vote flag") ? try NodeID(from: &reader) : nil
        let commit = try LogIndex(from: &reader)
        self.init(term: term, vote: vote, commit: commit)
    }
}

/// Layout: voters then learners, each a varint count followed by node ids in strictly ascending
/// order of their UTF-8 bytes; then the incarnations: the members that have one, in the same
/// order, each followed by its incarnation (u64). Sorting makes the encoding deterministic (a
/// `Set` has no order); requiring it on decode makes the encoding unique.
extension Configuration: WireCodable {
    public func encode(to writer: inout ByteWriter) {
        Self.encodeSet(voters, to: &writer)
        Self.encodeSet(learners, to: &writer)
        let recorded = incarnations.filter { $0.value != 0 }
        Self.encodeSet(Set(recorded.keys), to: &writer)
        for node in Self.sorted(Set(recorded.keys)) { writer.writeUInt64(recorded[node]!) }
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let voters = try Self.decodeSet(field: "voters", from: &reader)
        let learners = try Self.decodeSet(field: "learners", from: &reader)
        let offset = reader.position
        let recorded = try Self.decodeSet(field: "incarnations", from: &reader)
        guard recorded.isSubset(of: voters.union(learners)) else { throw .invalidValue(field: "incarnation of a non-member", offset: offset) }
        var incarnations: [NodeID: UInt64] = [:]
        for node in Self.sorted(recorded) {
            let offset = reader.position
            let incarnation = try reader.readUInt64()
            guard incarnation != 0 else { throw .invalidValue(field: "incarnation", offset: offset) }
            incarnations[node] = incarnation
        }
        self.init(voters: voters, learners: learners, incarnations: incarnations)
    }

    private static func sorted(_ set: Set<NodeID>) -> [NodeID] {
        set.sorted { $0.rawValue.utf8.lexicographicallyPrecedes($1.rawValue.utf8) }
    }

    private static func encodeSet(_ set: Set<NodeID>, to writer: inout ByteWriter) {
        let sorted = sorted(set)
        writer.writeVarint(UInt64(sorted.count))
        for node in sorted { node.encode(to: &writer) }
    }

    private static func decodeSet(field: String, from reader: inout ByteReader) throws(WireError) -> Set<NodeID> {
        // Each id takes at least one byte, so a count above the bytes left cannot be honest;
        // checking first keeps a hostile count from reserving memory.
        let count = try reader.readCount(field: "\(field) count", limit: reader.remaining)
        var set = Set<NodeID>(minimumCapacity: count)
        var previous: NodeID?
        for _ in 0..<count {
            let offset = reader.position
            let node = try NodeID(from: &reader)
            if let previous, !previous.rawValue.utf8.lexicographicallyPrecedes(node.rawValue.utf8) {
                throw .invalidValue(field: "\(field) order", offset: offset)
            }
            // Distinct bytes can still be equal Strings (canonical equivalence); such a pair
            // would collapse in the set and not re-encode to the same bytes.
            guard set.insert(node).inserted else { throw .invalidValue(field: "\(field) duplicate", offset: offset) }
            previous = node
        }
        return set
    }
}

/// Layout: index (varint), term (varint), configuration.
extension SnapshotMetadata: WireCodable {
    public func encode(to writer: inout ByteWriter) {
        index.encode(to: &writer)
        term.encode(to: &writer)
        configuration.encode(to: &writer)
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let index = try LogIndex(from: &reader)
        let term = try Term(from: &reader)
        let configuration = try Configuration(from: &reader)
        self.init(index: index, term: term, configuration: configuration)
    }
}
