import KeyperRaft
import KeyperWire

/// Record framing. Every record in a segment file is
///
/// ```
/// +-----------+------------+---------+-----------------+
/// | crc32c u32| length u32 | type u8 | payload (length)|
/// +-----------+------------+---------+-----------------+
/// ```
///
/// little-endian, unaligned. The CRC-32C covers length, type and payload, so a damaged length
/// or type is caught as surely as damaged data. Type 0 is never written: a zero-filled region
/// (a preallocated or torn page) can never parse as a record.
///
/// The CRC is seeded with the segment's random salt (from its header; the header record itself
/// uses salt 0). Bytes that merely look like a record, such as a WAL file stored as a value
/// inside an entry, or a record copied from another segment, fail the check. That keeps
/// user data from making a torn tail look like corruption (see ``WALRecovery``).
enum WALRecordType: UInt8 {
    /// First record of every segment: see ``SegmentHeader``.
    case segmentHeader = 1
    /// A log entry. An entry at index i also discards any entries at i and above written
    /// earlier: that is how a conflicting suffix is truncated durably (Raft §5.3), without
    /// rewriting or truncating files (see ``WriteAheadLog``).
    case entry = 2
    /// A hard state; the last one wins.
    case hardState = 3
    /// A compaction point or an installed snapshot, see ``SnapshotRecord``.
    case snapshot = 4
}

enum WALRecordFrame {
    static let headerBytes = 9

    /// Appends one framed record whose payload `encodePayload` writes.
    static func append(_ type: WALRecordType, salt: UInt32, to writer: inout ByteWriter, encodePayload: (inout ByteWriter) -> Void) {
        let start = writer.count
        writer.writeUInt32(0)  // crc, patched below
        writer.writeUInt32(0)  // length, patched below
        writer.writeUInt8(type.rawValue)
        encodePayload(&writer)
        let length = writer.count - start - headerBytes
        precondition(length <= Int(UInt32.max), "record length=\(length)")
        writer.patchUInt32(UInt32(length), at: start + 4)
        let crc = CRC32C.checksum(writer.bytes, range: (start + 4)..<writer.count, continuing: salt)
        writer.patchUInt32(crc, at: start)
    }

    enum Parsed {
        case valid(type: WALRecordType, payload: Range<Int>)
        /// `reason` says what was wrong, for the recovery report or the corruption error.
        case invalid(reason: String)
    }

    /// Parses the record at `offset` of `bytes` without trusting anything in it.
    static func parse(_ bytes: [UInt8], at offset: Int, salt: UInt32, payloadBytesMax: Int) -> Parsed {
        let available = bytes.count - offset
        guard available >= headerBytes else {
            return .invalid(reason: "partial record header (\(available) of \(headerBytes) bytes)")
        }
        return bytes.withUnsafeBytes { raw in
            let storedCRC = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)))
            let typeByte = raw[offset + 8]
            guard let type = WALRecordType(rawValue: typeByte) else {
                if storedCRC == 0 && length == 0 && typeByte == 0 { return .invalid(reason: "zero-filled bytes") }
                return .invalid(reason: "unknown record type \(typeByte)")
            }
            guard length <= payloadBytesMax else { return .invalid(reason: "record length \(length) exceeds the limit") }
            guard length <= available - headerBytes else {
                return .invalid(reason: "record of \(length) bytes runs past the end of the file")
            }
            let end = offset + headerBytes + length
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(offset + 4)..<end]), continuing: salt)
            guard crc == storedCRC else { return .invalid(reason: "checksum mismatch") }
            return .valid(type: type, payload: (offset + headerBytes)..<end)
        }
    }

    /// Whether any position after `offset` holds a complete record with a valid checksum.
    /// Used to tell a torn tail (nothing valid follows the damage) from corruption (valid
    /// records follow it). Cheap on zeros and garbage: the type and length checks reject
    /// almost every position before any checksum is computed.
    static func hasValidRecord(in bytes: [UInt8], after offset: Int, salt: UInt32, payloadBytesMax: Int) -> Bool {
        var position = offset + 1
        while position + headerBytes <= bytes.count {
            if WALRecordType(rawValue: bytes[position + 8]) != nil,
               case .valid = parse(bytes, at: position, salt: salt, payloadBytesMax: payloadBytesMax) {
                return true
            }
            position += 1
        }
        return false
    }
}

