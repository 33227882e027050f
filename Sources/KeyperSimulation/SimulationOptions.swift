import KeyperRaft

/// What a simulation run does. Defaults: the full fault menu on three nodes.
public struct SimulationOptions: Sendable {
    public var nodeCount = 3
    /// Ticks with faults injected, then faults stop.
    public var faultTicks = 300
    /// Once faults stop, a leader must commit a new entry within this many ticks (liveness).
    public var settleTicksMax = 400
    /// Ticks after liveness is shown, letting client operations finish.
    public var drainTicks = 40
    public var electionTicks = 10
    public var heartbeatTicks = 2
    public var dropsAndDelays = true
    public var partitions = true
    public var crashes = true
    public var snapshots = true
    public var membershipChanges = true
    /// A node's disk is replaced (empty, new incarnation) and it is re-added as a new member.
    public var diskReplacements = true
    public var transfers = true
    /// Concurrent client processes (each with at most one operation outstanding).
    public var clients = 4
    public var keys = ["a", "b", "c"]
    /// Check the client history for linearizability at the end.
    public var checkLinearizability = true
    /// Draw byte and in-flight limits per seed (small ones exercise batching and back-pressure).
    public var randomLimits = true

    public init(nodeCount: Int = 3) { self.nodeCount = nodeCount }

    /// No faults, no membership changes, no client: for benchmarks of the core.
    public static func faultFree(nodeCount: Int) -> SimulationOptions {
        var options = SimulationOptions(nodeCount: nodeCount)
        options.dropsAndDelays = false
        options.partitions = false
        options.crashes = false
        options.snapshots = false
        options.membershipChanges = false
        options.diskReplacements = false
        options.transfers = false
        options.clients = 0
        options.randomLimits = false
        return options
    }
}

/// A broken invariant, with the seed that replays it.
public struct SimulationViolation: Error, CustomStringConvertible, Sendable {
    public var seed: UInt64
    public var tick: Int
    public var message: String
    public var description: String { "seed=\(seed) tick=\(tick): \(message)" }
}

/// What a run did, to show the faults and features were exercised.
public struct SimulationReport: Sendable, CustomStringConvertible {
    public var seed: UInt64 = 0
    public var ticks = 0
    public var leadersElected = 0
    public var entriesCommitted = 0
    public var writesAcknowledged = 0
    public var writesFailed = 0
    public var readsAcknowledged = 0
    public var snapshotsTaken = 0
    public var snapshotsInstalled = 0
    public var configChangesApplied = 0
    public var transfersStarted = 0
    public var crashes = 0
    public var disksReplaced = 0
    public var messagesDelivered = 0
    public var messagesDropped = 0
    public var operationsChecked = 0
    public var ticksToLiveness = 0

    public init() {}

    public var description: String {
        "seed=\(seed) ticks=\(ticks) leaders=\(leadersElected) committed=\(entriesCommitted) "
            + "writes=\(writesAcknowledged)/failed=\(writesFailed) reads=\(readsAcknowledged) "
            + "snapshots=\(snapshotsTaken)/installed=\(snapshotsInstalled) confChanges=\(configChangesApplied) "
            + "transfers=\(transfersStarted) crashes=\(crashes) disksReplaced=\(disksReplaced) delivered=\(messagesDelivered) "
            + "dropped=\(messagesDropped) linearizabilityOps=\(operationsChecked) liveness=\(ticksToLiveness)t"
    }
}
