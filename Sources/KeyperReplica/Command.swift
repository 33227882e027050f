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
/// Layout: version (`UInt8`), requester node id (string), sequence (varint), operation tag
/// (`UInt8`: 1 put, 2 delete, 3 delete every key with a prefix), key or prefix
/// (length-prefixed), value (length-prefixed, put only); in version 2 then a condition tag
/// (`UInt8`: 0 none, 1 mod revision then the revision as a varint, 2 the key exists). A put or
/// delete without a condition is written as version 1, so a node of an earlier release still
/// reads it (one of an earlier release cannot apply the rest: upgrade every node before using
/// them). Tags are persistent (they sit in every WAL): never renumber one.
package struct Command: Equatable, Sendable {
    package var request: RequestID
    package var write: KVWrite

    package func encoded() -> [UInt8] {
        let version: UInt8 = switch (write.change, write.condition) {
        case (.one, nil): 1
        default: 2
        }
        var writer = ByteWriter(capacity: 48 + write.byteCount)
        writer.writeUInt8(version)
        request.node.encode(to: &writer)
        writer.writeVarint(request.sequence)
        switch write.change {
        case let .one(.put(key, value)):
            writer.writeUInt8(1)
            writer.writeLengthPrefixed(key)
            writer.writeLengthPrefixed(value)
        case let .one(.delete(key)):
            writer.writeUInt8(2)
            writer.writeLengthPrefixed(key)
        case let .deletePrefix(prefix):
            writer.writeUInt8(3)
            writer.writeLengthPrefixed(prefix)
        case .one(.setMember), .one(.removeMember):
            // Membership travels in configuration-change entries, never in commands.
            preconditionFailure("membership is not a client command: \(write)")
        }
        guard version == 2 else { return writer.bytes }
        switch write.condition {
        case nil:
            writer.writeUInt8(0)
        case .modRevision(let revision):
            writer.writeUInt8(1)
            writer.writeVarint(revision)
        case .exists:
            writer.writeUInt8(2)
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
        guard version == 1 || version == 2 else { throw .invalidValue(field: "command version", offset: versionOffset) }
        let node = try NodeID(from: &reader)
        request = RequestID(node: node, sequence: try reader.readVarint())
        let tagOffset = reader.position
        switch try reader.readUInt8() {
        case 1:
            let key = try reader.readLengthPrefixed()
            write = KVWrite(.put(key: key, value: try reader.readLengthPrefixed()))
        case 2:
            write = KVWrite(.delete(key: try reader.readLengthPrefixed()))
        case 3 where version == 2:
            write = .deletePrefix(try reader.readLengthPrefixed())
        default:
            throw .invalidValue(field: "command operation", offset: tagOffset)
        }
        if version == 2 {
            let conditionOffset = reader.position
            switch try reader.readUInt8() {
            case 0: break
            case 1: write.condition = .modRevision(try reader.readVarint())
            case 2: write.condition = .exists
            default: throw .invalidValue(field: "command condition", offset: conditionOffset)
            }
            if case .deletePrefix = write.change, write.condition != nil {
                throw .invalidValue(field: "command condition", offset: conditionOffset)
            }
        }
        try reader.expectEnd()
    }
}

extension KVWrite {
    var byteCount: Int {
        switch change {
        case .one(let operation): operation.byteCount
        case .deletePrefix(let prefix): prefix.count
        }
    }
}

extension KVOperation {
    var byteCount: Int {
        switch self {
        case let .put(key, value): key.count + value.count
        case let .delete(key): key.count
        case .setMember, .removeMember: 0
        }
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
