import KeyperRaft

/// A Raft cluster, its network, its disks and its clients, run in one thread from one seed.
/// Every source of nondeterminism (message fate, timing, crashes, client choices, the nodes'
/// own election timeouts) is drawn from generators seeded by `seed`, so a seed replays a run.
///
/// After every step the run checks election safety, log matching, leader completeness and
/// state machine safety (Raft §5.2–§5.4, Figure 3); once faults stop it checks that a leader
/// commits within `settleTicksMax`; at the end it checks the client history is linearizable.
public final class Simulation {
    struct SimNode {
        let id: NodeID
        /// Replaced (empty, under a new ``incarnation``) when the node's disk is replaced.
        var storage: MemoryStorage
        /// The incarnation of the node's disk; configurations record it (see Config.incarnation).
        var incarnation: UInt64
        /// The disk was replaced: the leader removes the old incarnation and adds this one.
        var replaced = false
        /// Where the current incarnation was added: removals before it were of an older one.
        var addedIndex: LogIndex = .zero
        /// Incarnations peers announced in the messages they sent here (their handshakes).
        var announced: [NodeID: UInt64] = [:]
        var cell: RaftCell?
        var store: [String: String] = [:]
        var applied: LogIndex = .zero
        var restartTick: Int?
        /// Removed from the cluster and shut down for good.
        var retired = false
        var retireTick: Int?
        /// Crash at the next Ready: 1 before persisting, 2 after persisting but before replying,
        /// 3 once the Ready is fully handled.
        var crashArmed = 0
        var readStates: [ReadState] = []
        /// Index → (client, term) of writes proposed here.
        var writeWaiters: [LogIndex: (client: Int, term: Term)] = [:]
        /// A Ready whose messages went out and whose write is still in flight.
        var persisting: Ready?
    }

    struct InFlight {
        var deliverTick: Int
        var order: UInt64
        var message: Message
        /// The sender's incarnation, and the recipient's as the sender's configuration records
        /// it, when the message was sent (what the runtime's connection handshake carries).
        var fromIncarnation: UInt64
        var toIncarnation: UInt64
    }

    struct Link: Hashable {
        var from: NodeID
        var to: NodeID
    }

    struct PendingOperation {
        var historyIndex: Int
        var node: Int
        var deadlineTick: Int
        var readContext: [UInt8]?
        var position: EntryPosition?
    }

    public let seed: UInt64
    public let options: SimulationOptions
    var random: SplitMix64
    var tick = 0
    var clock: UInt64 = 0
    var nodes: [SimNode] = []
    var nodeIndex: [NodeID: Int] = [:]
    var network: [InFlight] = []
    var blocked: Set<Link> = []
    var faultsActive = true
    public internal(set) var report = SimulationReport()
    var violation: SimulationViolation?

    // Per-seed fault and limit settings.
    let dropPercent: Int
    let duplicatePercent: Int
    let delayTicksMax: Int
    let snapshotInterval: UInt64
    let inflightAppendsMax: Int
    let appendBytesMax: Int
    let uncommittedBytesMax: Int
    let applyBytesMax: Int
    let preVote: Bool
    let checkQuorum: Bool
    /// One in `crashOdds` ticks arms a crash; restarts come after 1...`restartTicksMax` ticks.
    let crashOdds: Int
    let restartTicksMax: Int
    let partitionOdds: Int
    let membershipOdds: Int
    /// One in `diskReplacementOdds` ticks replaces a node's disk (one outstanding at a time).
    let diskReplacementOdds: Int
    /// Let a node's write stay in flight while it keeps stepping messages (thesis §10.2.1).
    let asyncPersist: Bool

    // Invariant bookkeeping.
    var leaderOfTerm: [Term: NodeID] = [:]
    /// index-1 → (term of the entry, term of the first leader seen committing it).
    var committedTerms: [(entryTerm: Term, commitTerm: Term)] = []
    /// index-1 → the entry every node must apply at that index.
    var appliedEntries: [Entry] = []
    var positions: [EntryPosition: (kind: EntryKind, data: [UInt8], previousTerm: Term?)] = [:]
    var snapshotData: [LogIndex: [UInt8]] = [:]

