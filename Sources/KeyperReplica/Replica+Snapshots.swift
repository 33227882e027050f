import KeyperBase
import KeyperRaft
import KeyperStorage
import Logging


/// A snapshot on its way to one follower: its chunks are read as blocking work, a few ahead of
/// the connection, and sent from the replica's context in order as the connection keeps up.
struct SnapshotSend {
    /// Tells the reads of this transfer from those of one abandoned (or started over) before it.
    var id: UInt64
    let metadata: SnapshotMetadata
    /// The InstallSnapshot message that follows the last chunk (the newest the core asked for).
    var message: Message
    let reader: SnapshotReader
    let chunkCount: Int
    /// Chunks whose read has been started; chunks sent.
    var chunksRead = 0
    var chunksSent = 0
    var readsInFlight = 0
    /// Frames read and not yet sent, by chunk number.
    var framesReady: [Int: [UInt8]] = [:]
    let started: Moment
    /// When the last chunk and the message went out.
    var finished: Moment?
    /// The number of the connection the chunks went on: all of them must go on one, since
    /// a connection made anew means some were lost with the old one.
    var connection: UInt64?
    /// Times the transfer started over on a new connection.
    var restarts = 0

    init(id: UInt64, metadata: SnapshotMetadata, message: Message, reader: SnapshotReader, chunkBytes: Int, started: Moment) {
        self.id = id
        self.metadata = metadata
        self.message = message
        self.reader = reader
        let bytes = reader.snapshot.databaseBytes
        chunkCount = max(1, (bytes + chunkBytes - 1) / chunkBytes)
        self.started = started
    }
}

/// A snapshot being received from the leader, chunk by chunk, in order.
struct SnapshotReceive {
    var index: LogIndex
    var term: Term
    var path: String
    var received: UInt64
    var total: UInt64
}

extension Replica {
    /// Chunks read ahead of the connection per follower (read or being read, not yet sent):
    /// enough to keep a fast connection busy, and a bound on the memory a transfer holds.
    static let snapshotReadsAheadMax = 4
    /// How fast a follower is assumed at least to make a received snapshot durable and prepare
    /// its install (a CRC pass, a copy and two fsyncs). Until that much time has passed after a
    /// transfer ended, the core's repeated requests resend only the InstallSnapshot message:
    /// the follower is still busy with the data, and sending it all again would only compete.
    static let snapshotPrepareBytesPerSecondMin = 64 << 20

    // MARK: Compacting the log

    /// Every `settings.snapshotEntries` applied entries: make the state machine durable, then
    /// drop the log entries it holds, all but the last `settings.catchUpEntries` (Raft §7).
    ///
    /// The state machine is itself the snapshot, so compaction copies nothing: its cost does
    /// not grow with the data. A copy is made only when a follower needs one
    /// (``queueSnapshot(_:message:)``). The order matters for crashes: the log only drops what
    /// the state machine holds durably, so a restart always finds the state machine at or
    /// past the log's start and replays the rest.
    ///
    /// While a snapshot is captured or sent, the log is not compacted: a follower installing
    /// it needs the entries right after it, and compacting them away would leave it needing
    /// another snapshot, forever on a busy cluster with a large state (etcd pauses too). A
    /// transfer that stalls (a follower gone) holds the log only for ``snapshotHoldWait(bytes:)``.
    func maybeCompact() {
        let start = log.snapshotMetadata.index.rawValue
        guard !compactionInProgress, !captureInProgress,
              appliedIndex.rawValue >= start + settings.catchUpEntries + settings.snapshotEntries else { return }
        let now = self.now
        guard !snapshotSends.values.contains(where: { now - $0.started < Self.snapshotHoldWait(bytes: $0.reader.snapshot.databaseBytes) })
        else { return }
        compactionInProgress = true
        let started = now
        let store = self.store
        // One fsync, as blocking work: a slow disk does not hold the replica meanwhile.
        environment.blockingWork.run({ () throws -> UInt64 in try store.makeDurable() }, then: { [self] result in
            compactionInProgress = false
            guard !closing else { return }
            do {
                let durable = try result.get()
                guard durable > settings.catchUpEntries else { return }
                let through = LogIndex(durable - settings.catchUpEntries)
                // A snapshot installed from the leader meanwhile may already cover more.
                guard through > log.snapshotMetadata.index else { return }
                let metadata = try raw.snapshotMetadata(at: through)
                try log.compact(through: metadata)
                // Older snapshot files: no follower can use them, no restart needs them.
                let snapshots = self.snapshots
                if snapshots.all().contains(where: { $0.metadata.index < through }) {
                    environment.blockingWork.run({ snapshots.prune(before: through) }, then: { (_: Result<Void, any Error>) in })
                }
                metrics.snapshots.increment()
                metrics.snapshotDuration.recordNanoseconds((now - started).nanoseconds)
                logger.info("log compacted", metadata: [
                    "through": "\(through.rawValue)", "durable_applied": "\(durable)",
                    "ms": "\((now - started).nanoseconds / 1_000_000)",
                ])
                publish()
            } catch {
                logger.error("log compaction failed; the log is kept", metadata: ["error": "\(error)"])
            }
        })
    }

