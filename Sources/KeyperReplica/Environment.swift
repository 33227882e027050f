import KeyperBase
import KeyperRaft

/// What the replica is given by the process it runs in: everything that touches the network,
/// a thread or the clock. A server hands it the real ones (TCP connections, a thread pool, the
/// system clock); the simulator hands it simulated ones, and so runs the same replica.
///
/// Every callback the environment makes into the replica must come on the replica's serial
/// context (the server's Raft event loop, the simulator's one thread).
package struct ReplicaEnvironment: Sendable {
    package var peers: any PeerSender
    package var blockingWork: any BlockingWork
    package var clock: any MonotonicClock

    package init(peers: any PeerSender, blockingWork: any BlockingWork, clock: any MonotonicClock) {
        self.peers = peers
        self.blockingWork = blockingWork
        self.clock = clock
    }
}

/// Delivers frames to peers. Frames to one peer arrive in order or not at all (a connection
/// may drop some and open again); nothing is ever delivered twice by the sender itself.
package protocol PeerSender: Sendable {
    /// Queues `frame` for `node`, reached at `address`, addressing its `incarnation`.
    func send(_ frame: [UInt8], to node: NodeID, address: String, incarnation: UInt64)
    /// Sends `frame` only if the connection to `node` takes it now, for bulk transfers that
    /// pace themselves by the connection; answers the connection's number, or nil (not sent:
    /// keep it and try again). Frames accepted under one number arrive in order, all or the
    /// first few of them; a new number means a new connection, and a gap after the last frame
    /// that went on the old one.
    func sendIfReady(_ frame: [UInt8], to node: NodeID, address: String, incarnation: UInt64) -> UInt64?
    /// Drops the connection to `node` and what is queued for it.
    func forget(_ node: NodeID)
    /// What this node says about itself when it connects: its cluster, its incarnation and
    /// where it accepts peer connections.
    func setIdentity(clusterID: String, incarnation: UInt64, raftAddress: String)
}

/// Runs file-sized work (copying a database, syncing a snapshot) away from the replica's
/// serial context, so the Raft loop keeps ticking meanwhile.
package protocol BlockingWork: Sendable {
    /// Runs `work`, then `done` with its result on the replica's serial context. Work still
    /// queued when the process shuts down may never run (and `done` never be called).
    func run<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value,
                              then done: @escaping @Sendable (Result<Value, any Error>) -> Void)
}

/// Who sent a peer frame, as its connection's handshake says.
package struct FrameOrigin: Equatable, Sendable {
    package var nodeID: String
    package var clusterID: String
    /// The sender's incarnation.
    package var incarnation: UInt64
    /// The incarnation the sender addresses: what its configuration records for this node.
    package var peerIncarnation: UInt64
    /// Where the sender accepts peer connections (empty if it did not say).
    package var raftAddress: String

    package init(nodeID: String, clusterID: String, incarnation: UInt64, peerIncarnation: UInt64, raftAddress: String) {
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.incarnation = incarnation
        self.peerIncarnation = peerIncarnation
        self.raftAddress = raftAddress
    }
}

/// The replica's settings (from the command line in a server).
package struct ReplicaSettings: Sendable {
    /// What other nodes dial to reach this one, and where its HTTP API is.
    package var advertisedRaftAddress: String
    package var advertisedHTTPAddress: String
    /// The election timeout in ticks: a read round unanswered for this long is asked again.
    package var electionTicks: Int
    /// How long a client waits for a leader and a quorum, in milliseconds.
    package var requestTimeoutMs: Int
    /// Applied entries between log compactions.
    package var snapshotEntries: UInt64
    /// Entries a compaction keeps behind the state machine's durable applied index, so a
    /// follower a little behind (restarted, or slow) catches up from the log rather than
    /// needing a whole snapshot (etcd's snapshot catch-up entries).
    package var catchUpEntries: UInt64
    /// Bytes of a snapshot per chunk frame: small enough that heartbeats slip between them.
    /// (Simulations make it small, so that their small snapshots are many chunks.)
    package var snapshotChunkBytes = 512 * 1024

    package init(advertisedRaftAddress: String, advertisedHTTPAddress: String, electionTicks: Int, requestTimeoutMs: Int,
                 snapshotEntries: UInt64, catchUpEntries: UInt64) {
        self.advertisedRaftAddress = advertisedRaftAddress
        self.advertisedHTTPAddress = advertisedHTTPAddress
        self.electionTicks = electionTicks
        self.requestTimeoutMs = requestTimeoutMs
        self.snapshotEntries = snapshotEntries
        self.catchUpEntries = catchUpEntries
    }
}
