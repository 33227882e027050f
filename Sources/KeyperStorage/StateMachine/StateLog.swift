import CLinux
import KeyperWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The on-disk format of the state machine's log (docs/storage-at-scale.md): segment files of
/// CRC32C-framed records, appended and never changed.
///
/// A segment file is the 8-byte magic `KEYPSEG3` (or an older format, still read: format 2 is
/// format 3 without leases, format 1 is format 2 without idempotency records), then records.
/// A record is its payload's length (u32, little-endian), the payload's CRC32C (u32), and the
/// payload, whose first byte is its kind:
/// - a **batch** (kind 1): the applied index and the store revision it sets (0: unchanged),
///   then its operations; a put carries the key's revisions (``KeyRevisions``) with its value;
///   a remember operation (format 2) an idempotency record (``IdempotencyRecord``); lease
///   operations (format 3) grant (id, TTL), revoke (id) or attach (key, lease; 0 detaches),
///   and a delete detaches its key;
/// - a **checkpoint** (kind 2): whether it is a base (nothing in older files counts), the
///   applied and durable indexes, the store revision, every member, (format 2) the
///   idempotency table and (format 3) the leases with their keys: the first record of every
///   segment, so a segment's members and tables never depend on older segments (a put
///   that garbage collection moves never changes a key's lease);
/// - a **durable mark** (kind 3): the applied index an fsync made durable.
///
/// Later records win. A snapshot file has the same format: a base checkpoint, then the
/// records of every segment it copies.
enum StateLog {
    /// The segment format this build writes and reads: the magic's last character.
    static let formatVersion = 3
    /// The oldest format this build still reads.
    static let oldestFormatVersion = 1
    static let magicPrefix: [UInt8] = Array("KEYPSEG".utf8)
    static let magic: [UInt8] = magicPrefix + Array("\(formatVersion)".utf8)
    static let recordHeaderBytes = 8

    enum Kind: UInt8 {
        case batch = 1
        case checkpoint = 2
        case durable = 3
    }

    enum Tag: UInt8 {
        case put = 1
        case delete = 2
        case setMember = 3
        case removeMember = 4
        case remember = 5
        case grantLease = 6
        case revokeLease = 7
        case attachLease = 8
    }

    /// Bytes one put takes in a batch beyond its key and value (the tag, two lengths and the
    /// revisions): what a live key costs its segment, for garbage collection's accounting.
    static let operationOverhead = 33