    // MARK: Sending snapshots

    /// The core asks to send a follower the snapshot at the log's start: its entries are
    /// compacted away. Any snapshot from that index on will do (it is all committed state, and
    /// the core takes the follower's answer of a later index as well), so the newest held one
    /// is sent, and when none is recent enough the state machine is copied now and sent when
    /// the copy is done (``captureSnapshot()``). The database goes first, in chunks of their
    /// own frames, then the InstallSnapshot message, naming the snapshot actually sent. Chunks
    /// go out only while the peer's connection keeps up (``pumpSnapshots()``), so a large
    /// snapshot never fills the queue heartbeats share, and never loses a chunk to
    /// back-pressure. Nothing here reads the file: chunks are read as blocking work as they
    /// are needed.
    func queueSnapshot(_ requested: SnapshotMetadata, message: Message) {
        let node = message.to
        if var transfer = snapshotSends[node], transfer.metadata.index >= requested.index,
           snapshots.snapshot(at: transfer.metadata.index)?.metadata == transfer.metadata {
            // Asked again (the core's snapshot state timed out while the follower was busy):
            // a transfer under way carries on, with the newest message at its end, rather than
            // starting over (a large one would never finish).
            transfer.message = Self.naming(transfer.metadata, in: message)
            snapshotSends[node] = transfer
            guard let finished = transfer.finished else { return }
            if now - finished < Self.snapshotPrepareWait(bytes: transfer.reader.snapshot.databaseBytes) {
                send(.raft(transfer.message), to: node)
                return
            }
            // Long enough for the follower to have used it: the data was lost; send it again.
        }
        guard let snapshot = snapshots.all().first, snapshot.metadata.index >= requested.index else {
            snapshotSends[node] = nil
            snapshotsAwaitingCapture[node] = message
            captureSnapshot()
            return
        }
        let reader: SnapshotReader
        do {
            reader = try snapshots.reader(for: snapshot)  // an open(), no reading
        } catch {
            logger.error("cannot open a snapshot to send", metadata: ["error": "\(error)", "peer": "\(node)"])
            snapshotSends[node] = nil
            return
        }
        snapshotSends[node] = SnapshotSend(id: snapshotSendNext, metadata: snapshot.metadata,
                                           message: Self.naming(snapshot.metadata, in: message), reader: reader,
                                           chunkBytes: settings.snapshotChunkBytes, started: now)
        snapshotSendNext += 1
        logger.info("sending a snapshot", metadata: ["peer": "\(node)", "index": "\(snapshot.metadata.index.rawValue)",
                                                     "bytes": "\(snapshot.databaseBytes)"])
    }

    /// The core's InstallSnapshot message, naming the snapshot that is sent instead of the
    /// one it asked for.
    private static func naming(_ metadata: SnapshotMetadata, in message: Message) -> Message {
        var message = message
        message.kind = .snapshot(metadata)
        return message
    }

