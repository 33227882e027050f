import KeyperRaft

// Encodings of Raft messages for the peer transport. A message is from, to, term, a kind
// tag and the kind's fields. Tags are part of the wire protocol: never renumber one.

extension Message: WireCodable {
    private enum Tag: UInt8 {
        case append = 1, appendResponse, preVote, preVoteResponse, vote, voteResponse
        case heartbeat, heartbeatResponse, snapshot, timeoutNow, readIndex, readIndexResponse
    }

    /// Entries in one append, on the decoding side: the sender's own bound is far lower
    /// (`Config.appendBytesMax`); this one stops a hostile count from reserving memory.
    static let appendEntriesMax = 1 << 20

    public func encode(to writer: inout ByteWriter) {
        from.encode(to: &writer)
        to.encode(to: &writer)
        term.encode(to: &writer)
        switch kind {
        case .append(let append):
            writer.writeUInt8(Tag.append.rawValue)
            append.prevIndex.encode(to: &writer)
            append.prevTerm.encode(to: &writer)
            append.commit.encode(to: &writer)
            writer.writeVarint(UInt64(append.entries.count))
            for entry in append.entries { entry.encode(to: &writer) }
        case .appendResponse(let response):
            writer.writeUInt8(Tag.appendResponse.rawValue)
            response.index.encode(to: &writer)
            writer.writeBool(response.rejected)
            response.hintIndex.encode(to: &writer)
            response.hintTerm.encode(to: &writer)
        case .preVote(let request):
            writer.writeUInt8(Tag.preVote.rawValue)
            request.encodeFields(to: &writer)
        case .preVoteResponse(let response):
            writer.writeUInt8(Tag.preVoteResponse.rawValue)
            writer.writeBool(response.granted)
        case .vote(let request):
            writer.writeUInt8(Tag.vote.rawValue)
            request.encodeFields(to: &writer)
        case .voteResponse(let response):
            writer.writeUInt8(Tag.voteResponse.rawValue)
            writer.writeBool(response.granted)
        case .heartbeat(let heartbeat):
            writer.writeUInt8(Tag.heartbeat.rawValue)
            heartbeat.commit.encode(to: &writer)
            writer.writeVarint(heartbeat.readRound)
        case .heartbeatResponse(let response):
            writer.writeUInt8(Tag.heartbeatResponse.rawValue)
            writer.writeVarint(response.readRound)
        case .snapshot(let metadata):
            writer.writeUInt8(Tag.snapshot.rawValue)
            metadata.encode(to: &writer)
        case .timeoutNow:
            writer.writeUInt8(Tag.timeoutNow.rawValue)
        case .readIndex(let request):
            writer.writeUInt8(Tag.readIndex.rawValue)
            writer.writeLengthPrefixed(request.context)
        case .readIndexResponse(let response):
            writer.writeUInt8(Tag.readIndexResponse.rawValue)
            writer.writeLengthPrefixed(response.context)
            response.index.encode(to: &writer)
        }
    }

    public init(from reader: inout ByteReader) throws(WireError) {
        let from = try NodeID(from: &reader)
        let to = try NodeID(from: &reader)
        let term = try Term(from: &reader)
        let tagOffset = reader.position
        guard let tag = Tag(rawValue: try reader.readUInt8()) else {
            throw .invalidValue(field: "message kind", offset: tagOffset)
        }
        let kind: MessageKind
        switch tag {
        case .append:
            let prevIndex = try LogIndex(from: &reader)
            let prevTerm = try Term(from: &reader)
            let commit = try LogIndex(from: &reader)
            let count = try reader.readCount(field: "entry count", limit: Self.appendEntriesMax)
            var entries: [Entry] = []
            entries.reserveCapacity(min(count, 1024))
            for _ in 0..<count { entries.append(try Entry(from: &reader)) }
            kind = .append(AppendEntries(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit))
        case .appendResponse:
            let index = try LogIndex(from: &reader)
            let rejected = try reader.readBool(field: "rejected")
            let hintIndex = try LogIndex(from: &reader)
            let hintTerm = try Term(from: &reader)
            kind = .appendResponse(AppendResponse(index: index, rejected: rejected, hintIndex: hintIndex, hintTerm: hintTerm))
        case .preVote:
            kind = .preVote(try VoteRequest(fieldsFrom: &reader))
        case .preVoteResponse:
            kind = .preVoteResponse(VoteResponse(granted: try reader.readBool(field: "granted")))
        case .vote:
            kind = .vote(try VoteRequest(fieldsFrom: &reader))
        case .voteResponse:
            kind = .voteResponse(VoteResponse(granted: try reader.readBool(field: "granted")))
        case .heartbeat:
            let commit = try LogIndex(from: &reader)
            kind = .heartbeat(Heartbeat(commit: commit, readRound: try reader.readVarint()))
        case .heartbeatResponse:
            kind = .heartbeatResponse(HeartbeatResponse(readRound: try reader.readVarint()))
        case .snapshot:
            kind = .snapshot(try SnapshotMetadata(from: &reader))
        case .timeoutNow:
            kind = .timeoutNow
        case .readIndex:
            kind = .readIndex(ReadIndexRequest(context: try reader.readLengthPrefixed()))
        case .readIndexResponse:
            let context = try reader.readLengthPrefixed()
            kind = .readIndexResponse(ReadIndexResponse(context: context, index: try LogIndex(from: &reader)))
        }
        self.init(from: from, to: to, term: term, kind: kind)
    }
}

extension VoteRequest {
    fileprivate func encodeFields(to writer: inout ByteWriter) {
        lastIndex.encode(to: &writer)
        lastTerm.encode(to: &writer)
        writer.writeBool(transfer)
    }

    fileprivate init(fieldsFrom reader: inout ByteReader) throws(WireError) {
        let lastIndex = try LogIndex(from: &reader)
        let lastTerm = try Term(from: &reader)
        self.init(lastIndex: lastIndex, lastTerm: lastTerm, transfer: try reader.readBool(field: "transfer"))
    }
}