    // Clients.
    var history: [KVOperation] = []
    var pending: [PendingOperation?]
    var readWaiters: [[UInt8]: Int] = [:]
    var nextOperationID: UInt64 = 0
    var nodesCreated = 0
    var acknowledgedWrites: [EntryPosition] = []
    /// Print every change of a node's role, term, leader, commit or configuration.
    public var trace = false
    var lastTrace: [NodeID: String] = [:]

    public init(seed: UInt64, options: SimulationOptions = SimulationOptions()) {
        self.seed = seed
        self.options = options
        random = SplitMix64(seed: seed)
        dropPercent = options.dropsAndDelays ? random.next(below: 11) : 0
        duplicatePercent = options.dropsAndDelays ? random.next(below: 6) : 0
        delayTicksMax = options.dropsAndDelays ? 1 + random.next(below: 4) : 1
        snapshotInterval = UInt64(10 + random.next(below: 50))
        let limits = options.randomLimits
        inflightAppendsMax = limits ? [1, 2, 4, 8, 64][random.next(below: 5)] : 256
        appendBytesMax = limits ? [16, 64, 256, 1 << 20][random.next(below: 4)] : 1 << 20
        uncommittedBytesMax = limits ? [256, 1024, 1 << 20][random.next(below: 3)] : 64 << 20
        applyBytesMax = limits ? [16, 128, 1 << 20][random.next(below: 3)] : 64 << 20
        // Profiles vary per seed, so some seeds churn leaders hard and some crash often.
        preVote = random.chance(3, in: 4)
        checkQuorum = random.chance(3, in: 4)
        crashOdds = [400, 100, 30][random.next(below: 3)]
        restartTicksMax = [5, 60][random.next(below: 2)]
        partitionOdds = [200, 60, 20][random.next(below: 3)]
        membershipOdds = [100, 30, 5][random.next(below: 3)]
        asyncPersist = random.chance(1, in: 2)
        diskReplacementOdds = [1_000, 300][random.next(below: 2)]
        pending = Array(repeating: nil, count: options.clients)
        report.seed = seed
        let voters = Set((1...options.nodeCount).map { NodeID("n\($0)") })
        let incarnations = Dictionary(uniqueKeysWithValues: voters.map { ($0, Self.incarnation(of: $0, generation: 0)) })
        for id in voters.sorted() {
            addNode(id, storage: MemoryStorage(bootstrapping: Configuration(voters: voters, incarnations: incarnations)))
        }
    }

    // MARK: Running

    /// Runs the whole scenario: faults, then liveness, then the final checks.
    public func run() throws(SimulationViolation) -> SimulationReport {
        for _ in 0..<options.faultTicks {
            step()
            if let violation { throw violation }
        }
        stopFaults()
        let settleStart = tick
        var probe: (node: Int, position: EntryPosition)?
        var live = false
        while tick - settleStart < options.settleTicksMax {
            step()
            if let violation { throw violation }
            if let current = probe, let entry = appliedEntry(at: current.position.index),
               nodes[current.node].applied >= current.position.index {
                if entry.term == current.position.term {
                    live = true
                    break
                }
                probe = nil
            }
            if probe == nil || nodes[probe!.node].cell?.node.status.role != .leader {
                probe = proposeProbe()
            }
        }
        guard live else {
            throw fail("no entry committed within \(options.settleTicksMax) ticks after faults stopped")
        }
        report.ticksToLiveness = tick - settleStart
        for _ in 0..<options.drainTicks {
            step(clientsIssue: false)
            if let violation { throw violation }
        }
        try finalChecks()
        report.ticks = tick
        report.entriesCommitted = appliedEntries.count
        return report
    }

    /// Runs `ticks` ticks without faults while `onTick` may propose, for benchmarks.
    public func runFaultFree(ticks: Int, onTick: (Simulation) -> Void) throws(SimulationViolation) -> SimulationReport {
        stopFaults()
        for _ in 0..<ticks {
            onTick(self)
            step(clientsIssue: false)
            if let violation { throw violation }
        }
        report.ticks = tick
        report.entriesCommitted = appliedEntries.count
        return report
    }

    /// The current leader, if some live node believes it is one.
    public var leaderID: NodeID? {
        nodes.first { $0.cell?.node.status.role == .leader }?.id
    }

