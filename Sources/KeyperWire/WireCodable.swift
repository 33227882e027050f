/// A value with one binary encoding, shared by the WAL and the peer transport.
public protocol WireEncodable {
    /// Appends the encoding of `self`.
    func encode(to writer: inout ByteWriter)
}

/// A value decoded strictly: ``init(from:)`` accepts exactly the bytes ``WireEncodable/encode(to:)``
/// produces (canonical varints, strict flags, sorted sets) and throws on anything else.
public protocol WireDecodable {
    init(from reader: inout ByteReader) throws(WireError)
}

public typealias WireCodable = WireEncodable & WireDecodable

extension WireEncodable {
    /// The encoding of `self` as a fresh array.
    public func wireBytes() -> [UInt8] {
        var writer = ByteWriter()
        encode(to: &writer)
        return writer.bytes
    }
}

extension WireDecodable {
    /// Decodes a value that must occupy all of `bytes`.
    public init(wireBytes bytes: [UInt8]) throws(WireError) {
        var reader = ByteReader(bytes)
        try self.init(from: &reader)
        try reader.expectEnd()
    }

    /// Decodes a value that must occupy all of `bytes[range]`.
    public init(wireBytes bytes: [UInt8], range: Range<Int>) throws(WireError) {
        var reader = ByteReader(bytes, range: range)
        try self.init(from: &reader)
        try reader.expectEnd()
    }
}
