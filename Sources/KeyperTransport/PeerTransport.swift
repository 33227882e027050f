import Logging
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix
import Synchronization

/// Raft peer traffic over TCP: one long-lived outbound connection per peer (this node's
/// messages to it) and the peer's own connection inbound (its messages to us).
///
/// Frames are opaque here; the runtime batches many Raft messages into each. Sending never
/// blocks and never grows memory without bound: a frame that cannot be queued is dropped and
/// counted, which Raft tolerates (it retransmits what was lost). Everything runs on SwiftNIO
/// channel handlers, so a received frame costs no async hop until the runtime takes it.
public final class PeerTransport: Sendable {
    public struct Configuration: Sendable {
        public var nodeID: String
        public var host: String
        public var port: Int
        /// Frames queued for a peer while its connection is being made; the oldest is dropped
        /// beyond either bound. Raft resends what matters, so a peer that is down costs little.
        public var pendingFramesMax = 64
        public var pendingBytesMax = 8 * 1024 * 1024
        /// Bytes in a connection's send buffer beyond which frames are dropped (back-pressure).
        public var sendBufferBytesMax = 8 * 1024 * 1024
        public var reconnectDelayMsMin: Int64 = 50
        public var reconnectDelayMsMax: Int64 = 2_000
        public var connectTimeoutMs: Int64 = 1_000
        /// Bytes of received frames the receiver may hold unprocessed, when it reports what it
        /// processed (``consumed(bytes:)``); past it, the connection that brought the last frame
        /// stops being read until the backlog is half gone, and TCP pushes back on its sender.
        /// Nil: no bound (a receiver that never reports).
        public var inboundBytesMax: Int?

        public init(nodeID: String, host: String, port: Int) {
            self.nodeID = nodeID
            self.host = host
            self.port = port
        }
    }

    /// Called on an event loop thread for every frame a peer sent, with the handshake it
    /// opened the connection with (its node id, cluster id and incarnations). Throwing (a frame whose
    /// content does not decode) closes that connection. With ``Configuration/inboundBytesMax``
    /// set, the receiver reports each frame's bytes to ``consumed(bytes:)`` once it has
    /// processed it.
    public typealias Receiver = @Sendable (_ from: Handshake, _ frame: ByteBuffer) throws -> Void

    public let configuration: Configuration
    let group: any EventLoopGroup
    let logger: Logger
    let receiver: Receiver
    private let state = Mutex(State())
    let counters = Mutex(Counters())
    /// Test-only network faults (`--enable-fault-injection`): frames to and from these peers
    /// are dropped, as a partition would.
    public struct Faults: Sendable, Equatable {
        public var dropTo: Set<String> = []
        public var dropFrom: Set<String> = []
        public init(dropTo: Set<String> = [], dropFrom: Set<String> = []) {
            self.dropTo = dropTo
            self.dropFrom = dropFrom
        }
    }
    private let faultsBox = Mutex(Faults())

    public var faults: Faults {
        get { faultsBox.withLock { $0 } }
        set { faultsBox.withLock { $0 = newValue } }
    }

    /// What this node announces in every new connection's handshake.
    public struct LocalIdentity: Sendable, Equatable {
        /// Empty until the node belongs to a cluster; a node learns it when it joins one.
        public var clusterID: String
        /// The incarnation of this node's data directory.
        public var incarnation: UInt64
        /// Where this node accepts peer connections (its advertised `--raft-addr`).
        public var raftAddress: String
        public init(clusterID: String, incarnation: UInt64, raftAddress: String = "") {
            self.clusterID = clusterID
            self.incarnation = incarnation
            self.raftAddress = raftAddress
        }
    }

    private let identityBox = Mutex(LocalIdentity(clusterID: "", incarnation: 0))

    public var identity: LocalIdentity { identityBox.withLock { $0 } }
    public var clusterID: String { identity.clusterID }

    /// Changes what is announced to peers, and re-opens every outbound connection so that
    /// peers hear it.
    public func setIdentity(_ identity: LocalIdentity) {
        let changed = identityBox.withLock { current in
            defer { current = identity }
            return current != identity
        }
        guard changed else { return }
        let peers = state.withLock { state in
            defer { state.peers = [:] }
            return Array(state.peers.values)
        }
        for peer in peers { peer.close() }
    }

