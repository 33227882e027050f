import KeyperRaft
import KeyperWire

/// What one peer frame carries: a batch of these, so one write (and one wake-up on the other
/// side) moves everything a `Ready` produced for that peer.
///
/// Tags are part of the peer protocol: never renumber one.
package enum PeerRecord: Equatable, Sendable {
    /// A Raft message.
    case raft(Message)
    /// A follower hands a client's command to the leader, which proposes it unchanged; the
    /// follower answers its client when it applies the entry carrying `request`.
    case forward(request: RequestID, data: [UInt8])
    /// The leader could not propose a forwarded command; the follower fails its waiter.
    case forwardRefused(request: RequestID, failure: ReplicaError)
    /// A leader asks a node to join its cluster (the prototype's `POST /v1/join`).
    case adoptRequest(AdoptRequest)
    /// The node's answer to ``adoptRequest(_:)``.
    case adoptResponse(AdoptResponse)
    /// Part of a snapshot's database file; the InstallSnapshot message follows the last chunk
    /// on the same connection.
    case snapshotChunk(SnapshotChunk)

    private enum Tag: UInt8 {
        case raft = 1, forward, forwardRefused, adoptRequest, adoptResponse, snapshotChunk
    }

    /// An answer to something the peer asked (a Raft response, a refused forwarded write):
    /// it goes to the incarnation that asked.
    var isAnswer: Bool {
        switch self {
        case .raft(let message): message.kind.isResponse
        case .forwardRefused: true
        case .forward, .adoptRequest, .adoptResponse, .snapshotChunk: false
        }
    }

    /// Records in one frame, on the decoding side (the sender's batches are far smaller).
    static let frameRecordsMax = 1 << 20

    package static func encodeFrame(_ records: [PeerRecord]) -> [UInt8] {
        var writer = ByteWriter(capacity: 256)
        writer.writeVarint(UInt64(records.count))
        for record in records { record.encode(to: &writer) }
        return writer.bytes
    }

    /// Frames of at most about `frameBytesTarget` each (one record may exceed it), so a
    /// snapshot's chunks go out as separate frames that heartbeats can slip between.
    package static func encodeFrames(_ records: [PeerRecord], frameBytesTarget: Int) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        var pending: [[UInt8]] = []
        var pendingBytes = 0
        func emit() {
            guard !pending.isEmpty else { return }
            var writer = ByteWriter(capacity: pendingBytes + 10)
            writer.writeVarint(UInt64(pending.count))
            for record in pending { writer.writeRaw(record) }
            frames.append(writer.bytes)
            pending = []
            pendingBytes = 0
        }
        for record in records {
            var writer = ByteWriter()
            record.encode(to: &writer)
            if pendingBytes + writer.count > frameBytesTarget { emit() }
            pending.append(writer.bytes)
            pendingBytes += writer.count
        }
        emit()
        return frames
    }

    package static func decodeFrame(_ bytes: [UInt8]) throws(WireError) -> [PeerRecord] {
        var reader = ByteReader(bytes)
        let count = try reader.readCount(field: "record count", limit: frameRecordsMax)
        var records: [PeerRecord] = []
        records.reserveCapacity(min(count, 1024))
        for _ in 0..<count { records.append(try PeerRecord(from: &reader)) }
        try reader.expectEnd()
        return records
    }

    func encode(to writer: inout ByteWriter) {
        switch self {
        case .raft(let message):
            writer.writeUInt8(Tag.raft.rawValue)
            message.encode(to: &writer)
        case .forward(let request, let data):
            writer.writeUInt8(Tag.forward.rawValue)
            request.encode(to: &writer)
            writer.writeLengthPrefixed(data)
        case .forwardRefused(let request, let failure):
            writer.writeUInt8(Tag.forwardRefused.rawValue)
            request.encode(to: &writer)
            failure.encode(to: &writer)
        case .adoptRequest(let request):
            writer.writeUInt8(Tag.adoptRequest.rawValue)
            writer.writeString(request.clusterID)
            request.leader.encode(to: &writer)
            writer.writeString(request.leaderRaftAddress)
            writer.writeVarint(request.token)
        case .adoptResponse(let response):
            writer.writeUInt8(Tag.adoptResponse.rawValue)
            writer.writeVarint(response.token)
            writer.writeBool(response.accepted)
            writer.writeString(response.reason)
            writer.writeString(response.httpAddress)
        case .snapshotChunk(let chunk):
            writer.writeUInt8(Tag.snapshotChunk.rawValue)
            chunk.index.encode(to: &writer)
            chunk.term.encode(to: &writer)
            writer.writeVarint(chunk.offset)
            writer.writeVarint(chunk.totalBytes)
            writer.writeLengthPrefixed(chunk.bytes)
        }
    }

    init(from reader: inout ByteReader) throws(WireError) {
        let offset = reader.position
        guard let tag = Tag(rawValue: try reader.readUInt8()) else { throw .invalidValue(field: "peer record", offset: offset) }
        switch tag {
        case .raft:
            self = .raft(try Message(from: &reader))
        case .forward:
            let request = try RequestID(from: &reader)
            self = .forward(request: request, data: try reader.readLengthPrefixed())
        case .forwardRefused:
            let request = try RequestID(from: &reader)
            self = .forwardRefused(request: request, failure: try ReplicaError(from: &reader))
        case .adoptRequest:
            let clusterID = try reader.readString()
            let leader = try NodeID(from: &reader)
            let address = try reader.readString()
            self = .adoptRequest(AdoptRequest(clusterID: clusterID, leader: leader, leaderRaftAddress: address,
                                              token: try reader.readVarint()))
        case .adoptResponse:
            let token = try reader.readVarint()
            let accepted = try reader.readBool(field: "accepted")
            let reason = try reader.readString()
            self = .adoptResponse(AdoptResponse(token: token, accepted: accepted, reason: reason,
                                                httpAddress: try reader.readString()))
        case .snapshotChunk:
            let index = try LogIndex(from: &reader)
            let term = try Term(from: &reader)
            let offset = try reader.readVarint()
            let total = try reader.readVarint()
            let bytes = try reader.readLengthPrefixed()
            guard offset + UInt64(bytes.count) <= total else { throw .invalidValue(field: "snapshot chunk range", offset: reader.position) }
            self = .snapshotChunk(SnapshotChunk(index: index, term: term, offset: offset, totalBytes: total, bytes: bytes))
        }
    }
}

package struct SnapshotChunk: Equatable, Sendable {
    var index: LogIndex
    var term: Term
    var offset: UInt64
    var totalBytes: UInt64
    var bytes: [UInt8]
}

package struct AdoptRequest: Equatable, Sendable {
    var clusterID: String
    var leader: NodeID
    /// Where to answer: the node being adopted does not know the leader yet.
    var leaderRaftAddress: String
    var token: UInt64
}

package struct AdoptResponse: Equatable, Sendable {
    var token: UInt64
    var accepted: Bool
    var reason: String
    var httpAddress: String
}

extension RequestID {
    func encode(to writer: inout ByteWriter) {
        node.encode(to: &writer)
        writer.writeVarint(sequence)
    }

    init(from reader: inout ByteReader) throws(WireError) {
        node = try NodeID(from: &reader)
        sequence = try reader.readVarint()
    }
}
