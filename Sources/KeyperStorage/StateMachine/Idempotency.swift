import KeyperWire

/// A client's `Idempotency-Key` on a write, and when the node that took the request made it
/// a write: milliseconds of the Unix epoch on that node's wall clock. Carried in the log
/// entry, so every replica decides a retry alike.
public struct IdempotencyToken: Hashable, Sendable {
    public var key: [UInt8]
    public var time: UInt64

    public init(key: [UInt8], time: UInt64) {
        self.key = key
        self.time = time
    }
}

/// What the store remembers of a write that carried an idempotency key: enough to answer a
/// retry with the first attempt's result instead of applying it again.
struct IdempotencyRecord: Equatable, Sendable {
    var key: [UInt8]
    /// ``KVWrite/fingerprint``: a retry must ask for the same change.
    var fingerprint: UInt64
    var time: UInt64
    /// How many records were inserted before this one, ever.
    var sequence: UInt64
    /// The bytes of every record inserted before this one, ever.
    var bytesBefore: UInt64
    /// ``KVWriteResult/encoded()`` of the result (``KVWriteResult/alreadyApplied(revision:)``
    /// when the result was larger than ``IdempotencyTable/resultBytesMax``).
    var result: [UInt8]

    /// What the record counts against the table's bound.
    var bytes: UInt64 { UInt64(key.count + result.count + 40) }

    func encode(to writer: inout ByteWriter) {
        writer.writeLengthPrefixed(key)
        writer.writeUInt64(fingerprint)
        writer.writeUInt64(time)
        writer.writeUInt64(sequence)
        writer.writeUInt64(bytesBefore)
        writer.writeLengthPrefixed(result)
    }

    init(key: [UInt8], fingerprint: UInt64, time: UInt64, sequence: UInt64, bytesBefore: UInt64, result: [UInt8]) {
        self.key = key
        self.fingerprint = fingerprint
        self.time = time
        self.sequence = sequence
        self.bytesBefore = bytesBefore
        self.result = result
    }

    init(from reader: inout ByteReader) throws(WireError) {
        key = try reader.readLengthPrefixed()
        fingerprint = try reader.readUInt64()
        time = try reader.readUInt64()
        sequence = try reader.readUInt64()
        bytesBefore = try reader.readUInt64()
        result = try reader.readLengthPrefixed()
    }
}

/// The writes with idempotency keys the store remembers: part of the replicated state, so
/// every replica, a restarted one and one installed from a snapshot answer a retry alike.
///
/// Whether a record still counts is a function of the log alone, never of when a replica
/// happened to apply or prune: a record counts while it is at most ``retentionMilliseconds``
/// older than the newest record (or than the retry asking), and fewer than ``recordsMax``
/// records and ``bytesMax`` bytes were inserted after it. Lookups check exactly that;
/// records that no longer count are dropped from memory when convenient (``prune()``).
/// The bounds are part of the state machine's definition, not settings: replicas that
/// disagreed on them would answer a retry differently.
struct IdempotencyTable: Sendable {
    static let retentionMilliseconds: UInt64 = 10 * 60 * 1000
    static let recordsMax: UInt64 = 100_000
    static let bytesMax: UInt64 = 16 << 20
    /// A result larger than this (a transaction that read much) is not kept: a retry learns
    /// only that it was applied, and at which revision.
    static let resultBytesMax = 64 << 10

    /// Where the log is: what decides whether a record still counts. A batch being planned
    /// moves a copy of them past each record it makes, so a later write of the same batch
    /// sees exactly what it would see applied alone.
    struct Counters: Sendable {
        /// The newest time of any record inserted.
        var latest: UInt64 = 0
        /// Records inserted ever, and their bytes.
        var inserted: UInt64 = 0
        var bytesInserted: UInt64 = 0

        /// Whether `record` still counts for a request made at `time`.
        func counts(_ record: IdempotencyRecord, at time: UInt64) -> Bool {
            record.time &+ IdempotencyTable.retentionMilliseconds >= max(latest, time)
                && inserted - record.sequence <= IdempotencyTable.recordsMax
                && bytesInserted - record.bytesBefore <= IdempotencyTable.bytesMax
        }

        /// The record a write made at `time` with `fingerprint` and `result` becomes,
        /// numbered after every record so far; the counters move past it.
        mutating func record(key: [UInt8], fingerprint: UInt64, time: UInt64, result: KVWriteResult) -> IdempotencyRecord {
            var encoded = result.encoded()
            if encoded.count > IdempotencyTable.resultBytesMax { encoded = KVWriteResult.alreadyApplied(revision: result.revision).encoded() }
            let record = IdempotencyRecord(key: key, fingerprint: fingerprint, time: time, sequence: inserted,
                                           bytesBefore: bytesInserted, result: encoded)
            advance(past: record)
            return record
        }