    /// Received bytes not yet processed, and the connections paused because of them.
    private struct InboundBacklog {
        var bytes = 0
        var paused: [ObjectIdentifier: any Channel] = [:]
    }

    private let backlog = Mutex(InboundBacklog())

    /// A frame of `bytes` went to the receiver from `channel` (on its event loop): past the
    /// bound, the channel stops reading.
    fileprivate func delivered(bytes: Int, on channel: any Channel) {
        guard let limit = configuration.inboundBytesMax else { return }
        let pause = backlog.withLock { backlog in
            backlog.bytes += bytes
            guard backlog.bytes > limit, backlog.paused[ObjectIdentifier(channel)] == nil else { return false }
            backlog.paused[ObjectIdentifier(channel)] = channel
            return true
        }
        if pause { try? channel.syncOptions?.setOption(.autoRead, value: false) }
    }

    /// The receiver is done with `bytes` of frames it was handed (any thread): once the backlog
    /// is down to half the bound, paused connections are read again.
    public func consumed(bytes: Int) {
        guard let limit = configuration.inboundBytesMax, bytes > 0 else { return }
        let resume = backlog.withLock { backlog -> [any Channel] in
            backlog.bytes -= bytes
            guard backlog.bytes <= limit / 2, !backlog.paused.isEmpty else { return [] }
            defer { backlog.paused = [:] }
            return Array(backlog.paused.values)
        }
        for channel in resume { channel.setOption(.autoRead, value: true).whenFailure { _ in } }
    }

    /// Connections paused for the receiver's backlog (for tests).
    var pausedConnections: Int { backlog.withLock { $0.paused.count } }

    struct State {
        var server: (any Channel)?
        var peers: [String: OutboundPeer] = [:]
        /// Accepted connections, closed on stop like the outbound ones.
        var inbound: [ObjectIdentifier: any Channel] = [:]
        var stopped = false
    }

    /// What the transport has had to give up on, for metrics and tests.
    public struct Counters: Sendable, Equatable {
        public var framesSent = 0
        public var framesDropped = 0
        public var framesReceived = 0
        public var connectionsRefused = 0
    }

