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
/// (`UInt8`: 1 put, 2 delete, 3 delete every key with a prefix, 4 transaction), key or prefix
/// (length-prefixed), value (length-prefixed, put only), or the transaction
/// (``KVTransaction/encode(to:)``); in version 2 and 3 then a condition tag
/// (`UInt8`: 0 none, 1 mod revision then the revision as a varint, 2 the key exists); in
/// version 3 then the idempotency key (length-prefixed) and the time it was proposed at
/// (varint, milliseconds of the Unix epoch). A put or delete without a condition or an
/// idempotency key is written as version 1, so a node of an earlier release still reads it;
/// one with either as the oldest version that carries it (a node of an earlier release cannot
/// apply those: upgrade every node before using them). Tags are persistent (they sit in every
/// WAL): never renumber one.
package struct Command: Equatable, Sendable {
    package var request: RequestID
    package var write: KVWrite

    package func encoded() -> [UInt8] {
        let version: UInt8 = switch (write.change, write.condition, write.idempotency) {
        case (_, _, _?): 3
        case (.one, nil, nil): 1
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
        case let .transaction(transaction):
            writer.writeUInt8(4)
            transaction.encode(to: &writer)
        case .one(.setMember), .one(.removeMember):
            // Membership travels in configuration-change entries, never in commands.
            preconditionFailure("membership is not a client command: \(write)")
        }
        guard version >= 2 else { return writer.bytes }
        switch write.condition {
        case nil:
            writer.writeUInt8(0)
        case .modRevision(let revision):
            writer.writeUInt8(1)
            writer.writeVarint(revision)
        case .exists:
            writer.writeUInt8(2)
        }
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
        let tagOffset = reader.position
        switch try reader.readUInt8() {
        case 1:
            let key = try reader.readLengthPrefixed()
            write = KVWrite(.put(key: key, value: try reader.readLengthPrefixed()))
        case 2:
            write = KVWrite(.delete(key: try reader.readLengthPrefixed()))
        case 3 where version >= 2:
            write = .deletePrefix(try reader.readLengthPrefixed())
        case 4 where version >= 2:
            write = .transaction(try KVTransaction(from: &reader))
        default:
            throw .invalidValue(field: "command operation", offset: tagOffset)
        }
        if version >= 2 {
            let conditionOffset = reader.position
            switch try reader.readUInt8() {
            case 0: break
            case 1: write.condition = .modRevision(try reader.readVarint())
            case 2: write.condition = .exists
            default: throw .invalidValue(field: "command condition", offset: conditionOffset)
            }
            if case .one = write.change {} else if write.condition != nil {
                throw .invalidValue(field: "command condition", offset: conditionOffset)
            }
        }
        if version == 3 {
            let key = try reader.readLengthPrefixed()
            write.idempotency = IdempotencyToken(key: key, time: try reader.readVarint())
        }
        try reader.expectEnd()
    }
}

extension KVWrite {
    var byteCount: Int {
        switch change {
        case .one(let operation): operation.byteCount
        case .deletePrefix(let prefix): prefix.count
        case .transaction(let transaction): transaction.byteCount
        }
    }
}

extension KVTransaction {
    /// How many comparisons, and operations in each branch, a decoded transaction may have:
    /// more than any request can carry (the HTTP API allows 128), less than a corrupt count
    /// could make a decoder loop over.
    static let partsMax = 1 << 16

    var byteCount: Int {
        compare.reduce(0) { total, comparison in
            let operand = if case .bytes(let value) = comparison.operand { value.count } else { 0 }
            return total + comparison.key.count + 16 + operand
        }
            + (success + failure).reduce(0) { $0 + $1.byteCount + 8 }
    }

