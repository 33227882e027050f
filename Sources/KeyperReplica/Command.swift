import KeyperRaft
import KeyperStorage
import KeyperWire

/// Who is waiting for a proposal: the node that took the client's request, and that node's
/// sequence number for it. Only that node resolves a waiter when the entry is applied.
package struct RequestID: Hashable, Sendable, CustomStringConvertible {
    package var node: NodeID
    package var sequence: UInt64
    package var description: String { "\(node)#\(sequence)" }

    package init(node: NodeID, sequence: UInt64) {
        self.node = node
        self.sequence = sequence
    }
}

/// What a normal entry's data holds: one state-machine command and who asked for it.
///
/// Layout: version (`UInt8`), requester node id (string), sequence (varint), the change
/// (``KVWrite/encodeChange(to:)``); in version 2 and 3 then the condition
/// (``KVWrite/encodeCondition(to:)``); in version 3 then the idempotency key
/// (length-prefixed) and the time it was proposed at (varint, milliseconds of the Unix
/// epoch). A put or delete without a condition, an idempotency key or a lease is written as
/// version 1, so a node of an earlier release still reads it; anything else as the oldest
/// version that carries it (a node of an earlier release cannot apply those: upgrade every
/// node before using them). Tags are persistent (they sit in every WAL): never renumber one.
package struct Command: Equatable, Sendable {
    package var request: RequestID
    package var write: KVWrite

    package func encoded() -> [UInt8] {
        let version: UInt8 = write.idempotency != nil ? 3 : write.fitsFirstCommandFormat ? 1 : 2
        var writer = ByteWriter(capacity: 48 + write.byteCount)
        writer.writeUInt8(version)
        request.node.encode(to: &writer)
        writer.writeVarint(request.sequence)
        write.encodeChange(to: &writer)
        guard version >= 2 else { return writer.bytes }
        write.encodeCondition(to: &writer)
        if let token = write.idempotency {
            writer.writeLengthPrefixed(token.key)
            writer.writeVarint(token.time)
        }
        return writer.bytes
    }

    package init(request: RequestID, write: KVWrite) {
        self.request = request
        self.write = write
    }

    package init(request: RequestID, operation: KVOperation, condition: KVCondition? = nil) {
        self.init(request: request, write: KVWrite(operation, condition: condition))
    }

    package init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = ByteReader(bytes)
        let versionOffset = reader.position
        let version = try reader.readUInt8()
        guard (1...3).contains(version) else { throw .invalidValue(field: "command version", offset: versionOffset) }
        let node = try NodeID(from: &reader)
        request = RequestID(node: node, sequence: try reader.readVarint())
        // Version 1 knows puts and deletes of one key, without a condition.
        write = try KVWrite(decodingChangeFrom: &reader, onlyOneKey: version == 1)
        if version >= 2 { try write.decodeCondition(from: &reader) }
        if version == 3 {
            let key = try reader.readLengthPrefixed()
            write.idempotency = IdempotencyToken(key: key, time: try reader.readVarint())
        }
        try reader.expectEnd()
    }
}

/// The addresses a member is reached at, carried in its configuration change's context so
/// that every node (and every snapshot) learns them from the log.
///
/// Layout: version (`UInt8`, 1), raft address (string), HTTP address (string, may be empty).
package struct MemberAddresses: Hashable, Sendable {
    package var raft: String
    package var http: String
    /// For a learner: promote it to voter once it has caught up. False for one that joined
    /// asking to stay a learner (`{"learner": true}`, as etcd's `member add --learner`).
    package var promote = true

    /// Layout: version u8 (2), raft and http addresses (strings), promote (bool). Version 1
    /// had no promote flag (every learner was promoted).
    package func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.writeUInt8(2)
        writer.writeString(raft)
        writer.writeString(http)
        writer.writeBool(promote)
        return writer.bytes
    }

    package init(raft: String, http: String, promote: Bool = true) {
        self.raft = raft
        self.http = http
        self.promote = promote
    }

    package init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = ByteReader(bytes)
        let version = try reader.readUInt8()
        guard version == 1 || version == 2 else { throw .invalidValue(field: "member addresses version", offset: 0) }
        raft = try reader.readString()
        http = try reader.readString()
        promote = version == 1 ? true : try reader.readBool(field: "promote")
        try reader.expectEnd()
    }
}
