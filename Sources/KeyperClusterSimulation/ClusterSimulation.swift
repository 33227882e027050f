import KeyperBase
import KeyperRaft
import KeyperReplica
import KeyperHistory
import KeyperStorage
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A Keyper cluster run in one thread from one seed: the shipped ``Replica`` with its real WAL
/// (on a simulated disk that loses unsynced writes and tears the last one when a node crashes)
/// and its real state machine and snapshot files (in a scratch directory per node), with
/// simulated peers, clock, blocking work and clients.
///
/// Clients go through the replica's own entry points (writes, linearizable reads, joins,
/// transfers), as the HTTP layer does. The run checks election safety as it goes; after the
/// faults stop it checks that writes succeed again, that every member converges to the same
/// state, and that the client history is linearizable.
public final class ClusterSimulation: @unchecked Sendable {
    enum Event {
        case tick(node: Int, generation: Int)
        case run(node: Int, generation: Int)
        /// A frame's records, decoded once when it was sent.
        case deliver(from: Int, to: Int, epoch: Int, records: [PeerRecord], origin: FrameOrigin)
        case work(node: Int, generation: Int, job: () -> Void)
        case clientStep(client: Int)
        case clientGivesUp(client: Int, operation: Int)
        case answered(client: Int, operation: Int, result: Result<WaitOutcome, ReplicaError>)
        /// The second step of a client's read of a state machine (the cache fill).
        case readFinished(client: Int, operation: Int, generation: Int, read: KVStore.PendingRead)
        /// The second step of a stale read, served from `node`'s state machine as it had applied `from`.
        case staleReadFinished(client: Int, node: Int, generation: Int, key: [UInt8], from: LogIndex, read: KVStore.PendingRead)
        /// The operator asks the leader to remove `node` (again, if the leader was handing over).
        case removeMember(node: Int, attemptsLeft: Int)
        case checkWaiters
        case restart(node: Int)
        case heal(links: [Int])
        case diskSpaceReturns(node: Int)
        case nemesis
        case operatorStep
        /// A crash aimed at a moment that matters (right after a vote went out, or a leader's
        /// commit moved), with a quick restart.
        case crash(node: Int, generation: Int)
    }

    final class Node {
        let index: Int
        let id: NodeID
        /// The Raft address other replicas are told (the simulated network routes by it).
        let address: String
        let path: String
        /// The disk under the Raft log; replaced (empty) when the node's disk is wiped.
        var disk = SimulatedDisk()
        var replica: Replica?
        /// Bootstrap a cluster on an empty log: only the first node, and only on its first start
        /// (a wiped node is joined like any new one, as an operator would with `--join`).
        var bootstraps: Bool
        var peers: SimulatedPeers?
        /// Bumped by every crash: events of an earlier generation are dropped.
        var generation = 0
        var input = ReplicaInput()
        var runScheduled = false
        /// The incarnation its data directory had when last opened (0: never opened).
        var incarnation: UInt64 = 0
        var sequence: UInt64 = 0
        /// A join request for this node is out until then (the leader asked may crash and never answer).
        var joinPendingUntil: Int64 = 0
        /// What this replica applied has been compared with ``appliedLog`` up to here.
        var checkedThrough: LogIndex = .zero
        /// The highest commit index seen while it led.
        var commitSeen: LogIndex = .zero
        /// The read rounds each of its processes asked the leader about, first to last.
        var readRounds: [(generation: Int, first: UInt64, last: UInt64)] = []

        init(index: Int, root: String) {
            self.index = index
            id = NodeID("n\(index + 1)")
            address = "n\(index + 1):7001"
            path = root + "/n\(index + 1)"
            bootstraps = index == 0
        }

        var isUp: Bool { replica != nil }
    }

    struct Client {
        var random: SplitMix64
        /// The history entry of the operation outstanding, with where it was sent.
        var operation: Int?
        var node = 0
        var generation = 0
        /// What the client last read of each key, linearizably: the value and its mod
        /// revision (0: absent), for its compare-and-sets.
        var lastRead: [String: (value: String?, mod: UInt64)] = [:]
        /// The outstanding operation, when it is a compare-and-set.
        var compareAndSet: PendingCompareAndSet?
    }