    /// Copies the state machine into the snapshot store as blocking work (a consistent copy:
    /// neither applies nor reads wait), then sends it to every follower waiting for one.
    func captureSnapshot() {
        guard !captureInProgress else { return }
        captureInProgress = true
        let started = now
        let snapshots = self.snapshots
        let store = self.store
        let capture = snapshots.directory + "/capture-\(random.next()).db.tmp"
        environment.blockingWork.run({ try store.copy(to: capture) }, then: { [self] result in
            // Back on the replica's context: the core knows the term and configuration at that index.
            do {
                let metadata = try raw.snapshotMetadata(at: LogIndex(try result.get()))
                environment.blockingWork.run({ try snapshots.commit(databaseAt: capture, metadata: metadata) }, then: { [self] result in
                    captured(result, capture: capture, started: started)
                })
            } catch {
                captured(.failure(error), capture: capture, started: started)
            }
        })
    }

    private func captured(_ result: Result<SnapshotStore.Snapshot, any Error>, capture: String, started: Moment) {
        captureInProgress = false
        FileIO.removeIfPresent(capture)
        let waiting = snapshotsAwaitingCapture
        snapshotsAwaitingCapture = [:]
        guard !closing else { return }
        switch result {
        case .success(let snapshot):
            logger.info("captured a snapshot to send", metadata: [
                "index": "\(snapshot.metadata.index.rawValue)", "bytes": "\(snapshot.databaseBytes)",
                "ms": "\((now - started).nanoseconds / 1_000_000)",
            ])
        case .failure(let error):
            // The core asks again after its snapshot state times out.
            logger.error("cannot capture a snapshot to send", metadata: ["error": "\(error)"])
            return
        }
        // Those still waiting for a snapshot get it now; the core asks again for any other.
        guard raw.role == .leader else { return }
        for message in waiting.sorted(by: { $0.key < $1.key }).map(\.value) {
            guard case .snapshot(let requested) = message.kind, message.term == raw.term else { continue }
            queueSnapshot(requested, message: message)
        }
        pumpSnapshots()
    }

    /// How long a snapshot transfer holds back log compaction: long enough to send and
    /// install it at a modest speed.
    static func snapshotHoldWait(bytes: Int) -> Duration {
        .seconds(60) + .milliseconds(Int64(bytes) * 1000 / Int64(16 << 20))
    }

    static func snapshotPrepareWait(bytes: Int) -> Duration {
        max(.seconds(2), .milliseconds(Int64(bytes) * 1000 / Int64(snapshotPrepareBytesPerSecondMin)))
    }

    /// Moves every snapshot in flight along, as far as each connection allows.
    func pumpSnapshots() {
        for node in snapshotSends.keys.sorted() { pumpSnapshot(to: node) }
    }

    /// Sends the chunks of `node`'s transfer that are read, in order, while its connection
    /// keeps up; then starts reads for the next ones, up to ``snapshotReadsAheadMax``. Called
    /// at every flush and whenever a read finishes.
    func pumpSnapshot(to node: NodeID) {
        guard var transfer = snapshotSends[node] else { return }
        if let reason = reasonToStop(transfer, to: node) {
            snapshotSends[node] = nil
            if transfer.finished == nil {
                logger.info("snapshot transfer abandoned", metadata: [
                    "peer": "\(node)", "index": "\(transfer.metadata.index.rawValue)", "reason": "\(reason)",
                    "sent_bytes": "\(min(transfer.chunksSent * settings.snapshotChunkBytes, transfer.reader.snapshot.databaseBytes))",
                ])
            }
            return
        }
        guard transfer.finished == nil else { return }
        guard let address = addressBook[node]?.raft else {
            snapshotSends[node] = nil
            return
        }
        // Each frame goes only when the connection takes it (never queued behind heartbeats,
        // never dropped for back-pressure); the InstallSnapshot message follows the last chunk
        // on the same connection.
        let incarnation = raw.incarnation(of: node) ?? 0
        while transfer.finished == nil {
            let frame: [UInt8]
            if transfer.chunksSent < transfer.chunkCount {
                guard let ready = transfer.framesReady[transfer.chunksSent] else { break }
                frame = ready
            } else {
                frame = PeerRecord.encodeFrame([.raft(transfer.message)])
            }
            guard let connection = peers.sendIfReady(frame, to: node, address: address, incarnation: incarnation) else { break }
            if let previous = transfer.connection, previous != connection {
                // The connection was made anew: what went on the old one may not all have
                // arrived, and the follower takes chunks only in order. Start over on this one
                // (the follower ignores the out-of-order frame just sent).
                startOver(&transfer, on: connection, to: node)
                break
            }
            transfer.connection = connection
            if transfer.chunksSent < transfer.chunkCount {
                transfer.framesReady[transfer.chunksSent] = nil
                transfer.chunksSent += 1
            } else {
                let finished = now
                transfer.finished = finished
                let bytes = transfer.reader.snapshot.databaseBytes
                let ms = max(1, (finished - transfer.started).nanoseconds / 1_000_000)
                logger.info("sent a snapshot", metadata: [
                    "peer": "\(node)", "index": "\(transfer.metadata.index.rawValue)", "bytes": "\(bytes)", "ms": "\(ms)",
                    "mb_per_s": "\(Int64(bytes) * 1000 / ms / 1_000_000)", "restarts": "\(transfer.restarts)",
                ])
            }
        }
        while transfer.chunksRead < transfer.chunkCount
                && transfer.readsInFlight + transfer.framesReady.count < Self.snapshotReadsAheadMax {
            readChunk(transfer.chunksRead, of: transfer, to: node)
            transfer.chunksRead += 1
            transfer.readsInFlight += 1
        }
        snapshotSends[node] = transfer
    }