    public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger, receiver: @escaping Receiver) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.receiver = receiver
    }

    public var statistics: Counters { counters.withLock { $0 } }

    /// Starts listening; returns the bound port (useful with port 0).
    @discardableResult
    public func start() async throws -> Int {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                let accepted = state.withLock { state in
                    guard !state.stopped else { return false }
                    state.inbound[ObjectIdentifier(channel)] = channel
                    return true
                }
                guard accepted else { return channel.close() }
                channel.closeFuture.whenComplete { [self] _ in
                    state.withLock { _ = $0.inbound.removeValue(forKey: ObjectIdentifier(channel)) }
                    backlog.withLock { _ = $0.paused.removeValue(forKey: ObjectIdentifier(channel)) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(InboundPeerHandler(transport: self))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        let stopped = state.withLock { state in
            state.server = server
            return state.stopped
        }
        if stopped { try? await server.close() }
        return server.localAddress?.port ?? configuration.port
    }

    /// Queues `frame` for `peer` at `address`, connecting (or reconnecting) as needed.
    /// `incarnation` is the peer's as this node knows it (0: none known); a connection made
    /// for another address or incarnation is replaced. Never blocks; drops (and counts) when
    /// the peer's queue is full.
    public func send(_ frame: ByteBuffer, to peer: String, address: String, incarnation: UInt64 = 0) {
        if faultsBox.withLock({ $0.dropTo.contains(peer) }) { return count { $0.framesDropped += 1 } }
        outbound(to: peer, address: address, incarnation: incarnation)?.send(frame)
    }

    /// Writes `frame` to `peer`'s connection only if it takes it now: the connection is up and
    /// below its send buffer's high-water mark. Otherwise nothing is kept or dropped: the
    /// caller keeps the frame and tries again later (this starts making the connection if
    /// there is none). Bulk transfers (snapshot chunks) go this way, so back-pressure holds
    /// them with their sender instead of losing one in the middle of a transfer.
    ///
    /// Answers the number of the connection the frame went on, or nil. Frames accepted on one
    /// connection arrive in order, all of them or (if it breaks) the first few; a connection
    /// made anew has another number, so a sender that sees the number change knows its
    /// stream has a gap and starts it again.
    public func sendIfReady(_ frame: ByteBuffer, to peer: String, address: String, incarnation: UInt64 = 0) -> UInt64? {
        // A partition, as tests inject it: no connection can be made.
        if faultsBox.withLock({ $0.dropTo.contains(peer) }) { return nil }
        return outbound(to: peer, address: address, incarnation: incarnation)?.sendIfReady(frame)
    }

    /// The connection to `peer` at `address`, addressing `incarnation`: the one there is, or a new one
    /// replacing one made for another address or incarnation. Nil once stopped.
    private func outbound(to peer: String, address: String, incarnation: UInt64) -> OutboundPeer? {
        state.withLock { state -> OutboundPeer? in
            guard !state.stopped else { return nil }
            if let existing = state.peers[peer], existing.address == address, existing.incarnation == incarnation { return existing }
            state.peers[peer]?.close()
            let created = OutboundPeer(peer: peer, address: address, incarnation: incarnation, transport: self)
            state.peers[peer] = created
            return created
        }
    }

    private let connectionsMade = Atomic<UInt64>(0)

    /// A number no other connection of this transport has had.
    func nextConnectionNumber() -> UInt64 {
        connectionsMade.add(1, ordering: .relaxed).newValue
    }

    /// Closes the connection to a peer that left the cluster.
    public func forget(_ peer: String) {
        state.withLock { $0.peers.removeValue(forKey: peer) }?.close()
    }

    /// Closes the listener and every connection.
    public func stop() async {
        let (server, peers, inbound) = state.withLock { state in
            state.stopped = true
            defer { state.peers = [:]; state.server = nil; state.inbound = [:] }
            return (state.server, Array(state.peers.values), Array(state.inbound.values))
        }
        for peer in peers { peer.close() }
        for channel in inbound {
            // Reset rather than close gracefully: an actively closed connection would sit in
            // TIME_WAIT on our listening port and stop a restarted node from binding it.
            try? await (channel as? any SocketOptionProvider)?.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
            try? await channel.close()
        }
        try? await server?.close()
    }

    func count(_ update: (inout Counters) -> Void) {
        counters.withLock { update(&$0) }
    }
}

/// Validates the caller's handshake, then hands every frame to the transport's receiver.
/// Anything malformed closes this connection only; the node keeps serving.
final class InboundPeerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let transport: PeerTransport
    private var peer: Handshake?
    /// Set once the connection is being closed: frames already decoded behind the bad one
    /// must not be delivered or counted again.
    private var refused = false

    init(transport: PeerTransport) {
        self.transport = transport
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let frame = unwrapInboundIn(data)
        guard let peer else {
            do {
                let handshake = try Handshake.decode(frame)
                // Whether a peer of another cluster may talk to us is the runtime's call (a node
                // being adopted into a cluster hears from it before it belongs to it).
                let local = transport.configuration.nodeID
                guard handshake.nodeID != local else { throw TransportError("peer claims to be this node (\(local))") }
                self.peer = handshake
            } catch {
                refuse(context: context, reason: "\(error)")
            }
            return
        }
        if transport.faults.dropFrom.contains(peer.nodeID) { return }
        transport.count { $0.framesReceived += 1 }
        do {
            try transport.receiver(peer, frame)
        } catch {
            refuse(context: context, reason: "undecodable frame: \(error)")
            return
        }
        transport.delivered(bytes: frame.readableBytes, on: context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        refuse(context: context, reason: "\(error)")
    }

    private func refuse(context: ChannelHandlerContext, reason: String) {
        guard !refused else { return }
        refused = true
        transport.count { $0.connectionsRefused += 1 }
        transport.logger.warning("closing peer connection", metadata: [
            "remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "peer": "\(peer?.nodeID ?? "?")", "reason": "\(reason)",
        ])
        context.close(promise: nil)
    }
}