    /// A compare-and-set in flight: the write (with its idempotency key), how often it was
    /// sent, and whether an earlier attempt's fate is unknown.
    struct PendingCompareAndSet {
        var write: KVWrite
        var attempts = 1
        var unknown = false
    }

    /// One direction between two nodes: a TCP connection, replaced by a new one (a new epoch)
    /// when it resets.
    struct Link {
        var epoch = 0
        var lastDelivery: Int64 = 0
        var random: SplitMix64
        /// Earlier connections whose frames already on the wire still arrive: the new
        /// connection's frames may overtake them.
        var lingering: Set<Int> = []
    }

    public let seed: UInt64
    public let options: ClusterSimulationOptions
    var random: SplitMix64
    /// Simulated nanoseconds since the start.
    var now: Int64 = 0
    var events = EventQueue<Event>()
    var nodes: [Node] = []
    var nodeByAddress: [String: Int] = [:]
    let link = SimulationLink()
    let root: String
    let logger: Logger
    let snapshotEntries: UInt64
    let catchUpEntries: UInt64
    let workDelay: Int64
    let dropPercent: Int
    /// This seed's membership fault: disks wiped, or members removed (never both, see
    /// ``ClusterSimulationOptions/removals``).
    let wipesDisks: Bool
    let removesMembers: Bool

    var links: [Int: Link] = [:]
    var blocked: Set<Int> = []
    var faultsActive = true
    var clientsIssue = true
    var writeAcknowledgedSinceFaultsStopped = false

    var leaderOfTerm: [Term: NodeID] = [:]
    /// index-1 → the entry applied there, as first read from a replica's log: every replica
    /// must apply the same one (state machine safety), and stale reads are checked against it.
    var appliedLog: [Entry?] = []
    /// index-1 → the entry's term and the term of the first leader seen committing it.
    var committedTerms: [(entryTerm: Term, commitTerm: Term)] = []
    var violation: String?
    /// Waiters handed to replicas and not answered yet, by id: each must be answered exactly
    /// once, by its deadline (or when its replica closes), unless its node crashed.
    var openWaiters: [Int: OpenWaiter] = [:]
    var waiterNext = 0

    struct OpenWaiter {
        var node: Int
        var generation: Int
        var deadline: Int64
        var what: String
    }

    var clients: [Client] = []
    var history: [ClientOperation] = []
    var logicalTime: UInt64 = 0
    public internal(set) var report = ClusterSimulationReport()

    public init(seed: UInt64, options: ClusterSimulationOptions = ClusterSimulationOptions()) {
        self.seed = seed
        self.options = options
        random = SplitMix64(seed: seed)
        snapshotEntries = options.snapshots ? UInt64(8 + random.next(below: 40)) : 1 << 40
        catchUpEntries = UInt64(random.next(below: 3) == 0 ? 0 : random.next(below: 24))
        workDelay = Int64([1, 5, 30][random.next(below: 3)]) * 1_000_000
        dropPercent = options.drops ? [0, 1, 5][random.next(below: 3)] : 0
        let coin = random.chance(1, in: 2)
        let removes = options.removals && (!options.diskWipes || coin)
        removesMembers = removes
        wipesDisks = options.diskWipes && !removes
        root = Self.scratchBase(options) + "/keyper-sim-\(getpid())-\(seed)-\(UInt64.random(in: 0...UInt64.max) % 1_000_000)"
        if options.trace {
            let link = self.link
            logger = Logger(label: "sim", factory: { _ in SimulationLogHandler(link: link) })
        } else {
            logger = Logger(label: "sim", factory: { _ in SwiftLogNoOpLogHandler() })
        }
        link.simulation = self
        report.seed = seed
        for index in 0..<options.nodeCount {
            let node = Node(index: index, root: root)
            nodes.append(node)
            nodeByAddress[node.address] = index
        }
        for client in 0..<options.clients {
            clients.append(Client(random: SplitMix64(seed: seed &+ 0x100 &+ UInt64(client))))
        }
    }

    deinit { FileIO.removeTree(root) }