    /// Sends `transfer` again from its first chunk, on `connection`. Reads in flight for the
    /// old pass are ignored when they finish (the id changes).
    private func startOver(_ transfer: inout SnapshotSend, on connection: UInt64, to node: NodeID) {
        logger.info("snapshot transfer starts over: the connection was made anew", metadata: [
            "peer": "\(node)", "index": "\(transfer.metadata.index.rawValue)",
            "sent_bytes": "\(min(transfer.chunksSent * settings.snapshotChunkBytes, transfer.reader.snapshot.databaseBytes))",
        ])
        transfer.id = snapshotSendNext
        snapshotSendNext += 1
        transfer.connection = connection
        transfer.chunksRead = 0
        transfer.chunksSent = 0
        transfer.readsInFlight = 0
        transfer.framesReady = [:]
        transfer.restarts += 1
        snapshotTransferRestarts += 1
        metrics.snapshotRestarts.increment()
    }

    /// Why a transfer should end now, if it should. A finished one is kept (so that repeated
    /// requests resend only the message) until the follower has it or the wait runs out.
    private func reasonToStop(_ transfer: SnapshotSend, to node: NodeID) -> String? {
        guard raw.role == .leader else { return "no longer the leader" }
        let status = raw.status
        guard let follower = status.followers[node] else { return "no longer a member" }
        if follower.match >= transfer.metadata.index { return "the follower has it" }
        if let finished = transfer.finished {
            let expired = now - finished >= Self.snapshotPrepareWait(bytes: transfer.reader.snapshot.databaseBytes)
            return expired ? "unanswered" : nil
        }
        // Pruned: a newer snapshot replaced it; the core's next request names that one.
        guard snapshots.snapshot(at: transfer.metadata.index)?.metadata == transfer.metadata else { return "pruned" }
        return nil
    }

    /// Reads chunk `number` as blocking work and encodes its frame there, so the replica only
    /// hands finished frames to the connection.
    private func readChunk(_ number: Int, of transfer: SnapshotSend, to node: NodeID) {
        let reader = transfer.reader
        let metadata = transfer.metadata
        let id = transfer.id
        let offset = number * settings.snapshotChunkBytes
        let total = reader.snapshot.databaseBytes
        let count = min(settings.snapshotChunkBytes, total - offset)
        environment.blockingWork.run({
            let chunk = SnapshotChunk(index: metadata.index, term: metadata.term, offset: UInt64(offset),
                                      totalBytes: UInt64(total), bytes: try reader.read(at: offset, count: count))
            return PeerRecord.encodeFrame([.snapshotChunk(chunk)])
        }, then: { [self] result in
            guard !closing, var current = snapshotSends[node], current.id == id else { return }  // abandoned meanwhile
            current.readsInFlight -= 1
            switch result {
            case .success(let frame):
                current.framesReady[number] = frame
                snapshotSends[node] = current
                pumpSnapshot(to: node)
            case .failure(let error):
                logger.error("cannot read a snapshot to send; abandoning the transfer", metadata: [
                    "peer": "\(node)", "index": "\(metadata.index.rawValue)", "error": "\(error)",
                ])
                snapshotSends[node] = nil
            }
        })
    }