    /// A segment's file name: its number in 16 hex digits.
    static func fileName(_ id: UInt32) -> String {
        let digits = String(id, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits + ".seg"
    }

    static func segmentID(fileName: String) -> UInt32? {
        guard fileName.hasSuffix(".seg"), fileName.count == 20 else { return nil }
        return UInt32(fileName.prefix(16), radix: 16)
    }

    // MARK: Encoding

    /// Appends a framed record whose payload `body` writes; returns where the payload starts
    /// in `writer` (the offsets `body` sees are relative to that).
    @discardableResult
    static func appendRecord(to writer: inout ByteWriter, _ body: (inout ByteWriter) -> Void) -> Int {
        let headerAt = writer.count
        writer.writeUInt32(0)
        writer.writeUInt32(0)
        let payloadAt = writer.count
        body(&writer)
        let length = writer.count - payloadAt
        precondition(length <= Int(UInt32.max), "record of \(length) bytes")
        let crc = writer.bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[payloadAt...])) }
        writer.patchUInt32(UInt32(length), at: headerAt)
        writer.patchUInt32(crc, at: headerAt + 4)
        return payloadAt
    }

    /// Writes a batch's payload: `revisions` holds one entry per put, in order. Calls
    /// `valueAt` with where each put's value lies (offset relative to the start of `writer`, length).
    /// `remembered`: idempotency records, written after the operations.
    static func encodeBatch(_ operations: [KVOperation], revisions: [KeyRevisions], remembered: [IdempotencyRecord] = [],
                            appliedIndex: UInt64, revision: UInt64, into writer: inout ByteWriter, valueAt: (Int, Int) -> Void) {
        writer.writeUInt8(Kind.batch.rawValue)
        writer.writeUInt64(appliedIndex)
        writer.writeUInt64(revision)
        writer.writeUInt32(UInt32(operations.count + remembered.count))
        var nextPut = 0
        for operation in operations {
            switch operation {
            case let .put(key, value):
                let put = revisions[nextPut]
                nextPut += 1
                writer.writeUInt8(Tag.put.rawValue)
                writer.writeUInt32(UInt32(key.count))
                writer.writeRaw(key)
                writer.writeUInt64(put.create)
                writer.writeUInt64(put.mod)
                writer.writeUInt64(put.version)
                writer.writeUInt32(UInt32(value.count))
                valueAt(writer.count, value.count)
                writer.writeRaw(value)
            case let .delete(key):
                writer.writeUInt8(Tag.delete.rawValue)
                writer.writeUInt32(UInt32(key.count))
                writer.writeRaw(key)
            case let .setMember(id, raftAddress, httpAddress, promote):
                writer.writeUInt8(Tag.setMember.rawValue)
                writer.writeString(id)
                writer.writeString(raftAddress)
                writer.writeString(httpAddress)
                writer.writeBool(promote)
            case let .removeMember(id):
                writer.writeUInt8(Tag.removeMember.rawValue)
                writer.writeString(id)
            case let .grantLease(id, ttl):
                writer.writeUInt8(Tag.grantLease.rawValue)
                writer.writeUInt64(id)
                writer.writeUInt64(ttl)
            case let .revokeLease(id):
                writer.writeUInt8(Tag.revokeLease.rawValue)
                writer.writeUInt64(id)
            case let .attachLease(key, lease):
                writer.writeUInt8(Tag.attachLease.rawValue)
                writer.writeUInt32(UInt32(key.count))
                writer.writeRaw(key)
                writer.writeUInt64(lease)
            }
        }
        for record in remembered {
            writer.writeUInt8(Tag.remember.rawValue)
            record.encode(to: &writer)
        }
    }

    static func encodeCheckpoint(base: Bool, applied: UInt64, durable: UInt64, revision: UInt64, members: [MemberRecord],
                                 idempotency: IdempotencyTable, leases: LeaseTable, into writer: inout ByteWriter) {
        writer.writeUInt8(Kind.checkpoint.rawValue)
        writer.writeBool(base)
        writer.writeUInt64(applied)
        writer.writeUInt64(durable)
        writer.writeUInt64(revision)
        writer.writeUInt32(UInt32(members.count))
        for member in members.sorted(by: { $0.id < $1.id }) {
            writer.writeString(member.id)
            writer.writeString(member.raftAddress)
            writer.writeString(member.httpAddress)
            writer.writeBool(member.promote)
        }
        idempotency.encode(to: &writer)
        leases.encode(to: &writer)
    }

    /// A new segment's bytes: the magic and its checkpoint.
    static func segmentHeader(base: Bool, applied: UInt64, durable: UInt64, revision: UInt64, members: [MemberRecord],
                              idempotency: IdempotencyTable = IdempotencyTable(), leases: LeaseTable = LeaseTable()) -> [UInt8] {
        var writer = ByteWriter(capacity: 256)
        writer.writeRaw(magic)
        appendRecord(to: &writer) {
            encodeCheckpoint(base: base, applied: applied, durable: durable, revision: revision, members: members,
                             idempotency: idempotency, leases: leases, into: &$0)
        }
        return writer.bytes
    }

    // MARK: Decoding

    /// One decoded record, with what replay needs: keys with where their values lie (offsets
    /// within the file), not the values themselves.
    enum Record {
        case batch(applied: UInt64, revision: UInt64, operations: [Operation])
        case checkpoint(base: Bool, applied: UInt64, durable: UInt64, revision: UInt64, members: [MemberRecord],
                        idempotency: IdempotencyTable, leases: LeaseTable)
        case durable(UInt64)
    }

    enum Operation {
        /// `valueOffset` is the value's offset in the file; `valueRange` its range in the payload.
        case put(key: [UInt8], revisions: KeyRevisions, valueOffset: Int, valueRange: Range<Int>)
        case delete(key: [UInt8])
        case setMember(MemberRecord)
        case removeMember(id: String)
        case remember(IdempotencyRecord)
        /// A grant, a revoke or an attach (format 3).
        case lease(KVOperation)
    }

    /// Decodes a payload that passed its CRC; `payloadOffset` is where it lies in its file.
    static func decode(_ payload: [UInt8], payloadOffset: Int) throws(WireError) -> Record {
        var reader = ByteReader(payload)
        let kindByte = try reader.readUInt8()
        guard let kind = Kind(rawValue: kindByte) else { throw .invalidValue(field: "record kind", offset: 0) }
        switch kind {
        case .batch:
            let applied = try reader.readUInt64()
            let revision = try reader.readUInt64()
            let count = Int(try reader.readUInt32())
            guard count <= payload.count else { throw .invalidValue(field: "operation count", offset: 17) }
            var operations: [Operation] = []
            operations.reserveCapacity(count)
            for _ in 0..<count {
                let tagAt = payload.count - reader.remaining
                guard let tag = Tag(rawValue: try reader.readUInt8()) else {
                    throw .invalidValue(field: "operation tag", offset: tagAt)
                }
                switch tag {
                case .put:
                    let key = try reader.readRaw(count: Int(try reader.readUInt32()))
                    let revisions = KeyRevisions(create: try reader.readUInt64(), mod: try reader.readUInt64(),
                                                 version: try reader.readUInt64())
                    let length = Int(try reader.readUInt32())
                    let start = payload.count - reader.remaining
                    _ = try reader.readRaw(count: length)
                    operations.append(.put(key: key, revisions: revisions, valueOffset: payloadOffset + start,
                                           valueRange: start..<(start + length)))
                case .delete:
                    operations.append(.delete(key: try reader.readRaw(count: Int(try reader.readUInt32()))))
                case .setMember:
                    operations.append(.setMember(MemberRecord(id: try reader.readString(), raftAddress: try reader.readString(),
                                                              httpAddress: try reader.readString(),
                                                              promote: try reader.readBool())))
                case .removeMember:
                    operations.append(.removeMember(id: try reader.readString()))
                case .remember:
                    operations.append(.remember(try IdempotencyRecord(from: &reader)))
                case .grantLease:
                    operations.append(.lease(.grantLease(id: try reader.readUInt64(), ttlSeconds: try reader.readUInt64())))
                case .revokeLease:
                    operations.append(.lease(.revokeLease(id: try reader.readUInt64())))
                case .attachLease:
                    let key = try reader.readRaw(count: Int(try reader.readUInt32()))
                    operations.append(.lease(.attachLease(key: key, lease: try reader.readUInt64())))
                }
            }
            try reader.expectEnd()
            return .batch(applied: applied, revision: revision, operations: operations)
        case .checkpoint:
            let base = try reader.readBool()
            let applied = try reader.readUInt64()
            let durable = try reader.readUInt64()
            let revision = try reader.readUInt64()
            let count = Int(try reader.readUInt32())
            guard count <= payload.count else { throw .invalidValue(field: "member count", offset: 26) }
            var members: [MemberRecord] = []
            for _ in 0..<count {
                members.append(MemberRecord(id: try reader.readString(), raftAddress: try reader.readString(),
                                            httpAddress: try reader.readString(), promote: try reader.readBool()))
            }
            // Format 1 ends here, format 2 after the idempotency table.
            let idempotency = reader.remaining == 0 ? IdempotencyTable() : try IdempotencyTable(from: &reader)
            let leases = reader.remaining == 0 ? LeaseTable() : try LeaseTable(from: &reader)
            try reader.expectEnd()
            return .checkpoint(base: base, applied: applied, durable: durable, revision: revision, members: members,
                               idempotency: idempotency, leases: leases)
        case .durable:
            let durable = try reader.readUInt64()
            try reader.expectEnd()
            return .durable(durable)
        }
    }
}