        mutating func advance(past record: IdempotencyRecord) {
            latest = max(latest, record.time)
            inserted = max(inserted, record.sequence + 1)
            bytesInserted = max(bytesInserted, record.bytesBefore + record.bytes)
        }
    }

    private(set) var records: [[UInt8]: IdempotencyRecord] = [:]
    private(set) var counters = Counters()
    /// Keys in the order they were inserted, from `head` on, for ``prune()``.
    private var order: [(sequence: UInt64, key: [UInt8])] = []
    private var head = 0

    init() {}

    init(counters: Counters, records: [IdempotencyRecord]) {
        self.counters = counters
        for record in records.sorted(by: { $0.sequence < $1.sequence }) { insert(record) }
    }

    var count: Int { records.count }

    /// The record for `key`, if it still counts for a request made at `time` with the log at
    /// `counters`.
    func lookUp(_ key: [UInt8], at time: UInt64, counters: Counters) -> IdempotencyRecord? {
        guard let record = records[key], counters.counts(record, at: time) else { return nil }
        return record
    }

    /// Inserts a record (a new one from ``Counters/record(key:fingerprint:time:result:)``, or
    /// one replayed from the files).
    mutating func insert(_ record: IdempotencyRecord) {
        records[record.key] = record
        order.append((record.sequence, record.key))
        counters.advance(past: record)
    }

    /// Drops the oldest records that no longer count.
    mutating func prune() {
        while head < order.count {
            let (sequence, key) = order[head]
            if let record = records[key], record.sequence == sequence {
                guard !counters.counts(record, at: 0) else { break }
                records[key] = nil
            }
            head += 1
        }
        if head > 1024 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }

    /// The checkpoint's section: the counters, then every record.
    func encode(to writer: inout ByteWriter) {
        writer.writeUInt64(counters.latest)
        writer.writeUInt64(counters.inserted)
        writer.writeUInt64(counters.bytesInserted)
        writer.writeUInt32(UInt32(records.count))
        for record in records.values.sorted(by: { $0.sequence < $1.sequence }) { record.encode(to: &writer) }
    }

    init(from reader: inout ByteReader) throws(WireError) {
        let counters = Counters(latest: try reader.readUInt64(), inserted: try reader.readUInt64(), bytesInserted: try reader.readUInt64())
        let countOffset = reader.position
        let count = Int(try reader.readUInt32())
        guard count <= reader.remaining else { throw .invalidValue(field: "idempotency record count", offset: countOffset) }
        var records: [IdempotencyRecord] = []
        for _ in 0..<count { records.append(try IdempotencyRecord(from: &reader)) }
        self.init(counters: counters, records: records)
    }
}

extension KVWriteResult {
    /// The store revision the result names (0 for a failed condition, which names none).
    var revision: UInt64 {
        switch self {
        case .applied(let revision, _), .deletedPrefix(_, let revision), .alreadyApplied(let revision), .revoked(_, let revision): revision
        case .transaction(let result): result.revision
        case .replayed(let result): result.revision
        case .conditionFailed, .idempotencyKeyReused, .leaseNotFound, .leaseExists: 0
        }
    }

