/// A transaction: if every comparison holds, the `success` operations run, else the `failure`
/// ones; in order, atomically, as one change of the store (one revision for all its writes).
/// An operation sees the earlier ones of the same transaction.
public struct KVTransaction: Hashable, Sendable {
    public var compare: [KVComparison]
    public var success: [KVTransactionOperation]
    public var failure: [KVTransactionOperation]

    public init(compare: [KVComparison] = [], success: [KVTransactionOperation] = [], failure: [KVTransactionOperation] = []) {
        self.compare = compare
        self.success = success
        self.failure = failure
    }

    /// No operation of either branch writes: the transaction is a read, and needs no log entry.
    public var isReadOnly: Bool {
        !(success + failure).contains { $0.writes }
    }

    /// Why the transaction may not run, naming the field (as the request spelled it), or nil.
    /// Refused: within one branch, two puts of the same key, and a put of a key that a delete
    /// of the branch also covers (what would the key be after?), as etcd refuses them.
    public func conflict() -> String? {
        for (name, operations) in [("success", success), ("failure", failure)] {
            var put: [[UInt8]: Int] = [:]
            for (position, operation) in operations.enumerated() {
                guard case .put(let key, _) = operation else { continue }
                if let earlier = put[key] {
                    return "\(name)[\(position)]: the key was put by \(name)[\(earlier)] already (one put per key in a transaction)"
                }
                put[key] = position
            }
            for (position, operation) in operations.enumerated() {
                let covered: (([UInt8]) -> Bool)? = switch operation {
                case .delete(let key): { $0 == key }
                case .deletePrefix(let prefix): { $0.starts(with: prefix) }
                default: nil
                }
                guard let covered, let (key, at) = put.first(where: { covered($0.key) }).map({ ($0.key, $0.value) }) else { continue }
                return "\(name)[\(position)]: deletes \(String(decoding: key, as: UTF8.self)), which \(name)[\(at)] puts (a key is put or deleted in a transaction, not both)"
            }
        }
        return nil
    }
}

/// A comparison of one key's state with a constant. An absent key has revisions and version
/// 0; a comparison of an absent key's value never holds (as in etcd).
public struct KVComparison: Hashable, Sendable {
    /// Persistent tags (they travel in log entries): never renumber one.
    public enum Target: UInt8, Hashable, Sendable, CaseIterable {
        case modRevision = 1
        case createRevision = 2
        case version = 3
        case value = 4
        /// Whether the key exists: compared with a Boolean, by `==` or `!=`.
        case exists = 5
    }

    public enum Relation: UInt8, Hashable, Sendable, CaseIterable {
        case equal = 1
        case notEqual = 2
        case less = 3
        case greater = 4
    }

    /// What the key is compared with: a number for revisions and the version, bytes for the
    /// value, a Boolean for existence.
    public enum Operand: Hashable, Sendable {
        case number(UInt64)
        case bytes([UInt8])
        case bool(Bool)
    }

    public var key: [UInt8]
    public var target: Target
    public var relation: Relation
    public var operand: Operand

    public init(key: [UInt8], target: Target, relation: Relation, operand: Operand) {
        self.key = key
        self.target = target
        self.relation = relation
        self.operand = operand
    }

    /// Whether the operand is of the kind the target compares with (and `exists` takes only
    /// `==` and `!=`).
    public var isWellFormed: Bool {
        switch (target, operand) {
        case (.modRevision, .number), (.createRevision, .number), (.version, .number), (.value, .bytes): true
        case (.exists, .bool): relation == .equal || relation == .notEqual
        default: false
        }
    }

    /// Whether it holds for a key in state `found` (nil: absent). `value` gives the key's
    /// value; called only for a value comparison of a present key.
    func holds(for found: KeyRevisions?, value: () throws -> [UInt8]) rethrows -> Bool {
        let order: Int
        switch (target, operand) {
        case (.exists, .bool(let expected)):
            order = (found != nil) == expected ? 0 : 1
        case (.value, .bytes(let expected)):
            guard found != nil else { return false }
            order = KeyIndex<Int>.compare(try value(), expected)
        case (_, .number(let expected)):
            let actual = switch target {
            case .modRevision: found?.mod ?? 0
            case .createRevision: found?.create ?? 0
            default: found?.version ?? 0
            }
            order = actual < expected ? -1 : actual > expected ? 1 : 0
        default:
            return false
        }
        return switch relation {
        case .equal: order == 0
        case .notEqual: order != 0
        case .less: order < 0
        case .greater: order > 0
        }
    }
}

