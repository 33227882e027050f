import DequeModule
import KeyperBase
import NIOCore
import NIOPosix
import Synchronization

/// This node's connection to one peer: made on first send, re-made with exponential back-off
/// (plus jitter, so a restarted cluster does not reconnect in lock-step) after it fails.
final class OutboundPeer: Sendable {
    let peer: String
    let address: String
    /// The peer's incarnation as this node's configuration records it, sent in the handshake.
    let incarnation: UInt64
    private let transport: PeerTransport
    private let state: Mutex<State>

    private enum Connection {
        case idle
        case connecting
        /// Up, with the transport-wide number it was given when made.
        case connected(any Channel, number: UInt64)
        /// Failed; a retry is scheduled.
        case waiting
    }

    private struct State {
        var connection = Connection.idle
        /// Frames waiting for the connection. Bounded: the oldest goes first, since Raft will
        /// have sent something newer anyway.
        var pending = Deque<ByteBuffer>()
        var pendingBytes = 0
        var delayMs: Int64 = 0
        var closed = false
    }

    init(peer: String, address: String, incarnation: UInt64, transport: PeerTransport) {
        self.peer = peer
        self.address = address
        self.incarnation = incarnation
        self.transport = transport
        self.state = Mutex(State())
    }

    func send(_ frame: ByteBuffer) {
        enum Action { case write(any Channel), connect, none }
        let pendingMax = transport.configuration.pendingFramesMax
        let pendingBytesMax = transport.configuration.pendingBytesMax
        var dropped = 0
        let action = state.withLock { state -> Action in
            guard !state.closed else { return .none }
            switch state.connection {
            case .connected(let channel, _):
                return .write(channel)
            case .idle, .connecting, .waiting:
                state.pending.append(frame)
                state.pendingBytes += frame.readableBytes
                while state.pending.count > pendingMax || (state.pendingBytes > pendingBytesMax && state.pending.count > 1) {
                    state.pendingBytes -= state.pending.removeFirst().readableBytes
                    dropped += 1
                }
                guard case .idle = state.connection else { return .none }
                state.connection = .connecting
                return .connect
            }
        }
        if dropped > 0 { transport.count { $0.framesDropped += dropped } }
        switch action {
        case .write(let channel): write([frame], to: channel)
        case .connect: connect()
        case .none: break
        }
    }

    /// Writes `frame` if the connection is up and below its high-water mark, and answers the
    /// connection's number; otherwise answers nil and keeps nothing (an idle connection starts
    /// being made). One check decides: a frame accepted is written, never dropped for
    /// back-pressure afterwards.
    func sendIfReady(_ frame: ByteBuffer) -> UInt64? {
        enum Action { case write(any Channel, UInt64), connect, none }
        let action = state.withLock { state -> Action in
            guard !state.closed else { return .none }
            switch state.connection {
            case .connected(let channel, let number):
                return channel.isWritable ? .write(channel, number) : .none
            case .idle:
                state.connection = .connecting
                return .connect
            case .connecting, .waiting:
                return .none
            }
        }
        switch action {
        case .write(let channel, let number):
            write([frame], to: channel, evenIfFull: true)
            return number
        case .connect:
            connect()
            return nil
        case .none:
            return nil
        }
    }

    func close() {
        let channel = state.withLock { state -> (any Channel)? in
            state.closed = true
            state.pending.removeAll()
            state.pendingBytes = 0
            if case .connected(let channel, _) = state.connection { return channel }
            return nil
        }
        channel?.close(promise: nil)
    }

    private func write(_ frames: [ByteBuffer], to channel: any Channel, evenIfFull: Bool = false) {
        // Back-pressure: a peer that reads slower than we send fills the socket buffer up to the
        // high-water mark; past it, frames are dropped rather than buffered without limit.
        guard evenIfFull || channel.isWritable else {
            transport.count { $0.framesDropped += frames.count }
            return
        }
        var out = channel.allocator.buffer(capacity: frames.reduce(0) { $0 + 4 + $1.readableBytes })
        for frame in frames {
            out.writeInteger(UInt32(frame.readableBytes), endianness: .little)
            out.writeImmutableBuffer(frame)
        }
        channel.writeAndFlush(out, promise: nil)
        transport.count { $0.framesSent += frames.count }
    }

    private func connect() {
        guard let target = HostPort(parsing: address) else {
            transport.logger.error("invalid peer address", metadata: ["peer": "\(peer)", "address": "\(address)"])
            failed()
            return
        }
        let configuration = transport.configuration
        let local = transport.identity
        let handshake = Handshake(nodeID: configuration.nodeID, clusterID: local.clusterID, incarnation: local.incarnation,
                                  peerIncarnation: incarnation, raftAddress: local.raftAddress).encoded()
        ClientBootstrap(group: transport.group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark,
                           value: .init(low: configuration.sendBufferBytesMax / 2, high: configuration.sendBufferBytesMax))
            .connectTimeout(.milliseconds(configuration.connectTimeoutMs))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DiscardInboundHandler())
                }
            }
            .connect(host: target.host, port: target.port)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel): connected(channel, handshake: handshake)
                case .failure: failed()
                }
            }
    }

    private func connected(_ channel: any Channel, handshake: [UInt8]) {
        let frames = state.withLock { state -> [ByteBuffer]? in
            guard !state.closed else { return nil }
            state.connection = .connected(channel, number: transport.nextConnectionNumber())
            state.delayMs = 0
            defer {
                state.pending.removeAll()
                state.pendingBytes = 0
            }
            return Array(state.pending)
        }
        guard let frames else {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [self] _ in disconnected(channel) }
        write([ByteBuffer(bytes: handshake)] + frames, to: channel)
    }

    private func disconnected(_ channel: any Channel) {
        let reconnect = state.withLock { state -> Bool in
            guard case .connected(let current, _) = state.connection, current === channel else { return false }
            state.connection = .idle
            guard !state.closed, !state.pending.isEmpty else { return false }
            state.connection = .connecting
            return true
        }
        if reconnect { connect() }
    }

    private func failed() {
        let configuration = transport.configuration
        let delay = state.withLock { state -> Int64? in
            guard !state.closed else { return nil }
            state.connection = .waiting
            state.delayMs = min(max(state.delayMs * 2, configuration.reconnectDelayMsMin), configuration.reconnectDelayMsMax)
            return state.delayMs + Int64.random(in: 0...(state.delayMs / 2))
        }
        guard let delay else { return }
        transport.group.next().scheduleTask(in: .milliseconds(delay)) { [self] in retry() }
    }

    private func retry() {
        let connect = state.withLock { state -> Bool in
            guard !state.closed, case .waiting = state.connection else { return false }
            // Nothing to say: connect lazily on the next send.
            guard !state.pending.isEmpty else {
                state.connection = .idle
                return false
            }
            state.connection = .connecting
            return true
        }
        if connect { self.connect() }
    }
}

/// The peer never writes on the connection we opened to it; anything it sends is ignored.
final class DiscardInboundHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

