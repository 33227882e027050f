import KeyperRaft
import KeyperStorage
import KeyperTransport
import KeyperWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The serial context that owns the Raft core: one event loop thread of its own.
///
/// Everything reaches it through ``Inbox``: HTTP handlers and the transport append under a
/// lock and schedule at most one run of the loop, so a burst of requests costs one wake-up,
/// not one per request. Each run steps everything gathered, then handles every `Ready`:
/// send what may go early, persist with one fsync, send the rest, apply, answer waiters,
/// advance. The fsync blocks only this thread; requests arriving meanwhile form the next batch.
final class RaftEngine: Sendable {
    struct Inbox {
        var records: [(from: Handshake, record: PeerRecord)] = []
        var proposals: [PendingProposal] = []
        var reads: [Waiter] = []
        var admin: [AdminRequest] = []
        var scheduled = false
        /// Set on shutdown: work enqueued later is refused at once instead of never running.
        var closed = false

        func refuseAll() {
            for proposal in proposals { proposal.waiter.fail(.shuttingDown()) }
            for waiter in reads { waiter.fail(.shuttingDown()) }
            for request in admin { request.waiter.fail(.shuttingDown()) }
        }
    }

    let id: NodeID
    let loop: any EventLoop
    private let loopGroup: MultiThreadedEventLoopGroup
    let inbox = Mutex(Inbox())
    /// What the HTTP side may read without a hop: updated by the loop after each run.
    let published: PublishedBox
    let core: Core
    /// Request sequence numbers start at a random point on every process start: an entry
    /// proposed before a restart may still be applied after it, and must not resolve a new
    /// request that happens to reuse its number (which would acknowledge an uncommitted write).
    let sequence = Atomic<UInt64>(UInt64.random(in: 0...(UInt64.max >> 1)))

    init(core: Core, loopGroup: MultiThreadedEventLoopGroup, published: PublishedBox) {
        self.id = core.id
        self.core = core
        self.loopGroup = loopGroup
        self.loop = loopGroup.next()
        self.published = published
    }

    func nextRequestID() -> RequestID {
        RequestID(node: id, sequence: sequence.wrappingAdd(1, ordering: .relaxed).newValue)
    }

    /// Appends to the inbox and makes sure one run of the loop is coming.
    func enqueue(_ update: (inout Inbox) -> Void) {
        var refused: Inbox?
        let schedule = inbox.withLock { inbox in
            guard !inbox.closed else {
                var scratch = Inbox()
                update(&scratch)
                refused = scratch
                return false
            }
            update(&inbox)
            guard !inbox.scheduled else { return false }
            inbox.scheduled = true
            return true
        }
        refused?.refuseAll()
        if schedule {
            loop.execute { [self] in
                let batch = inbox.withLock { inbox in
                    defer { inbox = Inbox() }
                    return inbox
                }
                core.run(batch)
            }
        }
    }

    private let ticker = Mutex<RepeatedTask?>(nil)

    func start(tick: TimeAmount) {
        loop.execute { [core] in core.processReady() }
        let task = loop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { [core] _ in core.tick() }
        ticker.withLock { $0 = task }
    }

    /// Refuses new work, answers every waiter, closes the log, then stops the loop thread.
    func shutdown() async {
        let pending = inbox.withLock { inbox in
            inbox.closed = true
            defer { inbox = Inbox(closed: true) }
            return inbox
        }
        pending.refuseAll()
        ticker.withLock { $0?.cancel() }
        try? await loop.submit { [core] in core.close() }.get()
        try? await loopGroup.shutdownGracefully()
    }
}

/// What `GET /v1/status` and the `X-Keyper-Leader` header show, without a hop to the loop.
struct PublishedState: Sendable {
    var status: Status
    var members: [NodeID: MemberAddresses]
    var appliedIndex: LogIndex
    var snapshotIndex: LogIndex
    var clusterID: String
    /// This node's incarnation (its data directory's).
    var incarnation: UInt64
    var diskFull = false
}
