/// Reads what ``ByteWriter`` wrote, checking every bound. Any malformed input throws a
/// ``WireError`` naming the byte offset; nothing traps and nothing allocates more than the
/// input could hold (lengths are checked against the bytes remaining before allocating).
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    /// Offset of the next byte to read, from the start of `bytes`.
    public private(set) var position: Int
    /// One past the last readable byte.
    public let end: Int

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.position = 0
        self.end = bytes.count
    }

    /// A reader over `bytes[range]` (offsets in errors stay relative to the whole array).
    public init(_ bytes: [UInt8], range: Range<Int>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count, "range=\(range) count=\(bytes.count)")
        self.bytes = bytes
        self.position = range.lowerBound
        self.end = range.upperBound
    }

    public var remaining: Int { end - position }
    public var isAtEnd: Bool { position == end }

    @inline(__always)
    private func require(_ count: Int) throws(WireError) {
        if count > end - position {
            throw .truncated(offset: position, needed: count - (end - position))
        }
    }

    public mutating func readUInt8() throws(WireError) -> UInt8 {
        try require(1)
        defer { position += 1 }
        return bytes[position]
    }

    /// A strict boolean: only 0 and 1 are accepted, so every value has one encoding.
    public mutating func readBool(field: String = "bool") throws(WireError) -> Bool {
        let start = position
        switch try readUInt8() {
        case 0: return false
        case 1: return true
        default: throw .invalidValue(field: field, offset: start)
        }
    }

    public mutating func readUInt16() throws(WireError) -> UInt16 {
        try require(2)
        defer { position += 2 }
        return bytes.withUnsafeBytes { UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: UInt16.self)) }
    }

    public mutating func readUInt32() throws(WireError) -> UInt32 {
        try require(4)
        defer { position += 4 }
        return bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: UInt32.self)) }
    }

    public mutating func readUInt64() throws(WireError) -> UInt64 {
        try require(8)
        defer { position += 8 }
        return bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: UInt64.self)) }
    }

    /// Unsigned LEB128. Rejects encodings longer than needed (a trailing zero group), longer
    /// than 10 bytes, or overflowing 64 bits, so that decoding is the exact inverse of encoding.
    public mutating func readVarint() throws(WireError) -> UInt64 {
        let start = position
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw .truncated(offset: position, needed: 1) }
            let byte = bytes[position]
            position += 1
            let group = UInt64(byte & 0x7F)
            if shift == 63 && group > 1 { throw .malformedVarint(offset: start) }
            result |= group << shift
            if byte & 0x80 == 0 {
                // Minimal: a final group of 0 is only allowed when it is the only byte.
                if group == 0 && position - start > 1 { throw .malformedVarint(offset: start) }
                return result
            }
            shift += 7
            if shift > 63 { throw .malformedVarint(offset: start) }
        }
    }

    /// A varint that must fit in `Int` and be at most `limit`.
    public mutating func readCount(field: String, limit: Int) throws(WireError) -> Int {
        let start = position
        let value = try readVarint()
        guard value <= UInt64(limit) else { throw .invalidValue(field: field, offset: start) }
        return Int(value)
    }

    /// Exactly `count` raw bytes.
    public mutating func readRaw(count: Int) throws(WireError) -> [UInt8] {
        precondition(count >= 0, "count=\(count)")
        try require(count)
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }

    /// A varint length, then that many bytes. The length is checked against what remains
    /// before anything is allocated.
    public mutating func readLengthPrefixed() throws(WireError) -> [UInt8] {
        let start = position
        let length = try readVarint()
        guard length <= UInt64(remaining) else {
            throw .truncated(offset: start, needed: length > UInt64(Int.max) ? Int.max : Int(length) - remaining)
        }
        return try readRaw(count: Int(length))
    }

    /// A length-prefixed UTF-8 string; invalid UTF-8 throws rather than being repaired, so the
    /// string re-encodes to the same bytes.
    public mutating func readString() throws(WireError) -> String {
        let start = position
        let raw = try readLengthPrefixed()
        guard let string = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(offset: start) }
        return string
    }

    /// Throws unless every byte has been consumed.
    public func expectEnd() throws(WireError) {
        if position != end { throw .trailingBytes(offset: position, count: end - position) }
    }
}
