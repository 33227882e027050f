import KeyperWire

/// The binary form of a client's write, as Raft entries carry it (the replica's `Command`
/// wraps it) and as its idempotency fingerprint hashes it. Tags are persistent (they sit in
/// every WAL): never renumber one.
extension KVWrite {
    /// The change: an operation tag (`UInt8`: 1 put, 2 delete, 3 delete every key with a
    /// prefix, 4 transaction, 5 grant a lease, 6 revoke a lease, 7 put with a lease), then the
    /// key or prefix (length-prefixed), the value (length-prefixed, puts only), the
    /// transaction (``KVTransaction/encode(to:)``), a lease id (varint: a revoke, a grant then
    /// its TTL in seconds, a put with a lease after its value).
    package func encodeChange(to writer: inout ByteWriter) {
        switch change {
        case let .one(.put(key, value)):
            writer.writeUInt8(lease == nil ? 1 : 7)
            writer.writeLengthPrefixed(key)
            writer.writeLengthPrefixed(value)
            if let lease { writer.writeVarint(lease) }
        case let .one(.delete(key)):
            writer.writeUInt8(2)
            writer.writeLengthPrefixed(key)
        case let .deletePrefix(prefix):
            writer.writeUInt8(3)
            writer.writeLengthPrefixed(prefix)
        case let .transaction(transaction):
            writer.writeUInt8(4)
            transaction.encode(to: &writer)
        case let .one(.grantLease(id, ttl)):
            writer.writeUInt8(5)
            writer.writeVarint(id)
            writer.writeVarint(ttl)
        case let .one(.revokeLease(id)):
            writer.writeUInt8(6)
            writer.writeVarint(id)
        case .one(.setMember), .one(.removeMember), .one(.attachLease):
            // Membership travels in configuration-change entries, and attaches are what
            // applying a put records: never client writes.
            preconditionFailure("not a client write: \(self)")
        }
    }

    /// The condition: a tag (`UInt8`: 0 none, 1 mod revision then the revision as a varint,
    /// 2 the key exists).
    package func encodeCondition(to writer: inout ByteWriter) {
        switch condition {
        case nil:
            writer.writeUInt8(0)
        case .modRevision(let revision):
            writer.writeUInt8(1)
            writer.writeVarint(revision)
        case .exists:
            writer.writeUInt8(2)
        }
    }

    /// Reads ``encodeChange(to:)``; `onlyOneKey`: only a put or a delete of one key is
    /// allowed (the oldest command format).
    package init(decodingChangeFrom reader: inout ByteReader, onlyOneKey: Bool) throws(WireError) {
        let tagOffset = reader.position
        switch try reader.readUInt8() {
        case 1:
            let key = try reader.readLengthPrefixed()
            self.init(.put(key: key, value: try reader.readLengthPrefixed()))
        case 2:
            self.init(.delete(key: try reader.readLengthPrefixed()))
        case 3 where !onlyOneKey:
            self = .deletePrefix(try reader.readLengthPrefixed())
        case 4 where !onlyOneKey:
            self = .transaction(try KVTransaction(from: &reader))
        case 5 where !onlyOneKey:
            let id = try reader.readVarint()
            self.init(.grantLease(id: id, ttlSeconds: try reader.readVarint()))
        case 6 where !onlyOneKey:
            self.init(.revokeLease(id: try reader.readVarint()))
        case 7 where !onlyOneKey:
            let key = try reader.readLengthPrefixed()
            let value = try reader.readLengthPrefixed()
            self.init(.put(key: key, value: value), lease: try reader.readVarint())
        default:
            throw .invalidValue(field: "command operation", offset: tagOffset)
        }
    }

    /// Reads ``encodeCondition(to:)`` into `condition`; only a write of one key takes one.
    package mutating func decodeCondition(from reader: inout ByteReader) throws(WireError) {
        let conditionOffset = reader.position
        switch try reader.readUInt8() {
        case 0: condition = nil
        case 1: condition = .modRevision(try reader.readVarint())
        case 2: condition = .exists
        default: throw .invalidValue(field: "command condition", offset: conditionOffset)
        }
        if case .one = change {} else if condition != nil {
            throw .invalidValue(field: "command condition", offset: conditionOffset)
        }
    }
}

extension KVWrite {
    /// Whether the oldest command format (a put or a delete of one key, nothing more) holds it.
    package var fitsFirstCommandFormat: Bool {
        guard condition == nil, idempotency == nil, lease == nil else { return false }
        switch change {
        case .one(.put), .one(.delete): return true
        default: return false
        }
    }

    package var byteCount: Int {
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
    package static let partsMax = 1 << 16

    package var byteCount: Int {
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
    package func encode(to writer: inout ByteWriter) {
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

    package init(from reader: inout ByteReader) throws(WireError) {
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
    package var byteCount: Int {
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
    package var byteCount: Int {
        switch self {
        case let .put(key, value): key.count + value.count
        case let .delete(key), let .attachLease(key, _): key.count
        case .setMember, .removeMember, .grantLease, .revokeLease: 0
        }
    }
}
