import NIOCore

/// Peer connections carry length-prefixed frames: a little-endian `UInt32` byte count, then
/// that many bytes. The first frame on a connection is a ``Handshake``; every later frame is
/// opaque to the transport (the runtime puts a batch of encoded Raft messages in each).
public enum FrameLimits {
    /// The largest frame accepted. A peer announcing more is broken or hostile: the
    /// connection is closed rather than the memory reserved.
    public static let frameBytesMax = 16 * 1024 * 1024
}

/// Why a peer connection was refused or closed.
public struct TransportError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }

    static func frameTooLarge(_ bytes: Int) -> TransportError {
        TransportError("frame of \(bytes) bytes exceeds the limit of \(FrameLimits.frameBytesMax)")
    }
}

/// Splits the byte stream into frames. Total over its input: any bytes either make frames,
/// wait for more, or raise ``TransportError`` (which closes the connection).
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let frameBytesMax: Int

    init(frameBytesMax: Int = FrameLimits.frameBytesMax) {
        self.frameBytesMax = frameBytesMax
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.nextFrame(&buffer, frameBytesMax: frameBytesMax) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A partial frame at EOF is simply dropped: the peer went away mid-write.
        try decode(context: context, buffer: &buffer)
    }

    /// The pure part, shared with the fuzz test: takes one whole frame off the front of `buffer`.
    static func nextFrame(_ buffer: inout ByteBuffer, frameBytesMax: Int) throws(TransportError) -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self) else {
            return nil
        }
        guard Int(length) <= frameBytesMax else { throw .frameTooLarge(Int(length)) }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        return buffer.readSlice(length: Int(length))
    }
}

extension ByteBuffer {
    /// Appends `payload` as one frame.
    mutating func writeFrame(_ payload: some Collection<UInt8>) {
        writeInteger(UInt32(payload.count), endianness: .little)
        writeBytes(payload)
    }
}

/// The first frame on every connection: who is calling, and in which protocol.
///
/// Layout: `"KYPR"`, a `UInt8` version, a `UInt16` length and the node id's UTF-8 bytes, then
/// the same for the cluster id (empty while the caller has none) and for the caller's Raft
/// address, then (little-endian `UInt64`s) the caller's incarnation and the incarnation it
/// believes the callee has (0: it knows none).
public struct Handshake: Equatable, Sendable {
    static let magic: [UInt8] = Array("KYPR".utf8)
    /// Version 2 added the incarnations; version 3 the caller's Raft address, and changed what
    /// a refused forwarded write carries (a domain failure, no longer an HTTP status); version 4
    /// adds that failure's outcome (whether the write may still be applied).
    public static let version: UInt8 = 4
    static let idBytesMax = 255

    public var nodeID: String
    public var clusterID: String
    /// The incarnation of the caller's data directory.
    public var incarnation: UInt64
    /// The incarnation the caller addresses: what its configuration records for the callee.
    /// A callee with another incarnation (it lost its disk since) must not take the caller's
    /// Raft traffic as meant for it.
    public var peerIncarnation: UInt64
    /// Where the caller accepts peer connections (its advertised `--raft-addr`; empty if it
    /// has none yet): how the callee answers a peer its address book does not list yet, such
    /// as a leader that joined while the callee was away.
    public var raftAddress: String

    public init(nodeID: String, clusterID: String = "", incarnation: UInt64 = 0, peerIncarnation: UInt64 = 0,
                raftAddress: String = "") {
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.incarnation = incarnation
        self.peerIncarnation = peerIncarnation
        self.raftAddress = raftAddress
    }

    func encoded() -> [UInt8] {
        var bytes = Self.magic
        bytes.append(Self.version)
        for text in [nodeID, clusterID, raftAddress] {
            let utf8 = Array(text.utf8)
            precondition(utf8.count <= Self.idBytesMax, "id too long: \(utf8.count) bytes")
            bytes.append(UInt8(truncatingIfNeeded: utf8.count))
            bytes.append(UInt8(truncatingIfNeeded: utf8.count >> 8))
            bytes += utf8
        }
        for value in [incarnation, peerIncarnation] {
            bytes += (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
        }
        return bytes
    }

    static func decode(_ frame: ByteBuffer) throws(TransportError) -> Handshake {
        var frame = frame
        guard frame.readBytes(length: 4) == magic else { throw TransportError("not a Keyper peer (bad magic)") }
        guard let version = frame.readInteger(as: UInt8.self) else { throw TransportError("truncated handshake") }
        guard version == Self.version else {
            throw TransportError("peer speaks protocol version \(version); this node speaks \(Self.version)")
        }
        var ids: [String] = []
        for _ in 0..<3 {
            guard let count = frame.readInteger(endianness: .little, as: UInt16.self), Int(count) <= idBytesMax,
                  let bytes = frame.readBytes(length: Int(count)),
                  let text = String(validating: bytes, as: UTF8.self)
            else { throw TransportError("malformed handshake") }
            ids.append(text)
        }
        guard let incarnation = frame.readInteger(endianness: .little, as: UInt64.self),
              let peerIncarnation = frame.readInteger(endianness: .little, as: UInt64.self)
        else { throw TransportError("truncated handshake") }
        guard frame.readableBytes == 0 else { throw TransportError("trailing bytes in handshake") }
        guard !ids[0].isEmpty else { throw TransportError("handshake without a node id") }
        return Handshake(nodeID: ids[0], clusterID: ids[1], incarnation: incarnation, peerIncarnation: peerIncarnation,
                         raftAddress: ids[2])
    }
}