    // MARK: Receiving snapshots

    /// Chunks must arrive in order (one connection carries them); one that does not continue
    /// the transfer in progress is ignored, and the leader starts a transfer with a gap over. A chunk is written where it arrives,
    /// on the replica's context: one pwrite of at most ``snapshotChunkBytes`` into the page cache.
    func receive(_ chunk: SnapshotChunk) {
        // Not needed (the log already covers it), or already being made durable or installed:
        // the leader started the transfer again meanwhile.
        if chunk.index <= raw.commitIndex { return }
        if let preparing = snapshotPreparing, preparing.metadata.index == chunk.index, preparing.metadata.term == chunk.term {
            return
        }
        if let prepared = preparedInstall, prepared.metadata.index == chunk.index, prepared.metadata.term == chunk.term {
            return
        }
        if chunk.offset == 0 {
            dropPartialSnapshot()
            receiving = SnapshotReceive(index: chunk.index, term: chunk.term,
                                        path: snapshots.receivingPath(index: chunk.index, term: chunk.term),
                                        received: 0, total: chunk.totalBytes)
        }
        guard let current = receiving, current.index == chunk.index, current.term == chunk.term,
              current.received == chunk.offset, current.total == chunk.totalBytes else {
            // Out of order: a frame of an earlier connection arriving late, or one sent on a new
            // connection just before the leader noticed and started over. The transfer in
            // progress (if any) is kept; one that really has a gap is started over by the
            // leader from offset 0, which replaces it.
            return
        }
        do {
            try FileIO.writeBytes(chunk.bytes, to: current.path, at: Int(chunk.offset))
            receiving?.received += UInt64(chunk.bytes.count)
        } catch {
            logger.error("cannot write an incoming snapshot", metadata: ["error": "\(error)"])
            dropPartialSnapshot()
        }
    }

    private func dropPartialSnapshot() {
        if let partial = receiving { FileIO.removeIfPresent(partial.path) }
        receiving = nil
    }

    /// Whether an InstallSnapshot message may be stepped now. The database it names must be
    /// durable here first, and its install prepared (a private copy, so that installing it is
    /// a rename): both are file-sized work, so they run as blocking work, and the
    /// message is stepped when they are done (``snapshotPrepared(_:)``).
    func admitSnapshot(_ message: Message, _ metadata: SnapshotMetadata) -> Bool {
        // The log already covers it: the core answers with what it has and installs nothing.
        if metadata.index <= raw.commitIndex { return true }
        // A Ready is stalled (the disk is full), perhaps with a snapshot to install: a newer one
        // committed into the store now would prune that one's file before the retry installs
        // it. The leader sends again once this node answers.
        if stalledReady != nil { return false }
        if preparedInstall?.metadata == metadata { return true }
        if let preparing = snapshotPreparing {
            if preparing.metadata == metadata { snapshotPreparing?.message = message }  // stepped when ready
            return false
        }
        let source: SnapshotSource
        if let held = snapshots.snapshot(at: metadata.index), held.metadata == metadata {
            source = .held(held)
        } else if let current = receiving, current.index == metadata.index, current.term == metadata.term,
                  current.received == current.total {
            receiving = nil
            source = .received(path: current.path)
        } else {
            logger.info("snapshot message without its complete data; the leader will resend", metadata: [
                "index": "\(metadata.index.rawValue)",
            ])
            return false
        }
        prepareSnapshot(from: source, metadata: metadata, message: message)
        return false
    }

    enum SnapshotSource: Sendable {
        /// Already in the snapshot store.
        case held(SnapshotStore.Snapshot)
        /// Received whole at `path`, not yet committed.
        case received(path: String)
    }