/// A key's revisions, as etcd keeps them: the store revision that created it (since it was
/// last absent), the one that last changed it, and how many writes it has had since created.
public struct KeyRevisions: Equatable, Hashable, BitwiseCopyable, Sendable {
    public var create: UInt64
    public var mod: UInt64
    public var version: UInt64

    public init(create: UInt64, mod: UInt64, version: UInt64) {
        self.create = create
        self.mod = mod
        self.version = version
    }
}

/// Why the state machine's files cannot be read: the file, the offset, and what was found.
public struct StateLogError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let offset: Int
    public let reason: String
    public var description: String { "state machine file \(path) at offset \(offset): \(reason)" }

    public init(path: String, offset: Int, reason: String) {
        self.path = path
        self.offset = offset
        self.reason = reason
    }
}

/// An open segment file. Reads go through `pread` and may run on any thread; the descriptor
/// closes with the last reference, so a read that found a value in a segment that garbage
/// collection has since removed still reads it whole.
final class SegmentFile: Sendable {
    let id: UInt32
    let path: String
    let descriptor: Int32

    init(id: UInt32, path: String, create: Bool) throws(FileIOError) {
        self.id = id
        self.path = path
        let flags = create ? O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC : O_RDWR | O_CLOEXEC
        descriptor = open(path, flags, 0o644)
        guard descriptor >= 0 else { throw FileIOError(operation: "open", path: path, errorNumber: errno) }
    }