    /// Where runs keep their scratch directories: `/dev/shm` when there is one, else `/tmp`.
    static func scratchBase(_ options: ClusterSimulationOptions) -> String {
        options.temporaryDirectory ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp")
    }

    /// Removes scratch directories of runs whose process is gone: a run stopped by an assertion
    /// (an injected bug, say) cannot remove its own. Returns how many it removed.
    @discardableResult
    public static func removeAbandonedScratch(_ options: ClusterSimulationOptions = ClusterSimulationOptions()) -> Int {
        let base = scratchBase(options)
        var removed = 0
        for name in (try? FileIO.listDirectory(base)) ?? [] where name.hasPrefix("keyper-sim-") {
            // keyper-sim-<pid>-<seed>-<nonce>
            let fields = name.split(separator: "-")
            guard fields.count == 5, let pid = pid_t(fields[2]), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            FileIO.removeTree(base + "/" + name)
            removed += 1
        }
        return removed
    }

    // MARK: Running

    /// Runs the whole scenario: faults, then liveness, then convergence and the final checks.
    /// The scratch directory is removed when the run ends.
    public func run() throws(ClusterSimulationViolation) -> ClusterSimulationReport {
        defer { shutDown() }
        do {
            try FileIO.makeDirectories(root)
        } catch {
            throw failure("cannot make the scratch directory: \(error)")
        }
        for node in nodes { start(node) }
        events.push(.nemesis, at: milliseconds(100))
        events.push(.operatorStep, at: 0)
        events.push(.checkWaiters, at: milliseconds(50))
        for client in clients.indices { events.push(.clientStep(client: client), at: milliseconds(Int64(client))) }

        try runUntil(milliseconds(Int64(options.faultMilliseconds)))
        stopFaults()
        let settleEnd = now + milliseconds(Int64(options.settleMillisecondsMax))
        try runUntil(settleEnd) { [self] in writeAcknowledgedSinceFaultsStopped }
        guard writeAcknowledgedSinceFaultsStopped else {
            throw failure("no write was acknowledged within \(options.settleMillisecondsMax) ms after faults stopped: \(nodeStates)")
        }
        clientsIssue = false
        let drainEnd = now + milliseconds(Int64(options.drainMillisecondsMax))
        try runUntil(drainEnd) { [self] in clientsIdle && converged && membersJoined }
        guard clientsIdle && converged && membersJoined else {
            throw failure("replicas did not converge within \(options.drainMillisecondsMax) ms after clients stopped: \(nodeStates)")
        }
        try compareStateMachines()
        try finalReads()
        for node in nodes {
            report.snapshotsInstalled += node.replica?.snapshotsInstalled ?? 0
            report.snapshotRestarts += node.replica?.snapshotTransferRestarts ?? 0
        }
        try closeUnderLoad()
        let result = LinearizabilityChecker.check(history)
        report.operationsChecked = result.operationsChecked
        guard result.isLinearizable else {
            throw failure("the client history is not linearizable (key \(result.failingKey ?? "?"))")
        }
        report.milliseconds = now / 1_000_000
        return report
    }

    /// Steps events until `time`, or until `done` holds.
    func runUntil(_ time: Int64, done: () -> Bool = { false }) throws(ClusterSimulationViolation) {
        while let next = events.nextTime, next <= time {
            let (at, event) = events.pop()!
            now = at
            handle(event)
            if let violation { throw failure(violation) }
            if done() { return }
        }
        now = max(now, time)
    }

