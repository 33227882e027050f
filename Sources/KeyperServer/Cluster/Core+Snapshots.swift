import KeyperClient
import KeyperRaft
import KeyperStorage
import KeyperTransport
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A snapshot on its way to one follower.
struct SnapshotSend {
    var metadata: SnapshotMetadata
    var message: Message
    var bytes: [UInt8]
    var offset: Int
}

extension Core {
    static let snapshotChunkBytes = 512 * 1024

    // MARK: Taking snapshots

    /// Every `snapshotEntries` applied entries: copy the state machine in the background, make
    /// the copy durable, and only then drop the log entries it covers (Raft §7).
    func maybeSnapshot() {
        guard !snapshotInProgress,
              appliedIndex.rawValue >= storage.snapshotMetadata.index.rawValue + snapshotEntries else { return }
        snapshotInProgress = true
        let started = ContinuousClock.now
        let snapshots = self.snapshots
        let store = self.store
        let capture = snapshots.directory + "/capture-\(UInt64.random(in: 0...UInt64.max)).db.tmp"
        // The copy and its fsync run on a blocking-I/O thread; the loop keeps going meanwhile.
        NIOThreadPool.singleton.runIfActive(eventLoop: loop) {
            try store.copy(to: capture)
        }.flatMap { [self] applied -> EventLoopFuture<SnapshotStore.Snapshot> in
            // Back on the loop: the core knows the term and configuration at that index.
            do {
                let metadata = try raw.snapshotMetadata(at: LogIndex(applied))
                return NIOThreadPool.singleton.runIfActive(eventLoop: loop) {
                    try snapshots.commit(databaseAt: capture, metadata: metadata)
                }
            } catch {
                return loop.makeFailedFuture(error)
            }
        }.whenComplete { [self] result in
            snapshotInProgress = false
            unlink(capture)
            switch result {
            case .success(let snapshot):
                compact(through: snapshot, took: ContinuousClock.now - started)
            case .failure(let error):
                logger.error("snapshot failed; the log is kept", metadata: ["error": "\(error)"])
            }
        }
    }

    private func compact(through snapshot: SnapshotStore.Snapshot, took duration: Duration) {
        // A snapshot installed from the leader meanwhile may already cover more.
        guard snapshot.metadata.index > storage.snapshotMetadata.index else { return }
        do {
            try storage.compact(through: snapshot.metadata)
        } catch {
            logger.error("log compaction failed; the log is kept", metadata: ["error": "\(error)"])
            return
        }
        metrics.snapshots.increment()
        metrics.snapshotDuration.recordNanoseconds(duration.nanoseconds)
        logger.info("snapshot taken; log compacted", metadata: [
            "index": "\(snapshot.metadata.index.rawValue)", "bytes": "\(snapshot.databaseBytes)",
            "ms": "\(duration.nanoseconds / 1_000_000)",
        ])
        publish()
    }

    // MARK: Sending snapshots

    /// The core asks to send the snapshot its storage holds: its database goes first, in
    /// chunks of their own frames, then the InstallSnapshot message itself. Chunks go out only
    /// while the peer's connection keeps up (``pumpSnapshots()``), so a large snapshot never
    /// fills the queue heartbeats share, and never loses a chunk to back-pressure.
    func queueSnapshot(_ metadata: SnapshotMetadata, message: Message) {
        guard let snapshot = snapshots.snapshot(at: metadata.index),
              let bytes = try? FileIO.readFile(snapshot.databasePath) else {
            logger.error("no snapshot file to send", metadata: ["index": "\(metadata.index.rawValue)", "peer": "\(message.to)"])
            return
        }
        snapshotSends[message.to] = SnapshotSend(metadata: metadata, message: message, bytes: bytes, offset: 0)
        logger.info("sending a snapshot", metadata: ["peer": "\(message.to)", "index": "\(metadata.index.rawValue)",
                                                     "bytes": "\(bytes.count)"])
    }

