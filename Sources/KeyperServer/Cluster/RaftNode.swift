import FoundationEssentials
import KeyperBase
import KeyperClient
import KeyperRaft
import KeyperReplica
import KeyperStorage
import KeyperTransport
import KeyperWire
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A Raft cluster member behind the HTTP API.
///
/// Handlers never touch Raft state: writes and linearizable reads are enqueued for the
/// ``RaftEngine`` loop and awaited. A write is acknowledged once its entry is committed on a
/// majority (each of which fsynced it) and applied here; a follower forwards it to the leader
/// over the peer connection and answers when it applies the entry itself.
public final class RaftNode: KeyValueNode {
    public let configuration: NodeConfiguration
    public let metrics: NodeMetrics
    let cluster: ClusterConfiguration
    let engine: RaftEngine
    let store: KVStore
    let transport: PeerTransport
    let directory: DataDirectory
    let published: PublishedBox
    let logger: Logger
    private let started = ContinuousClock.now
    /// The port peer traffic is accepted on (the real one when `--raft-addr` asked for port 0).
    public let raftPort: Int
    private let joinTask = Mutex<Task<Void, Never>?>(nil)
    let leaseService: LeaseService

    private init(configuration: NodeConfiguration, cluster: ClusterConfiguration, engine: RaftEngine, store: KVStore,
                 transport: PeerTransport, directory: DataDirectory, published: PublishedBox, metrics: NodeMetrics,
                 logger: Logger, raftPort: Int) {
        self.configuration = configuration
        self.cluster = cluster
        self.engine = engine
        self.store = store
        self.transport = transport
        self.directory = directory
        self.published = published
        self.metrics = metrics
        self.logger = logger
        self.raftPort = raftPort
        // etcd's floor: one and a half election timeouts, in whole seconds.
        let floorMs = 3 * cluster.electionTicks * cluster.tickMs / 2
        leaseService = LeaseService(store: store, metrics: metrics, ttlSecondsMin: UInt64(max(1, (floorMs + 999) / 1000)))
    }

    /// Opens the data directory and the log, bootstraps a single-node cluster on an empty one
    /// (unless joining), starts the peer listener and the Raft loop.
    public static func open(configuration: NodeConfiguration, logger: Logger) async throws -> RaftNode {
        guard var cluster = configuration.cluster else { preconditionFailure("RaftNode needs a cluster configuration") }
        let walFileSystem = cluster.walFileSystem ?? { GlibcFileSystem() }
        let disk = try OpenedDataDirectory(path: configuration.dataDirectory, nodeID: configuration.nodeID, walFileSystem: walFileSystem,
                                           truncateCorrupt: cluster.walTruncateCorrupt, backgroundCompaction: true,
                                           changeLimits: configuration.changeLimits, logger: logger)

        let engineBox = EngineBox()
        var transportConfiguration = PeerTransport.Configuration(nodeID: configuration.nodeID, host: cluster.raftAddress.host,
                                                                 port: cluster.raftAddress.port)
        transportConfiguration.connectTimeoutMs = Int64(cluster.tickMs * cluster.electionTicks)
        // What peers may have in flight to this node's loop: a snapshot arriving faster than
        // the loop writes it (a disk throttling writeback, say) waits in TCP, not in memory.
        transportConfiguration.inboundBytesMax = 32 << 20
        let transport = PeerTransport(configuration: transportConfiguration, logger: logger) { from, frame in
            // Decode on the transport's thread: the loop only steps.
            let records = try PeerRecord.decodeFrame(Array(buffer: frame))
            let origin = FrameOrigin(from)
            guard let engine = engineBox.engine else {
                // Not running yet: the frame is dropped (Raft resends), and so is its count.
                engineBox.transport?.consumed(bytes: frame.readableBytes)
                return
            }
            engine.enqueue(peerBytes: frame.readableBytes) { input in
                for record in records { input.records.append((origin, record)) }
            }
        }
        engineBox.transport = transport
        // Listen before anything is written: the address peers are told (in the bootstrap
        // entry) must be the one actually bound, also when --raft-addr asked for port 0.
        let raftPort: Int
        do {
            raftPort = try await transport.start()
        } catch {
            throw ConfigurationError("cannot listen for peers on \(cluster.raftAddress) (--raft-addr): \(error)")
        }
        if cluster.raftAddress.port == 0 {
            cluster.advertisedRaftAddress = cluster.raftAddress.advertised(port: raftPort).description
        }
        do {
            let node = try assemble(configuration: configuration, cluster: cluster, disk: disk, transport: transport,
                                    engineBox: engineBox, logger: logger)
            node.leaseService.start(leadership: { [published = node.published] in
                published.state.withLock { $0.status.role == .leader ? $0.status.term.rawValue : nil }
            }, write: { try await node.write($0) }, logger: logger)
            logger.notice("raft node started", metadata: [
                "raft": "\(cluster.advertisedRaftAddress)", "cluster": "\(node.published.state.withLock { $0.clusterID })",
            ])
            if let url = cluster.joinURL {
                node.joinTask.withLock { $0 = Task { await node.requestJoin(via: [url]) } }
            } else if let others = node.rejoinTargets() {
                logger.notice("this node's configuration lists it under another incarnation; asking the cluster to add it again",
                              metadata: ["via": "\(others)"])
                node.joinTask.withLock { $0 = Task { await node.requestJoin(via: others) } }
            }
            return node
        } catch {
            await transport.stop()
            disk.close()
            throw error
        }
    }