    /// Proposes on the node `id`, for benchmarks and tests.
    @discardableResult
    public func propose(_ data: [UInt8], at id: NodeID) throws(RaftError) -> EntryPosition {
        guard let index = nodeIndex[id], nodes[index].cell != nil else { throw .notLeader(leader: nil) }
        return try nodes[index].cell!.node.propose(data)
    }

    public var committedEntryCount: Int { appliedEntries.count }

    func step(clientsIssue: Bool = true) {
        tick += 1
        if faultsActive { injectFaults() }
        restartDueNodes()
        for index in nodes.indices where nodes[index].cell != nil {
            nodes[index].cell!.node.tick()
            observe(index)
        }
        deliverDueMessages()
        if options.clients > 0 { runClients(issue: clientsIssue) }
        for index in nodes.indices { drainReady(index, allowInFlight: faultsActive) }
    }

    /// Handles Readies until none is left, or until one is left persisting when `allowInFlight`.
    func drainReady(_ index: Int, allowInFlight: Bool = false) {
        var rounds = 0
        while rounds < 16, nodes[index].cell != nil {
            rounds += 1
            if nodes[index].persisting != nil {
                if allowInFlight && random.chance(1, in: 2) { return }
                finishReady(index)
                continue
            }
            guard nodes[index].cell!.node.hasReady else { return }
            handleReady(index, allowInFlight: allowInFlight)
        }
    }

    // MARK: Nodes