/// Payload of the first record of every segment. It restates the log's state at the point the
/// segment starts (first index, compaction point, hard state), so that once older segments are
/// deleted by compaction, replay can begin at any segment and the hard state is never lost
/// with the segment that last recorded it.
struct SegmentHeader: Hashable, WireCodable {
    static let magic: UInt32 = 0x4C41_574B  // "KWAL" little-endian
    static let version: UInt8 = 1

    var sequence: UInt64
    /// Index the next entry appended after this header would have (last index + 1).
    var firstIndex: LogIndex
    var snapshot: SnapshotMetadata
    var hardState: HardState
    /// Seed of the CRC of every other record in the segment.
    var salt: UInt32

    func encode(to writer: inout ByteWriter) {
        writer.writeUInt32(Self.magic)
        writer.writeUInt8(Self.version)
        writer.writeUInt32(salt)
        writer.writeVarint(sequence)
        firstIndex.encode(to: &writer)
        snapshot.encode(to: &writer)
        hardState.encode(to: &writer)
    }

    init(sequence: UInt64, firstIndex: LogIndex, snapshot: SnapshotMetadata, hardState: HardState,
         salt: UInt32 = .random(in: 0...UInt32.max)) {
        self.salt = salt
        self.sequence = sequence
        self.firstIndex = firstIndex
        self.snapshot = snapshot
        self.hardState = hardState
    }

    init(from reader: inout ByteReader) throws(WireError) {
        let offset = reader.position
        guard try reader.readUInt32() == Self.magic else { throw .invalidValue(field: "segment magic", offset: offset) }
        guard try reader.readUInt8() == Self.version else { throw .invalidValue(field: "segment version", offset: offset + 4) }
        salt = try reader.readUInt32()
        sequence = try reader.readVarint()
        firstIndex = try LogIndex(from: &reader)
        snapshot = try SnapshotMetadata(from: &reader)
        hardState = try HardState(from: &reader)
    }
}

/// Payload of a snapshot record.
struct SnapshotRecord: Hashable, WireCodable {
    enum Mode: UInt8 {
        /// Log compaction: entries up to `metadata.index` are dropped, later ones kept.
        case retainLog = 0
        /// A snapshot whose index or term the log does not match was installed: every entry
        /// is dropped and the log continues at `metadata.index + 1`.
        case discardLog = 1
    }

    var mode: Mode
    var metadata: SnapshotMetadata

    func encode(to writer: inout ByteWriter) {
        writer.writeUInt8(mode.rawValue)
        metadata.encode(to: &writer)
    }

    init(mode: Mode, metadata: SnapshotMetadata) {
        self.mode = mode
        self.metadata = metadata
    }

    init(from reader: inout ByteReader) throws(WireError) {
        let offset = reader.position
        guard let mode = Mode(rawValue: try reader.readUInt8()) else { throw .invalidValue(field: "snapshot mode", offset: offset) }
        self.mode = mode
        metadata = try SnapshotMetadata(from: &reader)
    }
}

/// Segment file names: `<sequence>-<firstIndex>.wal`, both 16 lowercase hex digits, so that
/// names sort in log order and say at a glance which indexes a file starts at.
enum SegmentName {
    static let suffix = ".wal"
    static let temporarySuffix = ".wal.tmp"

    static func format(sequence: UInt64, firstIndex: LogIndex) -> String {
        hex16(sequence) + "-" + hex16(firstIndex.rawValue) + suffix
    }

    static func parse(_ name: String) -> (sequence: UInt64, firstIndex: LogIndex)? {
        let utf8 = Array(name.utf8)
        guard utf8.count == 37, name.hasSuffix(suffix), utf8[16] == UInt8(ascii: "-") else { return nil }
        guard let sequence = parseHex(utf8[0..<16]), let firstIndex = parseHex(utf8[17..<33]) else { return nil }
        return (sequence, LogIndex(firstIndex))
    }

    private static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    private static func parseHex(_ digits: ArraySlice<UInt8>) -> UInt64? {
        var value: UInt64 = 0
        for digit in digits {
            let nibble: UInt8
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = digit - UInt8(ascii: "a") + 10
            default: return nil
            }
            value = value << 4 | UInt64(nibble)
        }
        return value
    }
}