    /// Sends the next chunks of every snapshot in flight, as far as each connection allows.
    func pumpSnapshots() {
        for (node, var transfer) in snapshotSends {
            guard let address = members[node]?.raft else {
                snapshotSends[node] = nil
                continue
            }
            var sent = 0
            // The first chunk may open the connection; later ones wait until it is writable.
            while (transfer.offset == 0 || transport.canSend(to: node.rawValue)) && sent < 8 {
                let end = min(transfer.offset + Self.snapshotChunkBytes, transfer.bytes.count)
                let chunk = SnapshotChunk(index: transfer.metadata.index, term: transfer.metadata.term,
                                          offset: UInt64(transfer.offset), totalBytes: UInt64(transfer.bytes.count),
                                          bytes: Array(transfer.bytes[transfer.offset..<end]))
                var records: [PeerRecord] = [.snapshotChunk(chunk)]
                let last = end == transfer.bytes.count
                if last { records.append(.raft(transfer.message)) }
                transport.send(ByteBuffer(bytes: PeerRecord.encodeFrame(records)), to: node.rawValue, address: address,
                               incarnation: raw.incarnation(of: node) ?? 0)
                transfer.offset = end
                sent += 1
                if last { break }
            }
            snapshotSends[node] = transfer.offset == transfer.bytes.count ? nil : transfer
        }
    }

    // MARK: Receiving snapshots

    /// Chunks must arrive in order (one connection carries them); a gap abandons the
    /// transfer, and the leader sends the snapshot again after its snapshot timeout.
    func receive(_ chunk: SnapshotChunk) {
        let path = snapshots.receivingPath(index: chunk.index, term: chunk.term)
        if chunk.offset == 0 {
            unlink(path)
            receiving = (chunk.index, chunk.term, 0, chunk.totalBytes)
        }
        guard let current = receiving, current.index == chunk.index, current.term == chunk.term,
              current.received == chunk.offset, current.total == chunk.totalBytes else {
            receiving = nil
            return
        }
        do {
            try FileIO.writeBytes(chunk.bytes, to: path, at: Int(chunk.offset))
            receiving?.received += UInt64(chunk.bytes.count)
        } catch {
            logger.error("cannot write an incoming snapshot", metadata: ["error": "\(error)"])
            receiving = nil
        }
    }

    /// Before the core sees InstallSnapshot, the database it names must be durable here.
    func snapshotReady(for metadata: SnapshotMetadata) -> Bool {
        if snapshots.snapshot(at: metadata.index)?.metadata == metadata { return true }
        guard let current = receiving, current.index == metadata.index, current.term == metadata.term,
              current.received == current.total else { return false }
        receiving = nil
        do {
            _ = try snapshots.commit(databaseAt: snapshots.receivingPath(index: metadata.index, term: metadata.term),
                                     metadata: metadata)
            return true
        } catch {
            logger.error("cannot store an incoming snapshot", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Ready.snapshot: the log restarts after the snapshot, and the state machine becomes it.
    /// Order for crashes: the snapshot file is durable (before the message was stepped), then
    /// the log records it, then the database is replaced. A crash between the last two is
    /// repaired at start-up (the applied index is behind the log's start: reinstall).
    func installSnapshot(_ metadata: SnapshotMetadata) throws {
        guard let snapshot = snapshots.snapshot(at: metadata.index) else {
            fatalError("the core installs snapshot \(metadata.index) but its file is gone")
        }
        if metadata.index > storage.snapshotMetadata.index { try storage.applySnapshot(metadata) }
        try store.replace(with: snapshot.databasePath, durability: .normal)
        appliedIndex = metadata.index
        applyQueue.removeAll { $0.index <= metadata.index }
        for record in (try? store.members()) ?? [] {
            members[NodeID(record.id)] = MemberAddresses(raft: record.raftAddress, http: record.httpAddress)
        }
        metrics.snapshotsInstalled.increment()
        logger.notice("installed a snapshot from the leader", metadata: ["index": "\(metadata.index.rawValue)"])
        releaseReads()
    }
}
