/// One membership change (thesis §4.1: one server at a time). It travels in the log as the data
/// of an `EntryKind.configChange` entry, encoded with `encoded()`.
public struct ConfChange: Hashable, Sendable {
    public enum Kind: UInt8, Hashable, Sendable {
        /// Add a non-voting member, or demote a voter to one.
        case addLearner = 1
        /// Add a voter, or promote a learner (do it once the learner has caught up).
        case addVoter = 2
        /// Remove a voter or a learner; removing the leader makes it step down once committed.
        case removeNode = 3
    }

    public var kind: Kind
    public var node: NodeID
    /// The incarnation of the node's data directory (see ``Configuration/incarnations``); 0 on
    /// a promotion or demotion keeps the one recorded, and means "not tracked" otherwise.
    public var incarnation: UInt64
    /// Opaque to the core: the shell keeps what it needs here (the node's address).
    public var context: [UInt8]

    public init(kind: Kind, node: NodeID, incarnation: UInt64 = 0, context: [UInt8] = []) {
        self.kind = kind
        self.node = node
        self.incarnation = incarnation
        self.context = context
    }

    static let formatVersion: UInt8 = 2

    /// Layout, big-endian: version u8, kind u8, node length u16, node UTF-8, incarnation u64,
    /// context length u32, context. (Version 1 had no incarnation; it decodes as 0.)
    public func encoded() -> [UInt8] {
        let nodeBytes = Array(node.rawValue.utf8)
        precondition(nodeBytes.count <= Int(UInt16.max), "node id too long: \(nodeBytes.count) bytes")
        precondition(context.count <= Int(UInt32.max), "context too long: \(context.count) bytes")
        var out: [UInt8] = []
        out.reserveCapacity(8 + nodeBytes.count + context.count)
        out.append(Self.formatVersion)
        out.append(kind.rawValue)
        appendBigEndian(UInt64(nodeBytes.count), width: 2, to: &out)
        out.append(contentsOf: nodeBytes)
        appendBigEndian(incarnation, width: 8, to: &out)
        appendBigEndian(UInt64(context.count), width: 4, to: &out)
        out.append(contentsOf: context)
        return out
    }

    public init(decoding bytes: [UInt8]) throws(RaftError) {
        var reader = ByteReader(bytes: bytes)
        let version = try reader.read(width: 1)
        guard version == 1 || version == UInt64(Self.formatVersion) else { throw .malformedConfChange }
        guard let kind = Kind(rawValue: UInt8(try reader.read(width: 1))) else { throw .malformedConfChange }
        let nodeCount = Int(try reader.read(width: 2))
        let nodeBytes = try reader.take(nodeCount)
        guard let name = String(validating: nodeBytes, as: UTF8.self), !name.isEmpty else {
            throw .malformedConfChange
        }
        let incarnation = version == 1 ? 0 : try reader.read(width: 8)
        let contextCount = Int(try reader.read(width: 4))
        let context = try reader.take(contextCount)
        guard reader.isAtEnd else { throw .malformedConfChange }
        self.init(kind: kind, node: NodeID(name), incarnation: incarnation, context: context)
    }
}

private func appendBigEndian(_ value: UInt64, width: Int, to out: inout [UInt8]) {
    for shift in stride(from: (width - 1) * 8, through: 0, by: -8) {
        out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
    }
}

private struct ByteReader {
    let bytes: [UInt8]
    var offset = 0
    var isAtEnd: Bool { offset == bytes.count }

    mutating func read(width: Int) throws(RaftError) -> UInt64 {
        guard bytes.count - offset >= width else { throw .malformedConfChange }
        var value: UInt64 = 0
        for byte in bytes[offset..<offset + width] { value = value << 8 | UInt64(byte) }
        offset += width
        return value
    }

    mutating func take(_ count: Int) throws(RaftError) -> [UInt8] {
        guard count >= 0, bytes.count - offset >= count else { throw .malformedConfChange }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
}