    func handle(_ event: Event) {
        switch event {
        case let .tick(index, generation):
            guard let replica = live(index, generation) else { return }
            replica.tick()
            observe(index)
            events.push(.tick(node: index, generation: generation), at: now + milliseconds(Int64(options.tickMilliseconds)))
        case let .run(index, generation):
            let node = nodes[index]
            node.runScheduled = false
            guard let replica = live(index, generation) else { return }
            let input = node.input
            node.input = ReplicaInput()
            replica.run(input)
            observe(index)
        case let .deliver(from, to, epoch, records, origin):
            deliver(records, from: from, to: to, epoch: epoch, origin: origin)
        case let .work(index, generation, job):
            guard live(index, generation) != nil else { return }
            job()
            observe(index)
        case let .clientStep(client):
            clientStep(client)
        case let .clientGivesUp(client, operation):
            giveUp(client, operation: operation)
        case let .answered(client, operation, result):
            answered(client, operation: operation, result: result)
        case let .readFinished(client, operation, generation, read):
            readFinished(client, operation: operation, generation: generation, read: read)
        case let .staleReadFinished(client, node, generation, key, from, read):
            staleReadFinished(client, node: node, generation: generation, key: key, from: from, read: read)
        case let .removeMember(node, attemptsLeft):
            remove(nodes[node], attemptsLeft: attemptsLeft)
        case .checkWaiters:
            checkWaiters()
        case let .restart(index):
            if !nodes[index].isUp { start(nodes[index]) }
        case let .heal(healed):
            for key in healed { blocked.remove(key) }
        case let .diskSpaceReturns(index):
            nodes[index].disk.fileSystem.capacityBytes = nil
        case .nemesis:
            nemesis()
        case .operatorStep:
            operatorStep()
        case let .crash(index, generation):
            guard live(index, generation) != nil else { return }
            crash(nodes[index])
            events.push(.restart(node: index), at: now + milliseconds(Int64(10 + random.next(below: 300))))
        }
    }

    /// Each node's view, for a violation's message.
    var nodeStates: String {
        nodes.map { node in
            guard let replica = node.replica else { return "\(node.id) down" }
            let status = replica.status
            let configuration = status.configuration
            return "\(node.id) applied \(replica.appliedIndex.rawValue) commit \(status.commit.rawValue) last \(status.lastIndex.rawValue) "
                + "term \(status.term.rawValue) \(status.role) leader \(status.leader?.rawValue ?? "none") "
                + "voters \(configuration.voters.sorted().map(\.rawValue)) learners \(configuration.learners.sorted().map(\.rawValue))"
        }.joined(separator: "; ")
    }

    func live(_ index: Int, _ generation: Int) -> Replica? {
        let node = nodes[index]
        guard node.generation == generation else { return nil }
        return node.replica
    }

    func milliseconds(_ value: Int64) -> Int64 { value * 1_000_000 }

    func failure(_ message: String) -> ClusterSimulationViolation {
        ClusterSimulationViolation(seed: seed, milliseconds: now / 1_000_000, message: message, history: historyDescription())
    }

    /// Schedules a run of `node`'s replica for what its input gathered (one per burst, as the
    /// server's event loop does).
    func scheduleRun(_ node: Node) {
        guard !node.runScheduled, node.isUp else { return }
        node.runScheduled = true
        events.push(.run(node: node.index, generation: node.generation), at: now)
    }

    func scheduleWork(node: Int, generation: Int, job: @escaping () -> Void) {
        events.push(.work(node: node, generation: generation, job: job), at: now + workDelay)
    }

    // MARK: Nodes

