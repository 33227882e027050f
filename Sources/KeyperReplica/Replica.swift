import KeyperBase
import KeyperRaft
import KeyperStorage
import KeyperWire
import Logging
import Synchronization

/// One member of a Keyper cluster: the Raft core, its log, the state machine, the address book
/// and the clients waiting on them, driven through one serial context.
///
/// The replica does no I/O of its own beyond its storage: peers, blocking work and the clock
/// come from its ``ReplicaEnvironment``. A server runs it on an event loop with TCP peers; the
/// simulator runs the same type with simulated ones.
///
/// `@unchecked Sendable` because it is confined to one serial context: its host calls it only
/// from there, and the environment calls back only there.
package final class Replica: @unchecked Sendable {
    package let id: NodeID
    let environment: ReplicaEnvironment
    var peers: any PeerSender { environment.peers }
    var raw: RawNode
    /// The Raft log on disk (the simulator reads what each replica applied from it).
    package internal(set) var log: RaftLogStorage
    /// The state machine.
    package let store: KVStore
    package let directory: DataDirectory
    /// The file layer under the Raft log (a simulated one under simulation).
    let walFileSystem: @Sendable () -> any WALFileSystem
    let snapshots: SnapshotStore
    /// A compaction is waiting for the state machine to be made durable.
    var compactionInProgress = false
    /// A copy of the state machine is being captured for followers that need a snapshot.
    var captureInProgress = false
    /// Followers waiting for that capture: what the core asked to send each of them.
    var snapshotsAwaitingCapture: [NodeID: Message] = [:]
    /// The snapshot being received from the leader, chunk by chunk, in order.
    var receiving: SnapshotReceive?
    /// A received snapshot being made durable, and its install prepared, off the loop; its
    /// InstallSnapshot message is stepped when that is done (at most one at a time).
    var snapshotPreparing: (metadata: SnapshotMetadata, message: Message)?
    /// A snapshot read into an index of its own, off the loop: its install is a rename and a swap.
    var preparedInstall: (metadata: SnapshotMetadata, replacement: PreparedReplacement)?
    var identity: NodeIdentity
    let raftConfig: Config
    let settings: ReplicaSettings
    let logger: Logger
    let metrics: ReplicaMetrics
    package let published: PublishedBox
    /// Draws the replica's own random numbers (read round numbers, file names): seeded from
    /// the Raft configuration's seed, so a simulation replays.
    var random: SplitMix64

    /// Where each member is reached, learned from configuration entries as they are appended.
    var addressBook: [NodeID: MemberAddresses]
    /// The last entry applied to the state machine. Invariant: appliedIndex <= raw.commitIndex.
    package internal(set) var appliedIndex: LogIndex
    /// Committed entries not yet in the state machine.
    var applyQueue = ApplyQueue()
    /// A `Ready` whose persist failed (disk full); nothing else happens until it is written.
    var stalledReady: Ready?
    /// The WAL could not be written (disk full); cleared when the stalled `Ready` is written.
    var logFull = false
    /// The state machine could not apply (disk full); cleared when a retried apply succeeds.
    var stateFull = false
    var diskFull: Bool { logFull || stateFull }
    /// Set by ``close()``: new work is refused, nothing more is written.
    var closing = false

    /// Every client this replica owes an answer (see ClientWaiters.swift).
    var clients: ClientWaiters
    var adoptionTokenNext: UInt64 = 1

    /// Records to send at the next flush.
    var outbox = Outbox()
    /// Snapshots being streamed to followers, paced by their connections.
    var snapshotSends: [NodeID: SnapshotSend] = [:]
    var snapshotSendNext: UInt64 = 1
    var lastLeader: NodeID?
    /// The incarnation each peer announced in the handshake of its connection to us: where an
    /// answer goes when the configuration does not list the peer (yet).
    var announcedIncarnations: [NodeID: UInt64] = [:]
    /// The Raft address each peer of this cluster announced in its handshake: where an answer
    /// goes when the address book does not list the peer yet (a leader that joined while this
    /// node was away, its joining entry compacted into a snapshot this node cannot get until it
    /// answers).
    var announcedAddresses: [NodeID: String] = [:]

    package init(raw: RawNode, log: RaftLogStorage, store: KVStore, directory: DataDirectory,
                 walFileSystem: @escaping @Sendable () -> any WALFileSystem, snapshots: SnapshotStore, identity: NodeIdentity,
                 raftConfig: Config, settings: ReplicaSettings, addressBook: [NodeID: MemberAddresses], appliedIndex: LogIndex,
                 environment: ReplicaEnvironment, logger: Logger, metrics: ReplicaMetrics) {
        self.id = raftConfig.id
        self.environment = environment
        self.raw = raw
        self.log = log
        self.store = store
        self.directory = directory
        self.walFileSystem = walFileSystem
        self.snapshots = snapshots
        self.identity = identity
        self.raftConfig = raftConfig
        self.settings = settings
        self.addressBook = addressBook
        self.appliedIndex = appliedIndex
        self.logger = logger
        self.metrics = metrics
        // Round numbers start at a random point on every start (as request sequences do): an
        // answer to a round of this node's previous run must not release a round of this one.
        random = SplitMix64(seed: raftConfig.randomSeed ^ 0x5EED_0F_2EAD_0000)
        clients = ClientWaiters(reads: ReadBarrier(firstRound: random.next() >> 1 | 1))
        published = PublishedBox(PublishedState(status: raw.status, addressBook: addressBook, appliedIndex: appliedIndex,
                                                snapshotIndex: log.snapshotMetadata.index, clusterID: identity.clusterID,
                                                incarnation: identity.incarnation))
    }

    var now: Moment { environment.clock.now }

    // MARK: Inspection (for a simulator's checks)

    /// The core's view: role, term, leader, commit, configuration.
    package var status: Status { raw.status }
    /// Snapshots installed from a leader since this replica was made.
    package internal(set) var snapshotsInstalled = 0
    /// Snapshot transfers this replica started over on a new connection.
    package internal(set) var snapshotTransferRestarts = 0

    // MARK: Entry points (on the loop)

    /// Steps everything that arrived, then handles every `Ready` it made.
    package func run(_ batch: ReplicaInput) {
        guard !closing else { return batch.refuseAll() }
        for (from, record) in batch.records { handle(record, from: from) }
        for proposal in batch.proposals { propose(proposal) }
        clients.reads.add(batch.reads)
        for request in batch.admin { handle(request) }
        startReadRound()
        processReady()
    }

    /// One tick of the Raft clock (`--tick-ms` in a server).
    package func tick() {
        guard !closing else { return }
        raw.tick()
        expireWaiters(now: now)
        if !clients.writesWaitingForLeader.isEmpty { flushWaitingForLeader() }
        startReadRound()
        proposeWaitingMemberChanges()
        promoteCaughtUpLearners()
        applyIfDue(force: true)  // what a follower let gather is applied within a tick
        if let round = clients.reads.tick(ticksMax: settings.electionTicks) {
            try? raw.readIndex(context: ReadBarrier.context(round: round))
        }
        processReady()
    }

    // MARK: Ready

    /// Stops the loop's work for shutdown: every waiter is answered, nothing more is written.
    package func close() {
        closing = true
        failAllWaiters(.shuttingDown)
        log.close()
    }

    package func processReady() {
        guard !closing else { return }
        if let stalled = stalledReady {
            guard persist(stalled) else { return flushAndPublish() }
            stalledReady = nil
            finish(stalled)
        }
        while raw.hasReady || startReadRoundIfIdle() {
            let ready = raw.ready()
            let started = now
            if let soft = ready.softState { leadershipChanged(soft) }
            // Thesis §10.2.1: the leader's appends leave before its own fsync.
            queue(ready.messages)
            flush()
            learnAddresses(from: ready.entries)
            answerBeforePersist(ready)
            let persisting = now
            guard persist(ready) else {
                stalledReady = ready
                break
            }
            let persisted = now
            finish(ready)
            reportIfSlow(ready, started: started, persisting: persisting, persisted: persisted)
        }
        applyIfDue()  // a failed apply is retried here
        flushAndPublish()
    }

    /// A Ready that held the loop for long says where the time went (as etcd warns of slow
    /// fdatasyncs and applies): everything else on this node waited meanwhile.
    private func reportIfSlow(_ ready: Ready, started: Moment, persisting: Moment, persisted: Moment) {
        let finished = now
        guard finished - started >= Self.slowReady else { return }
        func ms(_ duration: Duration) -> String { String(duration.roundedMilliseconds) }
        logger.warning("a Raft step held the loop for long", metadata: [
            "total_ms": "\(ms(finished - started))",
            "before_persist_ms": "\(ms(persisting - started))",
            "persist_ms": "\(ms(persisted - persisting))",
            "after_persist_ms": "\(ms(finished - persisted))",
            "entries": "\(ready.entries.count)",
            "committed": "\(ready.committedEntries.count)",
            "messages": "\(ready.messages.count + ready.messagesAfterPersist.count)",
        ])
    }

    static let slowReady = Duration.milliseconds(100)

    /// Writes a `Ready`'s entries and hard state with one sync. False when the disk is full:
    /// the `Ready` is kept and retried on every tick; nothing after it happens meanwhile.
    private func persist(_ ready: Ready) -> Bool {
        guard ready.snapshot != nil || !ready.entries.isEmpty || ready.hardState != nil else { return true }
        let started = now
        // Sync only what a promise depends on (Ready.mustSync, etcd's rule): a commit index
        // alone is written but not synced. This saves one fsync per write.
        let sync = ready.mustSync
        do {
            // Also when the log already records it but the state machine was not replaced yet
            // (a disk that filled up in between): the retried Ready finishes the install.
            if let snapshot = ready.snapshot, snapshot.index > log.snapshotMetadata.index || snapshot.index > appliedIndex {
                try installSnapshot(snapshot)
            }
            try log.save(ready.entries, hardState: ready.hardState, sync: sync)
        } catch let error where error.isDiskFull {
            if !logFull { logger.error("the disk is full; writes are refused until space returns", metadata: ["error": "\(error)"]) }
            logFull = true
            return false
        } catch {
            // Anything else leaves storage this process cannot vouch for (WALError.failed): stop,
            // and let a restart re-read the disk, rather than acknowledge on a guess.
            fatalError("cannot persist the Raft log: \(error)")
        }
        if sync { metrics.walSyncDuration.recordNanoseconds((now - started).nanoseconds) }
        if logFull {
            logger.notice("the disk has space again; writes resume")
            logFull = false
        }
        return true
    }

    /// What of a `Ready` does not wait for its fsync: committed entries this node already holds
    /// durably (on a leader, all of them: it counts itself towards a commit only once its own
    /// copy is synced) are applied, and confirmed reads released, before this Ready's sync
    /// rather than after it. Clients are answered one fsync sooner, and in a closed loop that
    /// is throughput as well as latency. Entries the Ready itself writes (a follower's
    /// appends, which may replace an unsynced or conflicting suffix) still wait.
    private func answerBeforePersist(_ ready: Ready) {
        guard ready.snapshot == nil else { return }
        var durable = log.lastIndex
        if let first = ready.entries.first, first.index <= durable { durable = first.index.previous() }
        // Reads first: one confirmed at an index not yet applied makes the apply below due.
        releaseRounds(of: ready)
        enqueueForApply(ready.committedEntries.prefix { $0.index <= durable })
        applyIfDue()
    }

    private func finish(_ ready: Ready) {
        queue(ready.messagesAfterPersist)
        // Apply Ready by Ready, so a long catch-up never holds more than one batch
        // (Config.applyBytesMax) in memory or keeps the loop from ticking for long.
        enqueueForApply(ready.committedEntries)
        applyIfDue()
        if ready.snapshot != nil { releaseRounds(of: ready) }  // left by answerBeforePersist until installed
        raw.advance(ready)
    }

    /// The Ready's finished read rounds: confirmed ones wait for their index to be applied;
    /// dropped ones (leadership moved before they finished) try again with the next leader.
    private func releaseRounds(of ready: Ready) {
        for state in ready.readStates {
            guard let round = ReadBarrier.round(from: state.context) else { continue }
            for reader in clients.reads.confirm(round: round, at: state.index, applied: appliedIndex) { reader.succeed() }
        }
        for context in ready.droppedReads {
            if let round = ReadBarrier.round(from: context) { clients.reads.drop(round: round) }
        }
    }

    /// Applies the queued committed entries now when somebody waits for them (a leader's
    /// clients, this node's forwarded writes, confirmed reads, membership changes) or the
    /// queue is full; otherwise, on a follower, lets them gather until the next tick (see
    /// ``ApplyQueue``). Applying later is always safe; the state machine only lags, and stale
    /// reads say by how much (`X-Keyper-Applied-Index`).
    func applyIfDue(force: Bool = false) {
        guard !applyQueue.isEmpty else { return }
        let due = force || raw.role == .leader
            || clients.reads.hasConfirmedReads  // linearizable reads confirmed at a later index
            || !clients.writes.isEmpty          // this node's forwarded writes
            || !clients.memberChanges.isEmpty
            || applyQueue.mustApply
        if due { applyCommitted() }
    }

    /// Queues entries not yet applied or queued.
    private func enqueueForApply<Entries: Collection<Entry>>(_ entries: Entries) {
        applyQueue.enqueue(entries, applied: appliedIndex)
    }

    private func flushAndPublish() {
        flush()
        publish()
    }

    // MARK: Proposals

    private func propose(_ proposal: PendingProposal) {
        guard !closing else { return proposal.waiter.fail(.shuttingDown) }
        guard !diskFull else { return proposal.waiter.fail(.diskFull) }
        if raw.role == .leader {
            do {
                try raw.propose(proposal.data)
                metrics.proposals.increment()
                clients.writes[proposal.request.sequence] = proposal.waiter
            } catch {
                proposal.waiter.fail(ReplicaError(error))
            }
        } else if let leader = raw.leader {
            // Forward over the peer connection; we answer when we apply the entry ourselves.
            clients.writes[proposal.request.sequence] = proposal.waiter
            send(.forward(request: proposal.request, data: proposal.data), to: leader)
        } else {
            clients.writesWaitingForLeader.append(proposal)
        }
    }

    /// Drops the address of a node that is not a member (a join that failed or expired), and
    /// the connection with its queued frames, so a stale request never reaches it later.
    func forgetUnlessMember(_ node: NodeID) {
        guard !raw.status.configuration.members.contains(node), node != id else { return }
        addressBook.removeValue(forKey: node)
        announcedAddresses.removeValue(forKey: node)
        peers.forget(node)
    }

    private func flushWaitingForLeader() {
        guard raw.leader != nil else { return }
        let waiting = clients.writesWaitingForLeader
        clients.writesWaitingForLeader = []
        for proposal in waiting { propose(proposal) }
    }

    private func leadershipChanged(_ soft: SoftState) {
        if soft.leader != lastLeader {
            // Rounds sent to the old leader may never be answered: ask the new one.
            clients.reads.leaderChanged()
            logger.notice("leader changed", metadata: [
                "leader": "\(soft.leader.map(\.rawValue) ?? "none")", "term": "\(raw.term.rawValue)", "role": "\(soft.role)",
            ])
            metrics.leaderChanges.increment()
            lastLeader = soft.leader
        }
        metrics.term.record(Int64(raw.term.rawValue))
        if soft.role != .leader { leadershipLost() }
        flushWaitingForLeader()
    }

    // MARK: Apply

    private func applyCommitted() {
        let entries = applyQueue.entries.filter { $0.index > appliedIndex }
        guard let last = entries.last else {
            applyQueue.removeAll()
            return
        }
        // Never apply what this node's own log does not hold durably: after a crash the state
        // machine would be ahead of the log it is replayed from.
        precondition(last.index <= log.lastIndex, "applying \(last.index) beyond the durable log (\(log.lastIndex))")
        var writes: [KVWrite] = []
        // This node's clients' writes: their sequence, and where they are in `writes`.
        var mine: [(sequence: UInt64, position: Int)] = []
        var removed: [NodeID] = []
        var promoted: [NodeID] = []
        for entry in entries {
            switch entry.kind {
            case .normal where entry.data.isEmpty:
                continue  // a leader's no-op
            case .normal:
                let command: Command
                do {
                    command = try Command(decoding: entry.data)
                } catch {
                    // Applying it any other way would let replicas diverge.
                    fatalError("committed entry \(entry.index) does not decode as a command: \(error)")
                }
                if command.request.node == id { mine.append((command.request.sequence, writes.count)) }
                writes.append(command.write)
            case .configChange:
                guard let change = try? ConfChange(decoding: entry.data) else {
                    fatalError("committed configuration entry \(entry.index) does not decode")
                }
                switch change.kind {
                case .addLearner, .addVoter:
                    if change.kind == .addVoter { promoted.append(change.node) }
                    if let addresses = try? MemberAddresses(decoding: change.context) {
                        writes.append(KVWrite(.setMember(id: change.node.rawValue, raftAddress: addresses.raft,
                                                         httpAddress: addresses.http, promote: addresses.promote)))
                        addressBook[change.node] = addresses
                    }
                case .removeNode:
                    writes.append(KVWrite(.removeMember(id: change.node.rawValue)))
                    removed.append(change.node)
                }
            }
        }
        let results: [KVWriteResult]
        do {
            results = try store.apply(writes, appliedIndex: last.index.rawValue)
        } catch {
            if !stateFull {
                logger.error("cannot apply committed entries; retrying", metadata: ["error": "\(error)", "through": "\(last.index)"])
            }
            stateFull = true
            return
        }
        stateFull = false
        applyQueue.removeAll()
        appliedIndex = last.index
        metrics.entriesApplied.increment(by: entries.count)
        maybeCompact()
        for write in mine { clients.writes.removeValue(forKey: write.sequence)?.succeed(.written(results[write.position])) }
        if entries.contains(where: { $0.kind == .configChange }) && raw.status.configuration.voters.count == 2 {
            logger.warning("the cluster has two voters and tolerates no failure (a majority of 2 is 2); add a third node")
        }
        for entry in entries where entry.kind == .configChange {
            if let pending = clients.memberChanges.removeValue(forKey: entry.index) {
                if pending.term == entry.term { succeed(pending.owner) } else {
                    fail(pending.owner, ReplicaError(.leaderChanged, "the membership change was overwritten; retry", outcome: .notApplied))
                }
            }
        }
        for node in promoted { joinPromoted(node) }
        // A node removed and already added back (a later entry, appended) keeps its address.
        let current = raw.status.configuration.members
        for node in removed where node != id && !current.contains(node) {
            addressBook.removeValue(forKey: node)
            peers.forget(node)
        }
        releaseReads()
    }

    // MARK: Reads

    /// Starts a round for the reads that waited while the previous one was out; true when
    /// that gave the core something to send.
    private func startReadRoundIfIdle() -> Bool {
        guard clients.reads.canStartRound else { return false }
        startReadRound()
        return raw.hasReady
    }

    func startReadRound() {
        guard clients.reads.canStartRound, raw.leader != nil else { return }
        do {
            try raw.readIndex(context: ReadBarrier.context(round: clients.reads.nextRound))
        } catch .readLimit {
            for reader in clients.reads.takeWaiting() { reader.fail(ReplicaError(.readLimit(pendingMax: 0))) }
            return
        } catch {
            return  // not ready yet (e.g. a new leader without a commit in its term): next tick
        }
        clients.reads.roundStarted()
    }

    /// Answers the confirmed reads the state machine now covers.
    func releaseReads() {
        for reader in clients.reads.applied(through: appliedIndex) { reader.succeed() }
    }

    // MARK: Sending

    func queue(_ messages: [Message]) {
        for message in messages {
            if case .snapshot(let metadata) = message.kind {
                queueSnapshot(metadata, message: message)
            } else {
                send(.raft(message), to: message.to)
            }
        }
    }

    func send(_ record: PeerRecord, to node: NodeID) {
        outbox.add(record, to: node)
    }

    /// Everything queued for a peer goes out in as few frames as fit about 1 MiB each; then
    /// snapshot chunks, as far as the connections take them: heartbeats and appends first, so
    /// a connection that a snapshot fills up to its limit does not drop them.
    func flush() {
        for direct in outbox.direct {
            peers.send(PeerRecord.encodeFrame([direct.record]), to: direct.node, address: direct.address,
                       incarnation: raw.incarnation(of: direct.node) ?? announcedIncarnations[direct.node] ?? 0)
        }
        outbox.direct = []
        defer { if !snapshotSends.isEmpty { pumpSnapshots() } }
        guard !outbox.batched.isEmpty else { return }
        for node in outbox.batched.keys.sorted() {
            let records = outbox.batched[node]!
            guard let address = addressBook[node]?.raft ?? announcedAddresses[node] else {
                logger.debug("no address for peer; dropping", metadata: ["peer": "\(node)", "records": "\(records.count)"])
                continue
            }
            let groups = addressed(records, to: node)
            if groups.isEmpty {
                logger.debug("no incarnation known for peer; dropping", metadata: ["peer": "\(node)", "records": "\(records.count)"])
            }
            for group in groups {
                for frame in PeerRecord.encodeFrames(group.records, frameBytesTarget: 1 << 20) {
                    peers.send(frame, to: node, address: address, incarnation: group.incarnation)
                }
            }
        }
        outbox.batched = [:]
    }

    /// Where `records` for `node` may go, by the incarnation they address. Requests go to the
    /// incarnation the configuration lists for `node`, never to whatever now runs under that
    /// name: a leader's message to a node it no longer lists (removed in this very Ready), or
    /// lists under an older incarnation, must not reach a new incarnation with an empty log,
    /// which cannot take a commit index meant for the old one. Answers go to the incarnation
    /// that asked, as its connection's handshake announced it, else to the listed one: a
    /// member replaced while this node was away may lead now, and drops an answer addressed
    /// to its old incarnation (this node could then never catch up to learn the new one); a
    /// new member answers before its log names the leader.
    private func addressed(_ records: [PeerRecord], to node: NodeID) -> [(incarnation: UInt64, records: [PeerRecord])] {
        let listed = raw.incarnation(of: node)
        guard let asking = announcedIncarnations[node] ?? listed else { return [] }
        if asking == listed { return [(asking, records)] }
        let (answers, requests) = records.partitioned(by: \.isAnswer)
        var groups: [(incarnation: UInt64, records: [PeerRecord])] = []
        if let listed, !requests.isEmpty { groups.append((listed, requests)) }
        if !answers.isEmpty { groups.append((asking, answers)) }
        return groups
    }

    // MARK: Membership

    /// Configuration entries carry the new member's addresses; the leader must reach a new
    /// member as soon as the entry is appended (thesis §4.1), before it commits.
    private func learnAddresses(from entries: [Entry]) {
        for entry in entries where entry.kind == .configChange {
            guard let change = try? ConfChange(decoding: entry.data), change.kind != .removeNode,
                  let addresses = try? MemberAddresses(decoding: change.context) else { continue }
            addressBook[change.node] = addresses
        }
    }

    /// Proposes a membership change now, or queues it behind the one in flight.
    func proposeMemberChange(_ change: ConfChange, owner: ChangeOwner) {
        if clients.memberChangesWaiting.isEmpty && tryProposeMemberChange(change, owner: owner) { return }
        clients.memberChangesWaiting.append((change, owner))
    }

    private func proposeWaitingMemberChanges() {
        while let next = clients.memberChangesWaiting.first, tryProposeMemberChange(next.change, owner: next.owner) {
            clients.memberChangesWaiting.removeFirst()
        }
    }

    /// False when the change must wait (another one in flight, or no commit in this term yet);
    /// true when it was proposed or refused for good (the owner is then answered).
    private func tryProposeMemberChange(_ change: ConfChange, owner: ChangeOwner) -> Bool {
        do {
            let position = try raw.proposeConfChange(change)
            clients.memberChanges[position.index] = (position.term, owner)
            return true
        } catch .configChangeInProgress {
            return false
        } catch .proposalDropped(reason: .leaderNotReady) {
            return false
        } catch {
            fail(owner, ReplicaError(error))
            return true
        }
    }

    private func promoteCaughtUpLearners() {
        guard raw.role == .leader, clients.memberChangesWaiting.isEmpty else { return }
        let status = raw.status
        // Learners that asked to stay learners (`{"learner": true}`) are left as they are.
        for learner in status.configuration.learners.sorted() where addressBook[learner]?.promote != false {
            guard let follower = status.followers[learner], follower.match >= raw.commitIndex else { continue }
            do {
                try raw.proposeConfChange(ConfChange(kind: .addVoter, node: learner, context: addressBook[learner]?.encoded() ?? []))
                logger.notice("promoting caught-up learner to voter", metadata: ["node": "\(learner)", "match": "\(follower.match)"])
                return  // one change at a time
            } catch {
                return  // another change in flight, or no commit in this term yet: next tick
            }
        }
    }

    package func publish() {
        metrics.commitIndex.record(Int64(raw.commitIndex.rawValue))
        metrics.appliedIndex.record(Int64(appliedIndex.rawValue))
        let state = PublishedState(status: raw.status, addressBook: addressBook, appliedIndex: appliedIndex,
                                   snapshotIndex: log.snapshotMetadata.index, clusterID: identity.clusterID,
                                   incarnation: identity.incarnation, diskFull: diskFull)
        published.state.withLock { $0 = state }
    }
}

/// What `GET /v1/status` and the `X-Keyper-Leader` header show, without a hop to the
/// replica's context: updated after each run.
package struct PublishedState: Sendable {
    package var status: Status
    package var addressBook: [NodeID: MemberAddresses]
    package var appliedIndex: LogIndex
    package var snapshotIndex: LogIndex
    package var clusterID: String
    /// This node's incarnation (its data directory's).
    package var incarnation: UInt64
    package var diskFull = false
}

/// Shares ``PublishedState`` between the replica (writer) and its readers.
package final class PublishedBox: Sendable {
    package let state: Mutex<PublishedState>
    init(_ state: PublishedState) { self.state = Mutex(state) }
}