    /// A node's incarnation after `generation` disk replacements (deterministic, never 0).
    static func incarnation(of id: NodeID, generation: UInt64) -> UInt64 {
        var hash: UInt64 = 1_469_598_103_934_665_603
        for byte in id.rawValue.utf8 { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
        return (hash &+ generation &* 0x9E37_79B9_7F4A_7C15) | 1
    }

    @discardableResult
    func addNode(_ id: NodeID, storage: MemoryStorage) -> Int {
        nodes.append(SimNode(id: id, storage: storage, incarnation: Self.incarnation(of: id, generation: 0)))
        let index = nodes.count - 1
        nodeIndex[id] = index
        nodesCreated += 1
        start(index)
        return index
    }

    func nodeConfig(_ index: Int) -> Config {
        var config = Config(id: nodes[index].id, randomSeed: random.next())
        config.electionTicks = options.electionTicks
        config.heartbeatTicks = options.heartbeatTicks
        config.inflightAppendsMax = inflightAppendsMax
        config.appendBytesMax = appendBytesMax
        config.entryBytesMax = options.randomLimits ? min(128, uncommittedBytesMax) : 1 << 20
        config.uncommittedBytesMax = uncommittedBytesMax
        config.applyBytesMax = applyBytesMax
        config.applied = nodes[index].storage.snapshotMetadata.index
        config.incarnation = nodes[index].incarnation
        config.preVote = preVote
        config.checkQuorum = checkQuorum
        return config
    }

    /// Starts (or restarts) a node from what its disk holds.
    func start(_ index: Int) {
        let storage = nodes[index].storage
        do {
            nodes[index].cell = RaftCell(try RawNode(config: nodeConfig(index), storage: storage))
        } catch {
            violation = violation ?? SimulationViolation(seed: seed, tick: tick, message: "restart failed: \(error)")
            return
        }
        nodes[index].store = KVSnapshot.decode(storage.snapshotData)
        nodes[index].applied = storage.snapshotMetadata.index
        nodes[index].restartTick = nil
        nodes[index].crashArmed = 0
    }

    /// Loses everything not persisted: the RawNode, the state machine, unanswered requests.
    func crash(_ index: Int) {
        guard nodes[index].cell != nil else { return }
        report.crashes += 1
        nodes[index].cell = nil
        nodes[index].store = [:]
        nodes[index].applied = .zero
        nodes[index].readStates = []
        nodes[index].crashArmed = 0
        nodes[index].persisting = nil
        nodes[index].announced = [:]
        for (_, waiter) in nodes[index].writeWaiters { finishWrite(client: waiter.client, outcome: .indeterminate) }
        nodes[index].writeWaiters = [:]
        for client in pending.indices where pending[client]?.node == index { abandonRead(client: client) }
        if !nodes[index].retired { nodes[index].restartTick = tick + 1 + random.next(below: restartTicksMax) }
    }

    func restartDueNodes() {
        for index in nodes.indices {
            if let retire = nodes[index].retireTick, retire <= tick, !nodes[index].retired {
                nodes[index].retired = true
                crash(index)
                nodes[index].restartTick = nil
            }
            if let due = nodes[index].restartTick, due <= tick, !nodes[index].retired { start(index) }
        }
    }

    // MARK: Ready handling (the shell's loop)

    func handleReady(_ index: Int, allowInFlight: Bool) {
        let ready = nodes[index].cell!.node.ready()
        if trace {
            print("t=\(tick) ready \(nodes[index].id): entries=\(ready.entries.count) committed=\(ready.committedEntries.count) messages=\(ready.messages.count) after=\(ready.messagesAfterPersist.count) hard=\(ready.hardState.map { "\($0)" } ?? "-") armed=\(nodes[index].crashArmed)")
        }
        observe(index)
        for message in ready.messages { send(message) }
        nodes[index].persisting = ready
        if asyncPersist && allowInFlight && random.chance(1, in: 2) { return }
        finishReady(index)
    }

    /// Completes the write of the Ready in flight, then replies, applies and advances.
    func finishReady(_ index: Int) {
        guard let ready = nodes[index].persisting else { return }
        nodes[index].persisting = nil
        if nodes[index].crashArmed == 1 {
            crash(index)
            return
        }
        persist(index, ready)
        if violation != nil { return }
        if nodes[index].crashArmed == 2 {
            crash(index)
            return
        }
        for message in ready.messagesAfterPersist { send(message) }
        if nodes[index].crashArmed == 3 {
            crash(index)
            return
        }
        if crashAfterVote(index, ready) || crashAfterCommit(index, ready) { return }
        if let snapshot = ready.snapshot { installSnapshot(index, snapshot) }
        apply(index, ready.committedEntries)
        nodes[index].readStates.append(contentsOf: ready.readStates)
        for context in ready.droppedReads {
            if let client = readWaiters[context] { abandonRead(client: client) }
        }
        nodes[index].cell!.node.advance(ready)
        releaseReads(index)
        maybeTakeSnapshot(index)
        observe(index)
    }

    /// Nemesis: a node that just granted a vote sometimes crashes and restarts at once, which is
    /// when a vote that was not made durable would be cast twice (Raft Figure 2).
    func crashAfterVote(_ index: Int, _ ready: Ready) -> Bool {
        guard faultsActive, options.crashes, crashOdds <= 100 else { return false }
        let granted = ready.messagesAfterPersist.contains { message in
            if case .voteResponse(let response) = message.kind { return response.granted }
            return false
        }
        guard granted && random.chance(1, in: 3) else { return false }
        crash(index)
        nodes[index].restartTick = tick + random.next(below: 3)
        return true
    }

    /// Nemesis: a leader whose commit index just moved sometimes crashes before telling anyone,
    /// the moment at which a commit that was not safe to make gets lost (Raft §5.4.2, Figure 8).
    func crashAfterCommit(_ index: Int, _ ready: Ready) -> Bool {
        guard faultsActive, options.crashes, crashOdds <= 100, ready.hardState != nil,
              nodes[index].cell?.node.role == .leader, random.chance(1, in: 8) else { return false }
        crash(index)
        nodes[index].restartTick = tick + 1 + random.next(below: 20)
        return true
    }

    func persist(_ index: Int, _ ready: Ready) {
        let storage = nodes[index].storage
        if let snapshot = ready.snapshot {
            guard let data = snapshotData[snapshot.index] else {
                fail("snapshot \(snapshot.index) has no data")
                return
            }
            do {
                try storage.applySnapshot(snapshot, data: data)
            } catch {
                fail("installing snapshot \(snapshot.index) on \(nodes[index].id): \(error)")
                return
            }
        }
        if !ready.entries.isEmpty {
            storage.append(ready.entries)
            checkLogMatching(index, ready.entries)
        }
        if let hardState = ready.hardState { storage.setHardState(hardState) }
    }

    func installSnapshot(_ index: Int, _ snapshot: SnapshotMetadata) {
        report.snapshotsInstalled += 1
        if let entry = appliedEntry(at: snapshot.index), entry.term != snapshot.term {
            fail("snapshot \(snapshot.index)@\(snapshot.term) contradicts applied \(entry.index)@\(entry.term)")
        }
        nodes[index].store = KVSnapshot.decode(snapshotData[snapshot.index] ?? [])
        nodes[index].applied = snapshot.index
        for (waitIndex, waiter) in nodes[index].writeWaiters where waitIndex <= snapshot.index {
            // The shell cannot tell what happened inside a snapshot.
            finishWrite(client: waiter.client, outcome: .indeterminate)
            nodes[index].writeWaiters[waitIndex] = nil
        }
    }

    func apply(_ index: Int, _ entries: [Entry]) {
        for entry in entries {
            guard entry.index == nodes[index].applied.next() else {
                fail("\(nodes[index].id) applies \(entry.index) after \(nodes[index].applied)")
                return
            }
            checkStateMachineSafety(index, entry)
            nodes[index].applied = entry.index
            switch entry.kind {
            case .normal:
                switch KVCommand(decoding: entry.data) {
                case .put(let key, let value): nodes[index].store[key] = value
                case .delete(let key): nodes[index].store[key] = nil
                case nil: break
                }
            case .configChange:
                noteConfigChange(entry)
            }
            if let waiter = nodes[index].writeWaiters.removeValue(forKey: entry.index) {
                finishWrite(client: waiter.client, outcome: waiter.term == entry.term ? .ok : .failed)
            }
        }
    }

    func maybeTakeSnapshot(_ index: Int) {
        guard options.snapshots, let cell = nodes[index].cell else { return }
        let storage = nodes[index].storage
        let applied = nodes[index].applied
        guard applied.rawValue >= storage.snapshotMetadata.index.rawValue + snapshotInterval else { return }
        let metadata: SnapshotMetadata
        do {
            metadata = try cell.node.snapshotMetadata(at: applied)
        } catch .compacted {
            // A snapshot from the leader arrived while this Ready was in flight: it supersedes ours.
            return
        } catch {
            fail("snapshot metadata at \(applied) on \(nodes[index].id): \(error)")
            return
        }
        do {
            let data = KVSnapshot.encode(nodes[index].store)
            if let existing = snapshotData[applied], existing != data {
                fail("state at \(applied) differs between snapshots")
                return
            }
            snapshotData[applied] = data
            try storage.createSnapshot(metadata, data: data)
            report.snapshotsTaken += 1
        } catch {
            fail("snapshot at \(applied) on \(nodes[index].id): \(error)")
        }
    }

    // MARK: Network

    func send(_ message: Message) {
        guard nodeIndex[message.to] != nil, let from = nodeIndex[message.from] else { return }
        let fromIncarnation = nodes[from].incarnation
        // A request only to the incarnation the configuration lists; an answer to the one that
        // asked, as it announced itself, else the listed one (the runtime's rule, see
        // Replica.addressed in KeyperReplica).
        let listed = nodes[from].cell?.node.incarnation(of: message.to)
        guard let toIncarnation = message.kind.isResponse ? nodes[from].announced[message.to] ?? listed : listed else {
            report.messagesDropped += 1
            return
        }
        var copies = 1
        if faultsActive && dropPercent > 0 && random.chance(dropPercent, in: 100) {
            report.messagesDropped += 1
            return
        }
        if faultsActive && duplicatePercent > 0 && random.chance(duplicatePercent, in: 100) { copies = 2 }
        for _ in 0..<copies {
            let delay = 1 + random.next(below: delayTicksMax)
            network.append(InFlight(deliverTick: tick + delay, order: random.next(), message: message,
                                    fromIncarnation: fromIncarnation, toIncarnation: toIncarnation))
        }
    }

    /// The runtime's rule (its peer handshake carries both incarnations): traffic goes only
    /// between the incarnations each side's configuration lists. Without it a node with a
    /// replaced disk would be treated as the member it replaced.
    func incarnationsMatch(_ item: InFlight, at index: Int) -> Bool {
        let recorded = nodes[index].cell?.node.incarnation(of: item.message.from)
        let counted = item.message.kind.isResponse
        guard item.toIncarnation == nodes[index].incarnation, !counted || recorded.map({ $0 == item.fromIncarnation }) ?? true else { return false }
        nodes[index].announced[item.message.from] = item.fromIncarnation
        return true
    }

    func deliverDueMessages() {
        var due: [InFlight] = []
        var later: [InFlight] = []
        for item in network {
            if item.deliverTick <= tick { due.append(item) } else { later.append(item) }
        }
        network = later
        due.sort { ($0.deliverTick, $0.order) < ($1.deliverTick, $1.order) }
        for item in due {
            let message = item.message
            guard let index = nodeIndex[message.to], nodes[index].cell != nil,
                  !blocked.contains(Link(from: message.from, to: message.to)),
                  incarnationsMatch(item, at: index) else {
                report.messagesDropped += 1
                continue
            }
            report.messagesDelivered += 1
            if trace {
                switch message.kind {
                case .vote, .voteResponse, .preVote, .preVoteResponse, .timeoutNow, .snapshot, .append, .appendResponse, .heartbeat, .heartbeatResponse:
                    print("t=\(tick) deliver \(message.from)->\(message.to) \(message.term) \(message.kind)")
                default: break
                }
            }
            do {
                try nodes[index].cell!.node.step(message)
            } catch {
                fail("step failed on \(message.to): \(error)")
                return
            }
            observe(index)
            if random.chance(1, in: 2) { drainReady(index, allowInFlight: true) }
        }
    }

    // MARK: Faults

    func injectFaults() {
        if options.partitions {
            if random.chance(1, in: partitionOdds) { partitionRandomly() }
            if !blocked.isEmpty && random.chance(1, in: 40) { blocked = [] }
        }
        if options.crashes && random.chance(1, in: crashOdds) {
            let live = nodes.indices.filter { nodes[$0].cell != nil }
            let leaders = live.filter { nodes[$0].cell!.node.role == .leader }
            // Half the crashes hit a leader: leader churn with partly replicated logs (Figure 8).
            let pool = !leaders.isEmpty && random.chance(1, in: 2) ? leaders : live
            if let victim = pool.randomElement(using: &random) {
                nodes[victim].crashArmed = 1 + random.next(below: 3)
            }
        }
        // Only with pre-vote, as the runtime always runs: a replaced disk takes a vote away until
        // it rejoins, and without pre-vote a lagging voter with an old configuration can keep
        // raising its term past the others' requests for as long as that lasts.
        if options.diskReplacements && preVote && random.chance(1, in: diskReplacementOdds) { replaceDisk() }
        if options.membershipChanges && random.chance(1, in: membershipOdds) { changeMembership() }
        if options.transfers && random.chance(1, in: 150) { transferLeadership() }
    }

    func partitionRandomly() {
        let ids = nodes.filter { !$0.retired }.map(\.id)
        // Half the time cut off a leader: the case that tests check-quorum and ReadIndex.
        let leaders = nodes.filter { $0.cell?.node.role == .leader }.map(\.id)
        let pickLeader = !leaders.isEmpty && random.chance(1, in: 2)
        guard let isolated = pickLeader ? leaders.randomElement(using: &random) : ids.randomElement(using: &random) else { return }
        let oneWay = random.chance(1, in: 3)
        let inbound = random.chance(1, in: 2)
        for other in ids where other != isolated {
            if !oneWay || inbound { blocked.insert(Link(from: other, to: isolated)) }
            if !oneWay || !inbound { blocked.insert(Link(from: isolated, to: other)) }
        }
    }

    func stopFaults() {
        faultsActive = false
        blocked = []
        for index in nodes.indices where nodes[index].cell == nil && !nodes[index].retired {
            start(index)
        }
        for index in nodes.indices {
            nodes[index].crashArmed = 0
            drainReady(index)
        }
    }

    func leaderIndex() -> Int? {
        var best: Int?
        for index in nodes.indices {
            guard let status = nodes[index].cell?.node.status, status.role == .leader else { continue }
            if let current = best, nodes[current].cell!.node.status.term >= status.term { continue }
            best = index
        }
        return best
    }

    /// A node's disk is replaced: it crashes and comes back empty under a new incarnation. It
    /// must not vote or count as a replica until the leader has removed its old incarnation
    /// and added the new one (``changeMembership()``).
    func replaceDisk() {
        // One at a time: a second replaced disk before the first rejoined could leave fewer
        // than a majority of the voters with their logs, which no consensus protocol survives.
        guard !nodes.contains(where: { $0.replaced && !$0.retired }) else { return }
        // And only where the other voters still make a majority (a 2-voter cluster that loses
        // a disk has lost its quorum for good, in any protocol).
        guard let leader = leaderIndex() else { return }
        let voters = nodes[leader].cell!.node.status.configuration.voters
        guard voters.count - 1 >= voters.count / 2 + 1 else { return }
        let candidates = nodes.indices.filter { !nodes[$0].retired && nodes[$0].cell != nil }
        guard let victim = candidates.randomElement(using: &random) else { return }
        crash(victim)
        nodes[victim].storage = MemoryStorage()
        nodes[victim].replaced = true
        nodes[victim].incarnation = Self.incarnation(of: nodes[victim].id, generation: random.next())
        report.disksReplaced += 1
    }

    func changeMembership() {
        guard let leader = leaderIndex() else { return }
        let configuration = nodes[leader].cell!.node.status.configuration
        var change: ConfChange?
        // A replaced disk first: remove the old incarnation, then add the new one as a learner.
        if let replaced = nodes.first(where: { $0.replaced && !$0.retired }) {
            if configuration.members.contains(replaced.id) {
                if configuration.incarnations[replaced.id] != replaced.incarnation {
                    change = ConfChange(kind: .removeNode, node: replaced.id)
                }
            } else {
                change = ConfChange(kind: .addLearner, node: replaced.id, incarnation: replaced.incarnation)
            }
        }
        if change != nil {
            // (proposed below)
        } else if let learner = configuration.learners.sorted().first {
            // Promote once caught up (thesis §4.2.1), as the runtime does: a voter whose log
            // does not yet list it cannot vote, and the quorum would count on it.
            let status = nodes[leader].cell!.node.status
            guard (status.followers[learner]?.match ?? .zero) >= status.commit else { return }
            change = ConfChange(kind: .addVoter, node: learner)
        } else if configuration.voters.count > options.nodeCount {
            let voters = configuration.voters.sorted()
            change = ConfChange(kind: .removeNode, node: voters[random.next(below: voters.count)])
        } else if nodesCreated < options.nodeCount + 4 {
            let id = NodeID("n\(nodesCreated + 1)")
            let index = addNode(id, storage: MemoryStorage())
            change = ConfChange(kind: .addLearner, node: id, incarnation: nodes[index].incarnation, context: Array("addr-\(id)".utf8))
        }
        guard let change else { return }
        _ = try? nodes[leader].cell!.node.proposeConfChange(change)
        observe(leader)
    }

    func transferLeadership() {
        guard let leader = leaderIndex() else { return }
        let voters = nodes[leader].cell!.node.status.configuration.voters.filter { $0 != nodes[leader].id }.sorted()
        guard let target = voters.randomElement(using: &random) else { return }
        if (try? nodes[leader].cell!.node.transferLeadership(to: target)) != nil { report.transfersStarted += 1 }
    }

    func noteConfigChange(_ entry: Entry) {
        guard let change = try? ConfChange(decoding: entry.data) else {
            fail("undecodable configuration entry \(entry.index)")
            return
        }
        if change.kind == .addLearner, let index = nodeIndex[change.node], change.incarnation == nodes[index].incarnation {
            nodes[index].replaced = false  // back as a new member
            nodes[index].addedIndex = max(nodes[index].addedIndex, entry.index)
        }
        if change.kind == .removeNode, let index = nodeIndex[change.node], nodes[index].retireTick == nil, !nodes[index].replaced,
           entry.index > nodes[index].addedIndex {
            // Give a removed leader time to hand over before it is shut down.
            nodes[index].retireTick = tick + 20
        }
    }

    // MARK: Failure

    @discardableResult
    func fail(_ message: String) -> SimulationViolation {
        let found = SimulationViolation(seed: seed, tick: tick, message: message)
        if violation == nil { violation = found }
        return violation!
    }
}

/// Holds a node's RawNode by reference so reading it never copies the whole value.
final class RaftCell {
    var node: RawNode
    init(_ node: RawNode) { self.node = node }
}