    private func prepareSnapshot(from source: SnapshotSource, metadata: SnapshotMetadata, message: Message) {
        snapshotPreparing = (metadata, message)
        let started = now
        let snapshots = self.snapshots
        let store = self.store
        let clock = environment.clock
        environment.blockingWork.run({
            let snapshot: SnapshotStore.Snapshot
            switch source {
            case .held(let held):
                snapshot = held
            case .received(let path):
                defer { FileIO.removeIfPresent(path) }  // gone already once committed (renamed)
                snapshot = try snapshots.commit(databaseAt: path, metadata: metadata)
            }
            let committed = clock.now
            let replacement = try store.prepareReplacement(moving: try snapshots.prepareInstall(of: snapshot))
            return (replacement, committed)
        }, then: { [self] result in
            let pending = snapshotPreparing
            snapshotPreparing = nil
            switch result {
            case .success(let (replacement, committed)):
                guard !closing, let pending, pending.metadata == metadata else {
                    replacement.discard()
                    return
                }
                let now = self.now
                logger.info("stored an incoming snapshot and prepared its install", metadata: [
                    "index": "\(metadata.index.rawValue)", "keys": "\(replacement.keys)",
                    "commit_ms": "\((committed - started).nanoseconds / 1_000_000)",
                    "prepare_ms": "\((now - committed).nanoseconds / 1_000_000)",
                ])
                snapshotPrepared(replacement, for: pending)
            case .failure(let error):
                logger.error("cannot store an incoming snapshot; the leader will resend", metadata: ["error": "\(error)"])
            }
        })
    }

    /// Back on the replica's context with the snapshot durable and its install prepared: step the message
    /// (the core decides afresh: a message from an old term, say, is refused) and handle the
    /// Ready it makes, which installs the snapshot.
    private func snapshotPrepared(_ replacement: PreparedReplacement, for pending: (metadata: SnapshotMetadata, message: Message)) {
        if let previous = preparedInstall { previous.replacement.discard() }
        preparedInstall = (pending.metadata, replacement)
        do {
            try raw.step(pending.message)
        } catch {
            logger.debug("message refused by the core", metadata: ["from": "\(pending.message.from)", "error": "\(error)"])
        }
        processReady()
        // Not installed, and no stalled Ready will (the core no longer needed it): the copy goes.
        if let prepared = preparedInstall, prepared.metadata == pending.metadata, stalledReady?.snapshot != pending.metadata {
            prepared.replacement.discard()
            preparedInstall = nil
        }
    }

    /// Ready.snapshot: the log restarts after the snapshot, and the state machine becomes it.
    /// Order for crashes: the snapshot file is durable (before the message was stepped), then
    /// the log records it, then the database is replaced. A crash between the last two is
    /// repaired at start-up (the applied index is behind the log's start: reinstall). The
    /// replacement is a rename and an index swap, prepared as blocking work; only without one
    /// (a retry after a failed install) is the file copied and read here, holding the replica
    /// for as long.
    func installSnapshot(_ metadata: SnapshotMetadata) throws {
        guard let snapshot = snapshots.snapshot(at: metadata.index) else {
            fatalError("the core installs snapshot \(metadata.index) but its file is gone")
        }
        if metadata.index > log.snapshotMetadata.index { try log.applySnapshot(metadata) }
        let started = now
        if let prepared = preparedInstall, prepared.metadata == metadata {
            preparedInstall = nil
            try store.install(prepared.replacement)  // consumes the file, installed or not
        } else {
            logger.warning("installing a snapshot without a prepared install: copying and reading it on the replica's context", metadata: [
                "index": "\(metadata.index.rawValue)", "bytes": "\(snapshot.databaseBytes)",
            ])
            try store.replace(with: snapshot.databasePath)
        }
        appliedIndex = metadata.index
        applyQueue.drop(through: metadata.index)
        if let partial = receiving, partial.index <= metadata.index { dropPartialSnapshot() }
        for record in (try? store.members()) ?? [] {
            addressBook[NodeID(record.id)] = MemberAddresses(raft: record.raftAddress, http: record.httpAddress, promote: record.promote)
        }
        metrics.snapshotsInstalled.increment()
        snapshotsInstalled += 1
        logger.notice("installed a snapshot from the leader", metadata: [
            "index": "\(metadata.index.rawValue)", "bytes": "\(snapshot.databaseBytes)",
            "install_ms": "\((now - started).nanoseconds / 1_000_000)",
        ])
        releaseReads()
    }
}