    /// Opens the node's data directory and makes its replica, as a server does at start-up.
    func start(_ node: Node) {
        node.generation += 1
        node.disk.fileSystem.capacityBytes = nil  // an operator frees space before starting a node again
        node.disk.makeDirectories(node.path + "/wal")
        let disk = node.disk
        let opened: OpenedDataDirectory
        let replica: Replica
        let peers = SimulatedPeers(link: link, node: node.index, generation: node.generation)
        var logger = self.logger
        logger[metadataKey: "node"] = "\(node.id)"
        do {
            opened = try OpenedDataDirectory(path: node.path, nodeID: node.id.rawValue, walFileSystem: { disk.fileSystem },
                                             truncateCorrupt: false, logger: logger, newIncarnation: { random.next() | 1 })
            var settings = ReplicaSettings(advertisedRaftAddress: node.address, advertisedHTTPAddress: "\(node.id):8080",
                                           electionTicks: options.electionTicks, requestTimeoutMs: options.requestTimeoutMilliseconds,
                                           snapshotEntries: snapshotEntries, catchUpEntries: catchUpEntries)
            // The simulation's snapshots are kilobytes: small chunks make each transfer many
            // frames, so drops and connection resets land in the middle of one.
            settings.snapshotChunkBytes = 1_024
            let replicaOptions = ReplicaOptions(settings: settings, bootstrapIfEmpty: node.bootstraps, heartbeatTicks: options.heartbeatTicks,
                                                entryBytesMax: 1 << 20, randomSeed: random.next())
            let environment = ReplicaEnvironment(peers: peers, blockingWork: SimulatedBlockingWork(link: link, node: node.index,
                                                                                                   generation: node.generation),
                                                 clock: SimulatedClock(link: link))
            replica = try Replica(opening: opened, options: replicaOptions, environment: environment, logger: logger,
                                  metrics: .discarding())
        } catch {
            violation = "\(node.id) could not restart after a crash that lost only unsynced writes: \(error)"
            return
        }
        if node.incarnation != 0 && opened.identity.incarnation != node.incarnation {
            violation = "\(node.id) took a new incarnation after a crash that lost only unsynced writes (its log lost entries it had synced)"
        }
        node.incarnation = opened.identity.incarnation
        node.bootstraps = false
        node.checkedThrough = .zero
        node.replica = replica
        node.peers = peers
        node.sequence = random.next() >> 1
        events.push(.run(node: node.index, generation: node.generation), at: now)
        node.runScheduled = true
        let offset = Int64(random.next(below: options.tickMilliseconds * 1_000)) * 1_000
        events.push(.tick(node: node.index, generation: node.generation), at: now + offset)
    }

    /// The process dies: the Raft log's disk keeps what was synced (and maybe a torn part of
    /// the rest); the replica, its queued input and its blocking work are gone.
    func crash(_ node: Node) {
        guard let replica = node.replica else { return }
        report.crashes += 1
        report.snapshotsInstalled += replica.snapshotsInstalled
        report.snapshotRestarts += replica.snapshotTransferRestarts
        node.disk.fileSystem.crash(keepingUnsynced: random.chance(1, in: 2) ? .randomPrefix(seed: random.next()) : .nothing)
        replica.store.close()
        replica.directory.release()
        node.replica = nil
        node.peers = nil
        openWaiters = openWaiters.filter { $0.value.node != node.index || $0.value.generation != node.generation }
        node.generation += 1
        node.input = ReplicaInput()
        node.runScheduled = false
        // What it was sending dies with it. What others were sending it stays queued at the
        // senders, as the transport keeps frames for a peer until a connection to it succeeds:
        // the restarted process (or a new incarnation, after a wipe) receives them.
        for other in nodes.indices { resetLink(key: linkKey(node.index, other)) }
    }

    func shutDown() {
        for node in nodes {
            guard let replica = node.replica else { continue }
            replica.close()  // again after closeUnderLoad: closing twice is harmless
            replica.store.close()
            replica.directory.release()
            node.replica = nil
        }
        FileIO.removeTree(root)
    }

    var leader: Node? {
        nodes.filter { $0.replica?.status.role == .leader }.max { $0.replica!.status.term < $1.replica!.status.term }
    }

    // MARK: Network

    func linkKey(_ from: Int, _ to: Int) -> Int { from * 1_024 + to }