    /// Everything after the listener is up: the replica made of the opened directory, and
    /// the loop that runs it.
    private static func assemble(configuration: NodeConfiguration, cluster: ClusterConfiguration, disk: OpenedDataDirectory,
                                 transport: PeerTransport, engineBox: EngineBox, logger: Logger) throws -> RaftNode {
        let metrics = NodeMetrics()
        let loopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = loopGroup.next()
        let clock = SystemClock()
        let settings = ReplicaSettings(advertisedRaftAddress: cluster.advertisedRaftAddress,
                                       advertisedHTTPAddress: cluster.advertisedHTTPAddress, electionTicks: cluster.electionTicks,
                                       requestTimeoutMs: cluster.requestTimeoutMs, snapshotEntries: UInt64(cluster.snapshotEntries),
                                       catchUpEntries: UInt64(cluster.catchUpEntries))
        let options = ReplicaOptions(settings: settings, bootstrapIfEmpty: cluster.joinURL == nil, heartbeatTicks: cluster.heartbeatTicks,
                                     entryBytesMax: configuration.entryBytesMax,
                                     randomSeed: UInt64.random(in: 0...UInt64.max))
        let environment = ReplicaEnvironment(peers: TransportPeers(transport: transport), blockingWork: ThreadPoolWork(loop: loop),
                                             clock: clock)
        let replica: Replica
        do {
            replica = try Replica(opening: disk, options: options, environment: environment, logger: logger, metrics: metrics.replica)
        } catch {
            try? loopGroup.syncShutdownGracefully()
            throw error
        }
        let engine = RaftEngine(replica: replica, loopGroup: loopGroup, loop: loop, clock: clock,
                                peerBytesProcessed: { [transport] in transport.consumed(bytes: $0) })
        engineBox.engine = engine
        engine.start(tick: TimeAmount.milliseconds(Int64(cluster.tickMs)))
        return RaftNode(configuration: configuration, cluster: cluster, engine: engine, store: disk.store, transport: transport,
                        directory: disk.directory, published: replica.published, metrics: metrics, logger: logger,
                        raftPort: HostPort(parsing: cluster.advertisedRaftAddress)?.port ?? cluster.raftAddress.port)
    }

    /// The HTTP addresses of the other members, when the configuration this node holds lists
    /// its id under another incarnation: it lost entries it had (its log was cut) and must be
    /// added again as a new member. Nil otherwise.
    func rejoinTargets() -> [String]? {
        let state = published.state.withLock { $0 }
        let me = NodeID(configuration.nodeID)
        let configuration = state.status.configuration
        guard configuration.members.contains(me), !configuration.lists(me, incarnation: state.incarnation) else { return nil }
        let others = configuration.members.filter { $0 != me }.sorted().compactMap { state.addressBook[$0]?.http }.filter { !$0.isEmpty }
        return others.isEmpty ? nil : others.map { "http://" + $0 }
    }

