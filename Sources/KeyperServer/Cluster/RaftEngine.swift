import KeyperBase
import KeyperRaft
import KeyperReplica
import KeyperTransport
import NIOCore
import NIOPosix
import Synchronization

/// The serial context that runs the ``Replica``: one event loop thread of its own.
///
/// Everything reaches it through ``Inbox``: HTTP handlers and the transport append under a
/// lock and schedule at most one run of the loop, so a burst of requests costs one wake-up,
/// not one per request. Each run hands the replica everything gathered; the replica steps it
/// and handles every `Ready` (send what may go early, persist with one fsync, send the rest,
/// apply, answer waiters, advance). The fsync blocks only this thread; requests arriving
/// meanwhile form the next batch.
final class RaftEngine: Sendable {
    struct Inbox {
        var input = ReplicaInput()
        /// Bytes of peer frames in `input`, reported to ``peerBytesProcessed`` once it ran.
        var peerBytes = 0
        var scheduled = false
        /// Set on shutdown: work enqueued later is refused at once instead of never running.
        var closed = false
    }

    let loop: any EventLoop
    private let loopGroup: MultiThreadedEventLoopGroup
    let inbox = Mutex(Inbox())
    let replica: Replica
    /// The clock the replica reads: deadlines of its waiters are moments of it.
    let clock: SystemClock
    /// Request sequence numbers start at a random point on every process start: an entry
    /// proposed before a restart may still be applied after it, and must not resolve a new
    /// request that happens to reuse its number (which would acknowledge an uncommitted write).
    let sequence = Atomic<UInt64>(UInt64.random(in: 0...(UInt64.max >> 1)))

    /// Told how many bytes of peer frames each run processed (the transport reads more once
    /// its backlog is down).
    let peerBytesProcessed: @Sendable (Int) -> Void

    init(replica: Replica, loopGroup: MultiThreadedEventLoopGroup, loop: any EventLoop, clock: SystemClock,
         peerBytesProcessed: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.replica = replica
        self.loopGroup = loopGroup
        self.loop = loop
        self.clock = clock
        self.peerBytesProcessed = peerBytesProcessed
    }

    var published: PublishedBox { replica.published }

    func nextRequestID() -> RequestID {
        RequestID(node: replica.id, sequence: sequence.wrappingAdd(1, ordering: .relaxed).newValue)
    }

    /// Appends to the inbox and makes sure one run of the loop is coming. `peerBytes`: the
    /// size of the peer frame the update carries.
    func enqueue(peerBytes: Int = 0, _ update: (inout ReplicaInput) -> Void) {
        var refused: ReplicaInput?
        let schedule = inbox.withLock { inbox in
            guard !inbox.closed else {
                var scratch = ReplicaInput()
                update(&scratch)
                refused = scratch
                return false
            }
            update(&inbox.input)
            inbox.peerBytes += peerBytes
            guard !inbox.scheduled else { return false }
            inbox.scheduled = true
            return true
        }
        refused?.refuseAll()
        if schedule {
            loop.execute { [self] in
                let (batch, peerBytes) = inbox.withLock { inbox in
                    defer { inbox = Inbox() }
                    return (inbox.input, inbox.peerBytes)
                }
                replica.run(batch)
                peerBytesProcessed(peerBytes)
            }
        }
    }

    private let ticker = Mutex<RepeatedTask?>(nil)

    func start(tick: TimeAmount) {
        loop.execute { [replica] in replica.processReady() }
        let task = loop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { [replica] _ in replica.tick() }
        ticker.withLock { $0 = task }
    }

    /// Refuses new work, answers every waiter, closes the log, then stops the loop thread.
    func shutdown() async {
        let pending = inbox.withLock { inbox in
            inbox.closed = true
            defer { inbox = Inbox(closed: true) }
            return inbox.input
        }
        pending.refuseAll()
        ticker.withLock { $0?.cancel() }
        try? await loop.submit { [replica] in replica.close() }.get()
        try? await loopGroup.shutdownGracefully()
    }
}

/// The replica's peers in a server: the TCP transport.
struct TransportPeers: PeerSender {
    let transport: PeerTransport

    func send(_ frame: [UInt8], to node: NodeID, address: String, incarnation: UInt64) {
        transport.send(ByteBuffer(bytes: frame), to: node.rawValue, address: address, incarnation: incarnation)
    }

    func sendIfReady(_ frame: [UInt8], to node: NodeID, address: String, incarnation: UInt64) -> UInt64? {
        transport.sendIfReady(ByteBuffer(bytes: frame), to: node.rawValue, address: address, incarnation: incarnation)
    }

    func forget(_ node: NodeID) { transport.forget(node.rawValue) }

    func setIdentity(clusterID: String, incarnation: UInt64, raftAddress: String) {
        transport.setIdentity(.init(clusterID: clusterID, incarnation: incarnation, raftAddress: raftAddress))
    }
}

/// The replica's blocking work in a server: NIO's blocking-I/O thread pool, answering on the
/// replica's event loop.
struct ThreadPoolWork: BlockingWork {
    let loop: any EventLoop

    func run<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value,
                              then done: @escaping @Sendable (Result<Value, any Error>) -> Void) {
        NIOThreadPool.singleton.runIfActive(eventLoop: loop, work).whenComplete(done)
    }
}

extension FrameOrigin {
    init(_ handshake: Handshake) {
        self.init(nodeID: handshake.nodeID, clusterID: handshake.clusterID, incarnation: handshake.incarnation,
                  peerIncarnation: handshake.peerIncarnation, raftAddress: handshake.raftAddress)
    }
}