    deinit { close(descriptor) }

    /// `count` bytes at `offset`, which the caller knows lie in the file.
    func read(at offset: Int, count: Int) throws -> [UInt8] {
        var read = 0
        let bytes = try [UInt8](unsafeUninitializedCapacity: count) { (buffer, initialized) throws(FileIOError) in
            read = count == 0 ? 0 : try FileIO.readFully(descriptor, into: UnsafeMutableRawBufferPointer(buffer), at: offset, path: path)
            initialized = read
        }
        guard read == count else { throw StateLogError(path: path, offset: offset, reason: "file ends within a value (\(read) of \(count) bytes)") }
        return bytes
    }

    /// `count` bytes at `offset` if the page cache holds all of them, else nil (reading them
    /// would wait for the disk): a read that may run on an event loop tries this first.
    func readIfCached(at offset: Int, count: Int) -> [UInt8]? {
        guard count > 0 else { return [] }
        var read = -1
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            read = keyper_pread_nowait(descriptor, buffer.baseAddress, count, off_t(offset))
            initialized = max(read, 0)
        }
        return read == count ? bytes : nil
    }

    /// Writes all of `bytes` at `offset`.
    func write(_ bytes: [UInt8], at offset: Int) throws(FileIOError) {
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw FileIOError(operation: "pwrite", path: path, errorNumber: errno)
            }
            done += count
        }
    }

    func sync() throws(FileIOError) {
        guard fdatasync(descriptor) == 0 else { throw FileIOError(operation: "fdatasync", path: path, errorNumber: errno) }
    }

    /// Starts writing `count` bytes at `offset` back to the disk without waiting: the next
    /// fdatasync then finds little left to write. Best effort (an error is the fsync's to report).
    func startWriteback(at offset: Int, count: Int) {
        _ = keyper_start_writeback(descriptor, Int64(offset), Int64(count))
    }

    func truncate(to length: Int) throws(FileIOError) {
        guard ftruncate(descriptor, off_t(length)) == 0 else { throw FileIOError(operation: "ftruncate", path: path, errorNumber: errno) }
    }

    func size() throws(FileIOError) -> Int {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw FileIOError(operation: "fstat", path: path, errorNumber: errno) }
        return Int(info.st_size)
    }
}