    /// `--join URL`: asks that node (any member: a follower forwards to its leader) to add this
    /// one, and keeps asking, with back-off, until it says yes, or no for good (a 4xx). With
    /// several URLs, each attempt asks the next.
    private func requestJoin(via urls: [String]) async {
        // A learner that asked to stay one (and rejoins after losing entries) asks again as one.
        let learner = published.state.withLock { $0.addressBook[NodeID(configuration.nodeID)]?.promote == false }
        let body = Self.joinBody(nodeID: configuration.nodeID, raft: cluster.advertisedRaftAddress, http: cluster.advertisedHTTPAddress,
                                 learner: learner)
        var delay = Duration.milliseconds(200)
        var attempt = 0
        while !Task.isCancelled {
            let url = urls[attempt % urls.count]
            attempt += 1
            let base = url.hasSuffix("/") ? String(url.dropLast()) : url
            do {
                let result = try await HTTPRequester.send(.POST, base + "/v1/join", body: body,
                                                          headers: [("Content-Type", "application/json")],
                                                          timeout: .milliseconds(cluster.requestTimeoutMs + 1_000))
                if result.status == 204 {
                    logger.notice("joined the cluster as a voter", metadata: ["via": "\(base)"])
                    return
                }
                if result.status == 202 {
                    logger.notice("joined the cluster as a learner; the leader promotes it to voter once it has caught up",
                                  metadata: ["via": "\(base)"])
                    return
                }
                if (400..<500).contains(result.status) {
                    logger.critical("the cluster refused to add this node; not retrying", metadata: [
                        "via": "\(base)", "status": "\(result.status)", "answer": "\(result.text)",
                    ])
                    return
                }
                logger.warning("join not accepted yet; retrying", metadata: ["status": "\(result.status)", "answer": "\(result.text)"])
            } catch {
                logger.warning("cannot reach the node to join through; retrying", metadata: ["via": "\(base)", "error": "\(error)"])
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }

    static func joinBody(nodeID: String, raft: String, http: String?, learner: Bool = false) -> [UInt8] {
        var body = #"{"node_id":"# + JSONText.quoted(nodeID) + #","raft_addr":"# + JSONText.quoted(raft)
        if let http, !http.isEmpty { body += #","http_addr":"# + JSONText.quoted(http) }
        if learner { body += #","learner":true"# }
        return Array((body + "}").utf8)
    }

    /// Sends a membership or lease request to the leader's HTTP API when this node is a follower that
    /// knows where the leader is; nil when this node should handle it itself.
    private func forwardToLeader(_ method: HTTPMethodName, _ path: String, body: [UInt8]? = nil) async throws -> HTTPResult? {
        let (leaderHTTP, isLeader) = published.state.withLock { state in
            (state.status.leader.flatMap { state.addressBook[$0]?.http }, state.status.role == .leader)
        }
        guard !isLeader, let leaderHTTP, HostPort(parsing: leaderHTTP) != nil else { return nil }
        let result: HTTPResult
        do {
            result = try await HTTPRequester.send(method.nio, "http://\(leaderHTTP)\(path)", body: body,
                                                  headers: [("Content-Type", "application/json")],
                                                  timeout: .milliseconds(cluster.requestTimeoutMs + 1_000))
        } catch {
            throw APIError(.badGateway, code: "leader_unreachable", "cannot reach the leader at \(leaderHTTP): \(error)")
        }
        guard (200..<300).contains(result.status) else {
            let answer = try? JSONDecoder().decode(ErrorBody.self, from: Data(result.body))
            throw APIError(.init(code: result.status), code: answer?.code ?? "leader_error", answer?.error ?? result.text)
        }
        return result
    }

    private struct ErrorBody: Decodable {
        var error: String
        var code: String
    }

    /// Stops peer traffic and the loop, then closes the log and the store.
    public func close() async {
        joinTask.withLock { $0?.cancel() }
        leaseService.stop()
        await transport.stop()
        await engine.shutdown()
        store.close()
        directory.release()
    }

    // MARK: KeyValueNode

    public var leaderHint: String? {
        published.state.withLock { $0.status.leader?.rawValue }
    }

    public var appliedIndex: UInt64? {
        published.state.withLock { $0.appliedIndex.rawValue }
    }

    /// When a request made now gives up, on the replica's clock.
    private var deadline: Moment { engine.clock.now + .milliseconds(cluster.requestTimeoutMs) }

    /// Hands the replica a waiter for this task and suspends until the replica answers it.
    private func wait(_ enqueue: (Waiter) -> Void) async -> Result<WaitOutcome, ReplicaError> {
        let deadline = self.deadline
        return await withCheckedContinuation { (continuation: CheckedContinuation<Result<WaitOutcome, ReplicaError>, Never>) in
            enqueue(Waiter(deadline: deadline) { continuation.resume(returning: $0) })
        }
    }

    /// Waits until this node's state machine reflects every write acknowledged before the
    /// call (ReadIndex, thesis §6.4): reads gathered together share one round.
    private func readBarrier() async throws {
        if case .failure(let error) = await wait({ waiter in engine.enqueue { $0.reads.append(waiter) } }) {
            throw APIError(error)
        }
    }

    public func write(_ write: KVWrite) async throws -> KVWriteResult {
        let command = Command(request: engine.nextRequestID(), write: write)
        let data = command.encoded()
        let result = await wait { waiter in
            engine.enqueue { $0.proposals.append(PendingProposal(request: command.request, data: data, waiter: waiter)) }
        }
        switch result {
        case .success(.written(let written)): return written
        case .success(let other): preconditionFailure("a write answered with \(other)")
        case .failure(let error): throw APIError(error)
        }
    }

    public func get(_ key: [UInt8], consistency: ReadConsistency) async throws -> KVStore.VersionedRead {
        if consistency == .linearizable { try await readBarrier() }
        do { return try await DiskReads.get(key, from: store) } catch { throw StorageFailure.map(error) }
    }

    public func list(prefix: [UInt8], after: [UInt8]?, limit: Int, values: Bool,
                     consistency: ReadConsistency) async throws -> KVStore.VersionedPage {
        if consistency == .linearizable { try await readBarrier() }
        do { return try store.listVersioned(prefix: prefix, after: after, limit: limit, values: values) } catch { throw StorageFailure.map(error) }
    }

    public var changes: ChangeFeed { store.changes }

    public func read(_ transaction: KVTransaction, consistency: ReadConsistency) async throws -> KVTransactionResult {
        if consistency == .linearizable { try await readBarrier() }
        do { return try await DiskReads.pool.runIfActive { [store] in try store.read(transaction) } } catch { throw StorageFailure.map(error) }
    }

    private func admin(_ make: @escaping @Sendable (Waiter) -> AdminRequest) async -> Result<WaitOutcome, ReplicaError> {
        await wait { waiter in
            let request = make(waiter)
            engine.enqueue { $0.admin.append(request) }
        }
    }

    @discardableResult
    public func join(nodeID: String, raftAddress: String, httpAddress: String?, learner: Bool = false) async throws -> JoinOutcome {
        let body = Self.joinBody(nodeID: nodeID, raft: raftAddress, http: httpAddress, learner: learner)
        if let answer = try await forwardToLeader(.post, "/v1/join", body: body) {
            guard answer.status == 202 else { return learner ? .learner : .voter }
            return .learnerPromoting
        }
        let addresses = MemberAddresses(raft: raftAddress, http: httpAddress ?? "", promote: !learner)
        switch await admin({ .join(node: NodeID(nodeID), addresses: addresses, waiter: $0) }) {
        case .success(.joinedAsLearner): return .learnerPromoting
        case .success: return learner ? .learner : .voter
        case .failure(let error): throw APIError(error)
        }
    }

    public func removeMember(_ nodeID: String) async throws {
        let path = "/v1/members/\(KeyPath.encode(Array(nodeID.utf8)))"
        if try await forwardToLeader(.delete, path) != nil { return }
        switch await admin({ .remove(node: NodeID(nodeID), waiter: $0) }) {
        case .success:
            return
        case .failure(let error) where error.kind == .leaderTransfer:
            // Removing the leader itself: it handed leadership over first (thesis §3.10); once
            // the new leader is known, ask it to finish the removal.
            let deadline = self.deadline
            while engine.clock.now < deadline {
                try await Task.sleep(for: .milliseconds(cluster.tickMs))
                if let leader = leaderHint, leader != configuration.nodeID {
                    if try await forwardToLeader(.delete, path) != nil { return }
                }
            }
            throw APIError(error)
        case .failure(let error):
            throw APIError(error)
        }
    }

    public func transferLeadership(to target: String?) async throws -> String {
        // A follower asks the leader, as it does for membership changes.
        let body = target.map { Array(#"{"target":"# .utf8) + Array(JSONText.quoted($0).utf8) + Array("}".utf8) }
        if let answer = try await forwardToLeader(.post, "/v1/leader/transfer", body: body) {
            struct Moved: Decodable { var leader: String }
            guard let moved = try? JSONDecoder().decode(Moved.self, from: Data(answer.body)) else {
                throw APIError(.badGateway, code: "leader_error", "the leader's answer to the transfer is not {\"leader\": …}: \(answer.text)")
            }
            return moved.leader
        }
        if case .failure(let error) = await admin({ .transfer(target: target.map { NodeID($0) }, waiter: $0) }) {
            throw APIError(error)
        }
        // The transfer was started; wait (bounded) for a new leader to show up.
        let deadline = self.deadline
        while engine.clock.now < deadline {
            if let leader = leaderHint, leader != configuration.nodeID { return leader }
            try await Task.sleep(for: .milliseconds(cluster.tickMs))
        }
        throw APIError(.serviceUnavailable, code: "timeout", "leadership did not move within the request timeout")
    }

    public func setFaults(dropTo: Set<String>, dropFrom: Set<String>) throws {
        guard cluster.faultInjection else { throw APIError.faultInjectionDisabled() }
        transport.faults = PeerTransport.Faults(dropTo: dropTo, dropFrom: dropFrom)
        logger.warning("fault injection: peer traffic dropped", metadata: [
            "to": "\(dropTo.sorted())", "from": "\(dropFrom.sorted())",
        ])
    }

    public func backup() async throws -> NodeBackup {
        try await readBarrier()
        return try await NodeBackup.make(of: store)
    }

    // MARK: Leases

    /// This node's term while it leads, else nil.
    private var leadership: UInt64? {
        published.state.withLock { $0.status.role == .leader ? $0.status.term.rawValue : nil }
    }

    public var leaseTTLSecondsMin: UInt64 { leaseService.ttlSecondsMin }

    public func keepAlive(lease id: UInt64) async throws -> LeaseStatus {
        if let answer = try await forwardToLeader(.post, "/v1/leases/\(id)/keepalive") { return try LeaseJSON.decode(answer.body) }
        try await readBarrier()
        guard let term = leadership else {
            throw APIError(.serviceUnavailable, code: "not_leader", "this node stopped leading during the keepalive; retry")
        }
        return try leaseService.keepAlive(id, term: term)
    }

    public func lease(_ id: UInt64) async throws -> LeaseStatus {
        if let answer = try await forwardToLeader(.get, "/v1/leases/\(id)") { return try LeaseJSON.decode(answer.body) }
        try await readBarrier()
        return try leaseService.status(id)
    }

    public func leases(consistency: ReadConsistency) async throws -> [LeaseInfo] {
        if consistency == .linearizable { try await readBarrier() }
        return try leaseService.all()
    }

    public func status() async throws -> NodeStatus {
        let state = published.state.withLock { $0 }
        let keys: Int
        do { keys = try store.count() } catch { throw StorageFailure.map(error) }
        let uptime = ContinuousClock.now - started
        let configuration = state.status.configuration
        let members = configuration.members.sorted().map { node in
            MemberStatus(id: node.rawValue, raftAddress: state.addressBook[node]?.raft ?? "",
                         httpAddress: state.addressBook[node]?.http ?? "",
                         role: configuration.voters.contains(node) ? "voter" : "learner",
                         promotion: configuration.voters.contains(node) ? nil : state.addressBook[node]?.promote == false ? "none" : "pending",
                         incarnation: configuration.incarnations[node].map(NodeIdentity.describe),
                         matchIndex: state.status.role == .leader
                            ? (node == state.status.id ? state.status.lastIndex.rawValue : state.status.followers[node]?.match.rawValue)
                            : nil)
        }
        var warnings: [String] = []
        if configuration.voters.count == 2 {
            warnings.append("a 2-voter cluster tolerates no failure: a majority of 2 is 2; add a third node")
        }
        if state.diskFull { warnings.append("the disk is full: writes are refused") }
        let leader = state.status.leader
        return NodeStatus(
            nodeID: self.configuration.nodeID, status: "ok", mode: "raft", version: KeyperVersion.current,
            uptimeSeconds: Double(uptime.components.seconds) + Double(uptime.components.attoseconds) / 1e18,
            keys: keys, isLeader: state.status.role == .leader, leaderID: leader?.rawValue,
            leaderAddress: leader.flatMap { state.addressBook[$0]?.raft }, leaderHTTPAddress: leader.flatMap { state.addressBook[$0]?.http },
            term: state.status.term.rawValue, commitIndex: state.status.commit.rawValue, appliedIndex: state.appliedIndex.rawValue,
            snapshotIndex: state.snapshotIndex.rawValue, lastIndex: state.status.lastIndex.rawValue,
            role: "\(state.status.role)", clusterID: state.clusterID, members: members,
            warnings: warnings.isEmpty ? nil : warnings, dataDirectory: self.configuration.dataDirectory)
    }

    public func health() async -> Health {
        let state = published.state.withLock { $0 }
        if state.diskFull { return Health(healthy: false, reason: "disk full") }
        guard let leader = state.status.leader else { return Health(healthy: false, reason: "no leader") }
        return Health(healthy: true, reason: "leader is \(leader)")
    }

    /// Entries this node may have committed and not yet applied and still be ready.
    static let readyLagEntries: UInt64 = 1_000

    /// Healthy, a member of the cluster it serves (not still joining), and caught up: what it
    /// committed, applied to within ``readyLagEntries``.
    public func readiness() async -> Health {
        let health = await health()
        guard health.healthy else { return health }
        let state = published.state.withLock { $0 }
        guard state.status.configuration.members.contains(state.status.id) else {
            return Health(healthy: false, reason: "not a member of the cluster yet (joining)")
        }
        let lag = state.status.commit.rawValue - min(state.status.commit.rawValue, state.appliedIndex.rawValue)
        guard lag <= Self.readyLagEntries else {
            return Health(healthy: false, reason: "applying: \(lag) committed entries not applied yet (ready within \(Self.readyLagEntries))")
        }
        return Health(healthy: true, reason: "\(health.reason); applied through \(state.appliedIndex.rawValue)")
    }
}

/// Lets the transport's receiver, created before the engine, reach it.
final class EngineBox: Sendable {
    private let box = Mutex<RaftEngine?>(nil)
    var engine: RaftEngine? {
        get { box.withLock { $0 } }
        set { box.withLock { $0 = newValue } }
    }
    private let transportBox = Mutex<PeerTransport?>(nil)
    /// The transport whose frames go to the engine: told of frames dropped before there is one.
    var transport: PeerTransport? {
        get { transportBox.withLock { $0 } }
        set { transportBox.withLock { $0 = newValue } }
    }
}

/// The methods membership and lease calls are forwarded with.
enum HTTPMethodName {
    case get, post, delete

    var nio: HTTPMethod {
        switch self {
        case .get: .GET
        case .post: .POST
        case .delete: .DELETE
        }
    }
}
