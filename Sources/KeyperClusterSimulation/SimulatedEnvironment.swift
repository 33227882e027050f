import KeyperBase
import KeyperRaft
import KeyperReplica
import KeyperStorage
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// How the environment handed to a replica reaches its simulation. The simulation runs on one
/// thread and the replicas call back only from it: `@unchecked Sendable` records that promise.
final class SimulationLink: @unchecked Sendable {
    weak var simulation: ClusterSimulation?
}

/// The simulated clock: the simulation's current time.
struct SimulatedClock: MonotonicClock {
    let link: SimulationLink
    var now: Moment { Moment(nanoseconds: link.simulation?.now ?? 0) }
}

/// A replica's peers: frames go into the simulated network, one FIFO link per pair of nodes.
final class SimulatedPeers: PeerSender, @unchecked Sendable {
    let link: SimulationLink
    let node: Int
    let generation: Int
    /// What the node's connections would announce in their handshakes.
    private(set) var clusterID = ""
    private(set) var incarnation: UInt64 = 0
    private(set) var raftAddress = ""

    init(link: SimulationLink, node: Int, generation: Int) {
        self.link = link
        self.node = node
        self.generation = generation
    }

    func send(_ frame: [UInt8], to node: NodeID, address: String, incarnation: UInt64) {
        link.simulation?.send(frame, from: self, address: address, peerIncarnation: incarnation)
    }

    func sendIfReady(_ frame: [UInt8], to node: NodeID, address: String, incarnation: UInt64) -> UInt64? {
        link.simulation?.sendIfReady(frame, from: self, address: address, peerIncarnation: incarnation)
    }

    func forget(_ node: NodeID) {
        link.simulation?.resetLink(from: self.node, to: node)
    }

    func setIdentity(clusterID: String, incarnation: UInt64, raftAddress: String) {
        self.clusterID = clusterID
        self.incarnation = incarnation
        self.raftAddress = raftAddress
    }
}

/// A replica's blocking work: run later in simulated time, on the simulation's thread, and
/// dropped if the node crashed meanwhile (as a thread pool dies with its process).
struct SimulatedBlockingWork: BlockingWork {
    let link: SimulationLink
    let node: Int
    let generation: Int

    func run<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value,
                              then done: @escaping @Sendable (Result<Value, any Error>) -> Void) {
        link.simulation?.scheduleWork(node: node, generation: generation) {
            done(Result { try work() })
        }
    }
}

/// The simulated disk under a node's Raft log, handed to the replica as its WAL file system.
final class SimulatedDisk: @unchecked Sendable {
    let fileSystem = SimulatedFileSystem()

    /// Creates `path` and its parents on the simulated disk.
    func makeDirectories(_ path: String) {
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            try? fileSystem.createDirectory(prefix)
        }
    }
}

/// Prints a replica's log lines with the simulated time, for `--trace`.
struct SimulationLogHandler: LogHandler {
    let link: SimulationLink
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = all.keys.sorted().map { "\($0)=\(all[$0]!)" }.joined(separator: " ")
        let milliseconds = Double(link.simulation?.now ?? 0) / 1e6
        print("t=\(milliseconds)ms \(event.level) \(event.message) \(fields)")
        fflush(nil)  // a precondition failing next must not take the last lines with it
    }
}