/// Reads a segment's records in order through a bounded buffer, checking each CRC.
struct SegmentScanner {
    let file: SegmentFile
    let length: Int
    /// Where the next record starts.
    private(set) var offset: Int
    private var buffer: [UInt8] = []
    private var bufferStart = 0

    static let chunkBytes = 4 << 20

    init(file: SegmentFile, length: Int) throws {
        self.file = file
        self.length = length
        offset = StateLog.magic.count
        guard length >= StateLog.magic.count else {
            throw StateLogError(path: file.path, offset: 0, reason: "shorter than the segment magic (\(length) bytes)")
        }
        let magic = try file.read(at: 0, count: StateLog.magic.count)
        guard magic.starts(with: StateLog.magicPrefix),
              let version = Int(String(decoding: magic.dropFirst(StateLog.magicPrefix.count), as: UTF8.self)) else {
            throw StateLogError(path: file.path, offset: 0, reason: "not a Keyper state segment (wrong magic)")
        }
        guard (StateLog.oldestFormatVersion...StateLog.formatVersion).contains(version) else {
            let reads = StateLog.oldestFormatVersion == StateLog.formatVersion ? "format \(StateLog.formatVersion)"
                : "formats \(StateLog.oldestFormatVersion) to \(StateLog.formatVersion)"
            throw StateLogError(path: file.path, offset: 0, reason:
                "written in segment format \(version) by \(version > StateLog.formatVersion ? "a newer" : "an older") Keyper; this build reads \(reads)")
        }
    }

    /// What the scan found at `offset`.
    enum Step {
        case record(payload: [UInt8], payloadOffset: Int)
        case end
        /// The bytes at `offset` are not a whole record with a good checksum; `length` is the
        /// payload length the header claims, when a header was there.
        case bad(reason: String, claimedLength: Int?)
    }

    mutating func next() throws -> Step {
        if offset == length { return .end }
        guard length - offset >= StateLog.recordHeaderBytes else {
            return .bad(reason: "a record header cut short (\(length - offset) bytes left)", claimedLength: nil)
        }
        let header = try bytes(at: offset, count: StateLog.recordHeaderBytes)
        let payloadLength = Int(UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24)
        let crc = UInt32(header[4]) | UInt32(header[5]) << 8 | UInt32(header[6]) << 16 | UInt32(header[7]) << 24
        let payloadOffset = offset + StateLog.recordHeaderBytes
        guard payloadLength <= length - payloadOffset else {
            return .bad(reason: "a record of \(payloadLength) bytes runs past the end of the file", claimedLength: payloadLength)
        }
        let payload = try bytes(at: payloadOffset, count: payloadLength)
        guard CRC32C.checksum(payload) == crc, payloadLength > 0 else {
            return .bad(reason: "record checksum mismatch", claimedLength: payloadLength)
        }
        offset = payloadOffset + payloadLength
        return .record(payload: payload, payloadOffset: payloadOffset)
    }

    /// Whether a whole record with a good checksum starts at `position`.
    func recordIsValid(at position: Int) -> Bool {
        guard position + StateLog.recordHeaderBytes <= length,
              let header = try? file.read(at: position, count: StateLog.recordHeaderBytes) else { return false }
        let payloadLength = Int(UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24)
        let crc = UInt32(header[4]) | UInt32(header[5]) << 8 | UInt32(header[6]) << 16 | UInt32(header[7]) << 24
        guard payloadLength > 0, payloadLength <= length - position - StateLog.recordHeaderBytes,
              let payload = try? file.read(at: position + StateLog.recordHeaderBytes, count: payloadLength) else { return false }
        return CRC32C.checksum(payload) == crc
    }

    private mutating func bytes(at position: Int, count: Int) throws -> [UInt8] {
        if count > Self.chunkBytes { return try file.read(at: position, count: count) }
        if position < bufferStart || position + count > bufferStart + buffer.count {
            bufferStart = position
            buffer = try file.read(at: position, count: min(Self.chunkBytes, length - position))
        }
        let start = position - bufferStart
        return Array(buffer[start..<(start + count)])
    }
}