/// One operation of a transaction.
public enum KVTransactionOperation: Hashable, Sendable {
    case put(key: [UInt8], value: [UInt8])
    /// Deletes the key if it exists.
    case delete(key: [UInt8])
    /// Deletes every key that starts with the prefix.
    case deletePrefix(prefix: [UInt8])
    case get(key: [UInt8])
    /// Keys in byte order that start with `prefix` and sort after `after`, at most `limit`,
    /// with their revisions (and values when `values`).
    case list(prefix: [UInt8], after: [UInt8]?, limit: Int, values: Bool)

    var writes: Bool {
        switch self {
        case .put, .delete, .deletePrefix: true
        case .get, .list: false
        }
    }
}

/// What a transaction did.
public struct KVTransactionResult: Equatable, Sendable {
    /// Whether every comparison held (the `success` branch ran).
    public var succeeded: Bool
    /// The store revision after it: one more than before when it changed anything.
    public var revision: UInt64
    /// One per operation of the branch that ran, in order.
    public var results: [KVTransactionOperationResult]

    public init(succeeded: Bool, revision: UInt64, results: [KVTransactionOperationResult]) {
        self.succeeded = succeeded
        self.revision = revision
        self.results = results
    }
}

public enum KVTransactionOperationResult: Equatable, Sendable {
    /// The key's revisions after the put.
    case put(KeyRevisions)
    /// How many keys the delete removed (0 or 1; any number for a prefix).
    case delete(count: Int)
    case deletePrefix(count: Int)
    /// The value and revisions (nil: absent) as the transaction saw them.
    case get(KVStore.VersionedValue?)
    case list(entries: [(key: [UInt8], value: KVStore.VersionedValue)], nextAfter: [UInt8]?)

    public static func == (lhs: Self, rhs: Self) -> Bool {
        switch (lhs, rhs) {
        case let (.put(a), .put(b)): a == b
        case let (.delete(a), .delete(b)), let (.deletePrefix(a), .deletePrefix(b)): a == b
        case let (.get(a), .get(b)): a == b
        case let (.list(a, nextA), .list(b, nextB)):
            nextA == nextB && a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: false
        }
    }
}

extension KVStore {
    /// Where a value a transaction read lies: in the batch itself, or at a location of a
    /// segment (read once the tables lock is released: the bytes there never change, and the
    /// file stays open while it is held).
    enum ValueSource {
        case inline([UInt8])
        case stored(SegmentFile, Location)

        func read() throws -> [UInt8] {
            switch self {
            case .inline(let value): value
            case let .stored(file, location): try file.read(at: Int(location.offset), count: Int(location.length))
            }
        }
    }

    /// A transaction's result with the values it read still to be fetched.
    struct PlannedTransaction {
        enum Result {
            case done(KVTransactionOperationResult)
            case get(KeyRevisions, ValueSource)
            case list([(key: [UInt8], revisions: KeyRevisions, value: ValueSource?)], nextAfter: [UInt8]?)
        }

        var succeeded: Bool
        var revision: UInt64
        var results: [Result]

        /// Reads the values and answers the result.
        func fetch() throws -> KVTransactionResult {
            let results = try results.map { result -> KVTransactionOperationResult in
                switch result {
                case .done(let done): return done
                case let .get(revisions, source): return .get(VersionedValue(value: try source.read(), revisions: revisions))
                case let .list(entries, nextAfter):
                    return .list(entries: try entries.map { key, revisions, source in
                        (key: key, value: VersionedValue(value: try source?.read() ?? [], revisions: revisions))
                    }, nextAfter: nextAfter)
                }
            }
            return KVTransactionResult(succeeded: succeeded, revision: revision, results: results)
        }
    }
}
