import KeyperWire

/// A lease as the replicated state holds it: its TTL, and the keys attached to it. When it
/// is revoked (by a client, or by the leader once its TTL passed without a keepalive), its
/// keys are deleted in one revision. How long it has left is not replicated state: the
/// leader keeps that on its own clock (docs/leases.md).
public struct LeaseInfo: Equatable, Sendable {
    public var id: UInt64
    public var ttlSeconds: UInt64
    /// The attached keys, in byte order (empty when asked for the count only).
    public var keys: [[UInt8]]
    public var keyCount: Int

    public init(id: UInt64, ttlSeconds: UInt64, keys: [[UInt8]], keyCount: Int) {
        self.id = id
        self.ttlSeconds = ttlSeconds
        self.keys = keys
        self.keyCount = keyCount
    }
}

/// Every lease, and which lease each leased key is attached to (only leased keys cost
/// memory). State-machine state like the members: changed by batch operations (grant,
/// revoke, attach), carried whole in every checkpoint, so garbage collection never needs
/// the operations that built it.
struct LeaseTable: Equatable, Sendable {
    struct Lease: Equatable, Sendable {
        var ttlSeconds: UInt64
        /// The table's generation when it was granted: tells a lease from an earlier one that
        /// had the same id (revoked, then granted again).
        var grant: UInt64 = 0
        var keys: Set<[UInt8]> = []
    }

    private(set) var leases: [UInt64: Lease] = [:]
    /// Key → the lease it is attached to.
    private(set) var owners: [[UInt8]: UInt64] = [:]
    /// Changes whenever a lease is granted or revoked (not on attaches): the leader's expiry
    /// clock rereads the leases only then.
    private(set) var generation: UInt64 = 0

    init() {}

    var count: Int { leases.count }

    func ttl(of id: UInt64) -> UInt64? { leases[id]?.ttlSeconds }

    /// The key's lease. Every put and delete asks: without leased keys it costs no hashing.
    func owner(of key: [UInt8]) -> UInt64? { owners.isEmpty ? nil : owners[key] }

    func keys(of id: UInt64) -> Set<[UInt8]> { leases[id]?.keys ?? [] }

    /// Grants `id` (replacing nothing: the plan refuses a taken id).
    mutating func grant(_ id: UInt64, ttlSeconds: UInt64) {
        generation &+= 1
        leases[id] = Lease(ttlSeconds: ttlSeconds, grant: generation)
    }

    /// Removes the lease; its keys were deleted before it (their deletes detached them).
    mutating func revoke(_ id: UInt64) {
        guard let lease = leases.removeValue(forKey: id) else { return }
        for key in lease.keys where owners[key] == id { owners[key] = nil }
        generation &+= 1
    }

    /// Attaches `key` to `lease` (0: to none), detaching it from any other.
    mutating func attach(_ key: [UInt8], to lease: UInt64) {
        if let previous = owners[key] {
            guard previous != lease else { return }
            leases[previous]?.keys.remove(key)
            owners[key] = nil
        }
        guard lease != 0, leases[lease] != nil else { return }
        leases[lease]?.keys.insert(key)
        owners[key] = lease
    }

    /// Takes `other`'s leases (a checkpoint's, a snapshot's), as a change the expiry clock sees.
    mutating func replace(with other: LeaseTable) {
        let generation = self.generation &+ 1
        self = other
        // Every lease counts as granted now: none may keep an expiry clock's deadline of a
        // lease it only shares an id with.
        for id in leases.keys { leases[id]?.grant = generation }
        self.generation = generation
    }

    /// A deleted key belongs to no lease.
    mutating func detach(_ key: [UInt8]) {
        guard !owners.isEmpty else { return }
        attach(key, to: 0)
    }

    func info(_ id: UInt64, withKeys: Bool) -> LeaseInfo? {
        guard let lease = leases[id] else { return nil }
        let keys = withKeys ? lease.keys.sorted { $0.lexicographicallyPrecedes($1) } : []
        return LeaseInfo(id: id, ttlSeconds: lease.ttlSeconds, keys: keys, keyCount: lease.keys.count)
    }

    /// Every lease's id and TTL, by id.
    var all: [(id: UInt64, ttlSeconds: UInt64)] {
        leases.map { ($0.key, $0.value.ttlSeconds) }.sorted { $0.id < $1.id }
    }

    /// Every lease's id, TTL and grant (``Lease/grant``), by id.
    var grants: [(id: UInt64, ttlSeconds: UInt64, grant: UInt64)] {
        leases.map { ($0.key, $0.value.ttlSeconds, $0.value.grant) }.sorted { $0.id < $1.id }
    }

    /// The checkpoint's section (format 3): the count, then each lease by id: id, TTL, its
    /// key count and keys (length-prefixed), in byte order.
    func encode(to writer: inout ByteWriter) {
        writer.writeUInt32(UInt32(leases.count))
        for (id, lease) in leases.sorted(by: { $0.key < $1.key }) {
            writer.writeUInt64(id)
            writer.writeUInt64(lease.ttlSeconds)
            writer.writeUInt32(UInt32(lease.keys.count))
            for key in lease.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) { writer.writeLengthPrefixed(key) }
        }
    }

    init(from reader: inout ByteReader) throws(WireError) {
        let countOffset = reader.position
        let count = Int(try reader.readUInt32())
        guard count <= reader.remaining else { throw .invalidValue(field: "lease count", offset: countOffset) }
        for _ in 0..<count {
            let idOffset = reader.position
            let id = try reader.readUInt64()
            guard id != 0, leases[id] == nil else { throw .invalidValue(field: "lease id", offset: idOffset) }
            grant(id, ttlSeconds: try reader.readUInt64())
            let keysOffset = reader.position
            let keys = Int(try reader.readUInt32())
            guard keys <= reader.remaining else { throw .invalidValue(field: "lease key count", offset: keysOffset) }
            for _ in 0..<keys { attach(try reader.readLengthPrefixed(), to: id) }
        }
    }
}