    /// Layout: a tag, then 1 applied: revision, whether the key's revisions follow, they;
    /// 2 condition failed: the mod revision; 3 prefix delete: count, revision; 4 transaction:
    /// succeeded, revision, the results (a count, then each a tag: 1 put revisions, 2 delete
    /// count, 3 prefix delete count, 4 get: found, then value and revisions, 5 list: a count of
    /// entries, each key, revisions, value, then whether a cursor follows, and it); 5 applied
    /// earlier: revision; 6 lease not found: the id; 7 lease exists: the id; 8 revoked: count,
    /// revision. Persistent (idempotency records in the files): never renumber.
    func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 48)
        func revisions(_ revisions: KeyRevisions) {
            writer.writeVarint(revisions.create)
            writer.writeVarint(revisions.mod)
            writer.writeVarint(revisions.version)
        }
        switch self {
        case let .applied(revision, key):
            writer.writeUInt8(1)
            writer.writeVarint(revision)
            writer.writeBool(key != nil)
            if let key { revisions(key) }
        case let .conditionFailed(modRevision):
            writer.writeUInt8(2)
            writer.writeVarint(modRevision)
        case let .deletedPrefix(count, revision):
            writer.writeUInt8(3)
            writer.writeVarint(UInt64(count))
            writer.writeVarint(revision)
        case let .transaction(result):
            writer.writeUInt8(4)
            writer.writeBool(result.succeeded)
            writer.writeVarint(result.revision)
            writer.writeVarint(UInt64(result.results.count))
            for operation in result.results {
                switch operation {
                case .put(let put):
                    writer.writeUInt8(1)
                    revisions(put)
                case .delete(let count):
                    writer.writeUInt8(2)
                    writer.writeVarint(UInt64(count))
                case .deletePrefix(let count):
                    writer.writeUInt8(3)
                    writer.writeVarint(UInt64(count))
                case .get(let found):
                    writer.writeUInt8(4)
                    writer.writeBool(found != nil)
                    if let found {
                        writer.writeLengthPrefixed(found.value)
                        revisions(found.revisions)
                    }
                case let .list(entries, nextAfter):
                    writer.writeUInt8(5)
                    writer.writeVarint(UInt64(entries.count))
                    for (key, found) in entries {
                        writer.writeLengthPrefixed(key)
                        revisions(found.revisions)
                        writer.writeLengthPrefixed(found.value)
                    }
                    writer.writeBool(nextAfter != nil)
                    if let nextAfter { writer.writeLengthPrefixed(nextAfter) }
                }
            }
        case let .alreadyApplied(revision):
            writer.writeUInt8(5)
            writer.writeVarint(revision)
        case let .leaseNotFound(id):
            writer.writeUInt8(6)
            writer.writeVarint(id)
        case let .leaseExists(id):
            writer.writeUInt8(7)
            writer.writeVarint(id)
        case let .revoked(count, revision):
            writer.writeUInt8(8)
            writer.writeVarint(UInt64(count))
            writer.writeVarint(revision)
        case .replayed(let result):
            return result.encoded()
        case .idempotencyKeyReused:
            preconditionFailure("a refused retry is not remembered")
        }
        return writer.bytes
    }

    init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = ByteReader(bytes)
        func revisions() throws(WireError) -> KeyRevisions {
            KeyRevisions(create: try reader.readVarint(), mod: try reader.readVarint(), version: try reader.readVarint())
        }
        /// A number of keys (no bound from the encoding's size: a prefix delete of a million
        /// keys encodes in a few bytes).
        func count() throws(WireError) -> Int { try reader.readCount(field: "result count", limit: Int(Int32.max)) }
        /// A number of items that follow in the encoding, each at least a byte.
        func items() throws(WireError) -> Int { try reader.readCount(field: "result count", limit: bytes.count) }
        let tagOffset = reader.position
        switch try reader.readUInt8() {
        case 1:
            let revision = try reader.readVarint()
            self = .applied(revision: revision, key: try reader.readBool() ? try revisions() : nil)
        case 2:
            self = .conditionFailed(modRevision: try reader.readVarint())
        case 3:
            let count = try count()
            self = .deletedPrefix(count: count, revision: try reader.readVarint())
        case 4:
            let succeeded = try reader.readBool()
            let revision = try reader.readVarint()
            var results: [KVTransactionOperationResult] = []
            for _ in 0..<(try items()) {
                let operationOffset = reader.position
                switch try reader.readUInt8() {
                case 1: results.append(.put(try revisions()))
                case 2: results.append(.delete(count: try count()))
                case 3: results.append(.deletePrefix(count: try count()))
                case 4:
                    if try reader.readBool() {
                        let value = try reader.readLengthPrefixed()
                        results.append(.get(KVStore.VersionedValue(value: value, revisions: try revisions())))
                    } else {
                        results.append(.get(nil))
                    }
                case 5:
                    var entries: [(key: [UInt8], value: KVStore.VersionedValue)] = []
                    for _ in 0..<(try items()) {
                        let key = try reader.readLengthPrefixed()
                        let found = try revisions()
                        entries.append((key, KVStore.VersionedValue(value: try reader.readLengthPrefixed(), revisions: found)))
                    }
                    results.append(.list(entries: entries, nextAfter: try reader.readBool() ? try reader.readLengthPrefixed() : nil))
                default:
                    throw .invalidValue(field: "transaction result", offset: operationOffset)
                }
            }
            self = .transaction(KVTransactionResult(succeeded: succeeded, revision: revision, results: results))
        case 5:
            self = .alreadyApplied(revision: try reader.readVarint())
        case 6:
            self = .leaseNotFound(try reader.readVarint())
        case 7:
            self = .leaseExists(try reader.readVarint())
        case 8:
            let count = try count()
            self = .revoked(count: count, revision: try reader.readVarint())
        default:
            throw .invalidValue(field: "write result", offset: tagOffset)
        }
        try reader.expectEnd()
    }
}

extension KVWrite {
    /// A hash of the change and its condition (not of the idempotency token), the same in
    /// every process and release: a retry with the same key must ask for the same change.
    /// 64-bit FNV-1a of their binary form (``encodeChange(to:)``, ``encodeCondition(to:)``).
    public var fingerprint: UInt64 {
        var writer = ByteWriter(capacity: 32 + byteCount)
        encodeChange(to: &writer)
        encodeCondition(to: &writer)
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in writer.bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return hash
    }
}