    /// Puts `frame` on the wire; false when it is lost on the way (a partition, or a random drop).
    @discardableResult
    func send(_ frame: [UInt8], from peers: SimulatedPeers, address: String, peerIncarnation: UInt64) -> Bool {
        let sender = nodes[peers.node]
        guard sender.generation == peers.generation, let to = nodeByAddress[address] else { return false }
        let key = linkKey(sender.index, to)
        var state = links[key] ?? Link(random: SplitMix64(seed: seed ^ (UInt64(key) &* 0x9E37_79B9_7F4A_7C15)))
        if blocked.contains(key) || (faultsActive && state.random.next(below: 100) < dropPercent) {
            report.framesDropped += 1
            links[key] = state
            return false
        }
        var latency = Int64(100_000 + state.random.next(below: 1_900_000))
        if faultsActive && options.drops && state.random.chance(1, in: 50) {
            latency += Int64(state.random.next(below: 40)) * 1_000_000
        }
        let at = max(now + latency, state.lastDelivery)
        state.lastDelivery = at
        links[key] = state
        let origin = FrameOrigin(nodeID: sender.id.rawValue, clusterID: peers.clusterID, incarnation: peers.incarnation,
                                 peerIncarnation: peerIncarnation, raftAddress: peers.raftAddress)
        let records: [PeerRecord]
        do {
            records = try PeerRecord.decodeFrame(frame)
        } catch {
            violation = "\(sender.id) sent a frame that does not decode: \(error)"
            return false
        }
        events.push(.deliver(from: sender.index, to: to, epoch: state.epoch, records: records, origin: origin), at: at)
        for case .raft(let message) in records {
            if case .readIndex(let request) = message.kind, let round = ReadBarrier.round(from: request.context) {
                noteReadRound(round, of: sender)
            }
        }
        // A node that just granted its vote dies now and then, once the grant is on the wire: it
        // must remember the vote when it restarts (Figure 2), or it may vote twice in one term.
        if faultsActive && options.crashes, records.contains(where: {
            if case .raft(let message) = $0, case .voteResponse(let response) = message.kind { return response.granted }
            return false
        }), random.chance(1, in: 3) {
            events.push(.crash(node: sender.index, generation: sender.generation), at: now)
        }
        return true
    }

    /// A bulk frame, paced by its connection: now and then (while faults are on) the
    /// connection's buffer is full and the frame is not taken. A frame lost on the way takes
    /// its connection down with it, as TCP loses data only with its connection: the link
    /// starts a new epoch, whose number the next frame reports.
    func sendIfReady(_ frame: [UInt8], from peers: SimulatedPeers, address: String, peerIncarnation: UInt64) -> UInt64? {
        let sender = nodes[peers.node]
        guard sender.generation == peers.generation, let to = nodeByAddress[address] else { return nil }
        let key = linkKey(sender.index, to)
        // Partitioned: no connection can be made. Busy: the connection's buffer is full.
        if blocked.contains(key) || (faultsActive && links[key]?.random.chance(1, in: 8) == true) { return nil }
        let epoch = links[key]?.epoch ?? 0
        if !send(frame, from: peers, address: address, peerIncarnation: peerIncarnation) { resetLink(key: key) }
        return UInt64(epoch)
    }

    /// The replica drops its connection to `peer` (it learned a new incarnation or address).
    func resetLink(from node: Int, to peer: NodeID) {
        guard let to = nodes.firstIndex(where: { $0.id == peer }) else { return }
        resetLink(key: linkKey(node, to))
    }

    /// A connection reset: frames in flight on it are lost, or (half the time while faults
    /// are on) those already on the wire still arrive, in their order, and the next
    /// connection's frames may overtake them.
    func resetLink(key: Int) {
        guard var state = links[key] else { return }
        if faultsActive && state.random.chance(1, in: 2) { state.lingering.insert(state.epoch) }
        state.epoch += 1
        state.lastDelivery = now
        links[key] = state
    }

    func deliver(_ records: [PeerRecord], from: Int, to: Int, epoch: Int, origin: FrameOrigin) {
        let key = linkKey(from, to)
        guard let link = links[key], link.epoch == epoch || link.lingering.contains(epoch), !blocked.contains(key) else {
            report.framesDropped += 1
            return
        }
        let node = nodes[to]
        guard node.isUp || link.epoch != epoch else {
            // A frame of a connection already replaced, to a node that went down: lost with it.
            report.framesDropped += 1
            return
        }
        guard node.isUp else {
            // The sender's transport keeps it and tries to connect again later.
            // Not before a frame queued ahead of it on the same link: they stay in order.
            let retryAt = max(now + milliseconds(Int64(20 + (links[key]?.random.next(below: 200) ?? 0))), links[key]?.lastDelivery ?? 0)
            links[key]?.lastDelivery = retryAt
            events.push(.deliver(from: from, to: to, epoch: epoch, records: records, origin: origin), at: retryAt)
            return
        }
        report.framesDelivered += 1
        for record in records { node.input.records.append((origin, record)) }
        scheduleRun(node)
    }
}