    /// Layout: the comparisons (a count, then each: key, target tag, relation tag, operand: a
    /// length-prefixed value for `value`, a Boolean for `exists`, else a varint); then the
    /// success and the failure operations (each a count, then each: a tag, 1 put key value,
    /// 2 delete key, 3 delete prefix, 4 get key, 5 list prefix, after (a presence flag, then
    /// the key), limit (varint), values (Boolean)). Tags are persistent.
    func encode(to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(compare.count))
        for comparison in compare {
            writer.writeLengthPrefixed(comparison.key)
            writer.writeUInt8(comparison.target.rawValue)
            writer.writeUInt8(comparison.relation.rawValue)
            switch comparison.operand {
            case .bytes(let value): writer.writeLengthPrefixed(value)
            case .bool(let value): writer.writeBool(value)
            case .number(let value): writer.writeVarint(value)
            }
        }
        for branch in [success, failure] {
            writer.writeVarint(UInt64(branch.count))
            for operation in branch { operation.encode(to: &writer) }
        }
    }

    init(from reader: inout ByteReader) throws(WireError) {
        self.init()
        let comparisons = try reader.readCount(field: "transaction comparisons", limit: Self.partsMax)
        for _ in 0..<comparisons {
            let key = try reader.readLengthPrefixed()
            let targetOffset = reader.position
            guard let target = KVComparison.Target(rawValue: try reader.readUInt8()) else {
                throw .invalidValue(field: "comparison target", offset: targetOffset)
            }
            let relationOffset = reader.position
            guard let relation = KVComparison.Relation(rawValue: try reader.readUInt8()) else {
                throw .invalidValue(field: "comparison relation", offset: relationOffset)
            }
            let operand: KVComparison.Operand = switch target {
            case .value: .bytes(try reader.readLengthPrefixed())
            case .exists: .bool(try reader.readBool(field: "comparison operand"))
            case .modRevision, .createRevision, .version: .number(try reader.readVarint())
            }
            let comparison = KVComparison(key: key, target: target, relation: relation, operand: operand)
            guard comparison.isWellFormed else { throw .invalidValue(field: "comparison relation", offset: relationOffset) }
            compare.append(comparison)
        }
        success = try Self.readOperations(from: &reader)
        failure = try Self.readOperations(from: &reader)
    }

    private static func readOperations(from reader: inout ByteReader) throws(WireError) -> [KVTransactionOperation] {
        let count = try reader.readCount(field: "transaction operations", limit: partsMax)
        var operations: [KVTransactionOperation] = []
        for _ in 0..<count {
            let tagOffset = reader.position
            switch try reader.readUInt8() {
            case 1:
                let key = try reader.readLengthPrefixed()
                operations.append(.put(key: key, value: try reader.readLengthPrefixed()))
            case 2: operations.append(.delete(key: try reader.readLengthPrefixed()))
            case 3: operations.append(.deletePrefix(prefix: try reader.readLengthPrefixed()))
            case 4: operations.append(.get(key: try reader.readLengthPrefixed()))
            case 5:
                let prefix = try reader.readLengthPrefixed()
                let after = try reader.readBool(field: "list after") ? try reader.readLengthPrefixed() : nil
                let limitOffset = reader.position
                let limit = try reader.readCount(field: "list limit", limit: Int(Int32.max))
                guard limit > 0 else { throw .invalidValue(field: "list limit", offset: limitOffset) }
                operations.append(.list(prefix: prefix, after: after, limit: limit, values: try reader.readBool(field: "list values")))
            default:
                throw .invalidValue(field: "transaction operation", offset: tagOffset)
            }
        }
        return operations
    }
}

extension KVTransactionOperation {
    var byteCount: Int {
        switch self {
        case let .put(key, value): key.count + value.count
        case let .delete(key), let .deletePrefix(key), let .get(key): key.count
        case let .list(prefix, after, _, _): prefix.count + (after?.count ?? 0)
        }
    }

    func encode(to writer: inout ByteWriter) {
        switch self {
        case let .put(key, value):
            writer.writeUInt8(1)
            writer.writeLengthPrefixed(key)
            writer.writeLengthPrefixed(value)
        case let .delete(key):
            writer.writeUInt8(2)
            writer.writeLengthPrefixed(key)
        case let .deletePrefix(prefix):
            writer.writeUInt8(3)
            writer.writeLengthPrefixed(prefix)
        case let .get(key):
            writer.writeUInt8(4)
            writer.writeLengthPrefixed(key)
        case let .list(prefix, after, limit, values):
            writer.writeUInt8(5)
            writer.writeLengthPrefixed(prefix)
            writer.writeBool(after != nil)
            if let after { writer.writeLengthPrefixed(after) }
            writer.writeVarint(UInt64(limit))
            writer.writeBool(values)
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
