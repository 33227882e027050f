/// What a cluster simulation run does. Defaults: three replicas, the fault menu, four clients.
public struct ClusterSimulationOptions: Sendable {
    public var nodeCount = 3
    /// Simulated time with faults injected; then faults stop.
    public var faultMilliseconds = 3_000
    /// Once faults stop, a write must be acknowledged within this long (liveness).
    public var settleMillisecondsMax = 15_000
    /// After liveness, time for every member to apply everything (checked) and clients to finish.
    public var drainMillisecondsMax = 5_000
    public var tickMilliseconds = 10
    public var electionTicks = 10
    public var heartbeatTicks = 1
    public var requestTimeoutMilliseconds = 1_000
    /// Concurrent client processes (each with at most one operation outstanding).
    public var clients = 4
    public var keys = ["a", "b", "c"]
    public var crashes = true
    public var partitions = true
    /// Frames lost in flight (a connection reset) and variable latency.
    public var drops = true
    public var transfers = true
    /// Replace a node's disk with an empty one now and then; the operator joins it again.
    public var diskWipes = true
    /// Remove a member now and then (the operator joins it back with its data). A seed draws
    /// either wipes or removals: a removal leaves two voters, and losing one of two voters'
    /// disks leaves a cluster no operator can repair without forcing a new one.
    public var removals = true
    /// A share of client reads are stale (`?consistency=stale`): served from the local state
    /// machine, checked against the log every replica applied.
    public var staleReads = true
    /// A share of client writes are compare-and-sets (a put conditioned on the mod revision
    /// the client last read), each with an idempotency key, retried with it when unanswered.
    public var compareAndSet = true
    /// Fill a node's Raft log disk for a while (writes fail with ENOSPC); it must stall, refuse
    /// writes, and resume when space returns.
    public var fullDisks = true
    /// Take snapshots every few dozen entries (drawn per seed), so installs happen.
    public var snapshots = true
    /// Where the replicas' data directories go (their state machines and snapshots; the Raft
    /// logs live on simulated disks). Default: `/dev/shm` when it exists, else `/tmp`.
    public var temporaryDirectory: String?
    /// Print the replicas' log lines, prefixed with the simulated time.
    public var trace = false

    public init(nodeCount: Int = 3) { self.nodeCount = nodeCount }
}

/// A broken invariant, with the seed that replays it and the client history up to it.
public struct ClusterSimulationViolation: Error, CustomStringConvertible, Sendable {
    public var seed: UInt64
    /// Simulated milliseconds since the start.
    public var milliseconds: Int64
    public var message: String
    /// The client operations, one per line, as the linearizability checker saw them.
    public var history: String
    public var description: String { "seed=\(seed) t=\(milliseconds)ms: \(message)" }
}

/// What a run did, to show the faults and features were exercised.
public struct ClusterSimulationReport: Sendable, CustomStringConvertible {
    public var seed: UInt64 = 0
    public var milliseconds: Int64 = 0
    public var writesAcknowledged = 0
    public var writesFailed = 0
    public var writesIndeterminate = 0
    public var readsAcknowledged = 0
    public var readsFailed = 0
    public var staleReads = 0
    /// Stale reads whose range of allowed values was not known (an entry compacted before any
    /// replica's applied log was read): not checked.
    public var staleReadsUnchecked = 0
    public var removals = 0
    public var leadersElected = 0
    public var crashes = 0
    public var partitions = 0
    public var transfers = 0
    public var framesDelivered = 0
    public var framesDropped = 0
    public var snapshotsInstalled = 0
    /// Snapshot transfers started over because their connection broke mid-way.
    public var snapshotRestarts = 0
    public var joins = 0
    public var wipes = 0
    public var fullDisks = 0
    public var operationsChecked = 0
    /// Compare-and-sets answered set or refused; retries with an idempotency key, and those
    /// answered from the store's memory of the first attempt.
    public var compareAndSetsSet = 0
    public var compareAndSetsRefused = 0
    public var compareAndSetRetries = 0
    public var compareAndSetReplays = 0

    public init() {}

    /// Adds what another run did (its counts; not its seed or time).
    public mutating func add(_ other: ClusterSimulationReport) {
        writesAcknowledged += other.writesAcknowledged
        writesFailed += other.writesFailed
        writesIndeterminate += other.writesIndeterminate
        readsAcknowledged += other.readsAcknowledged
        readsFailed += other.readsFailed
        staleReads += other.staleReads
        staleReadsUnchecked += other.staleReadsUnchecked
        removals += other.removals
        leadersElected += other.leadersElected
        crashes += other.crashes
        partitions += other.partitions
        transfers += other.transfers
        framesDelivered += other.framesDelivered
        framesDropped += other.framesDropped
        snapshotsInstalled += other.snapshotsInstalled
        snapshotRestarts += other.snapshotRestarts
        joins += other.joins
        wipes += other.wipes
        fullDisks += other.fullDisks
        operationsChecked += other.operationsChecked
        compareAndSetsSet += other.compareAndSetsSet
        compareAndSetsRefused += other.compareAndSetsRefused
        compareAndSetRetries += other.compareAndSetRetries
        compareAndSetReplays += other.compareAndSetReplays
    }

    public var description: String {
        "seed=\(seed) t=\(milliseconds)ms leaders=\(leadersElected) writes=\(writesAcknowledged)"
            + "/failed=\(writesFailed)/unknown=\(writesIndeterminate) reads=\(readsAcknowledged)/failed=\(readsFailed) "
            + "stale=\(staleReads)/unchecked=\(staleReadsUnchecked) removals=\(removals) "
            + "crashes=\(crashes) wipes=\(wipes) fullDisks=\(fullDisks) partitions=\(partitions) transfers=\(transfers) joins=\(joins) "
            + "frames=\(framesDelivered)/dropped=\(framesDropped) installs=\(snapshotsInstalled)/restarts=\(snapshotRestarts) checked=\(operationsChecked) "
            + "cas=\(compareAndSetsSet)/refused=\(compareAndSetsRefused)/retries=\(compareAndSetRetries)/replays=\(compareAndSetReplays)"
    }
}
