import Logging
import NIOCore
import NIOPosix
import Synchronization
import KeyperTestSupport
import Testing
@testable import KeyperTransport

/// Collects what a transport received, and lets a test wait for a condition with a deadline.
final class Inbox: Sendable {
    let frames = Mutex<[(from: String, payload: [UInt8])]>([])

    func receive(_ from: Handshake, _ frame: ByteBuffer) {
        frames.withLock { $0.append((from.nodeID, Array(buffer: frame))) }
    }

    var count: Int { frames.withLock { $0.count } }

    /// Polls `condition` until it holds or `timeout` passes; never assumes the machine is fast.
    func wait(timeout: Duration = .seconds(20), until condition: @Sendable () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }
}

func makeTransport(_ id: String, port: Int = 0, inbox: Inbox) -> PeerTransport {
    var configuration = PeerTransport.Configuration(nodeID: id, host: "127.0.0.1", port: port)
    configuration.reconnectDelayMsMin = 10
    configuration.reconnectDelayMsMax = 100
    return PeerTransport(configuration: configuration, logger: Logger(label: "test.\(id)"), receiver: inbox.receive)
}

@Suite("Peer transport over loopback TCP")
struct PeerTransportTests {
    @Test("frames arrive in order, tagged with the sender's handshake id")
    func delivery() async throws {
        let inboxA = Inbox(), inboxB = Inbox()
        let a = makeTransport("a", inbox: inboxA)
        let b = makeTransport("b", inbox: inboxB)
        try await a.start()
        let portB = try await b.start()
        // Frames sent while connecting are bounded (oldest dropped), so connect first.
        a.send(ByteBuffer(bytes: [0, 0]), to: "b", address: "127.0.0.1:\(portB)")
        #expect(try await inboxB.wait { inboxB.count == 1 })
        inboxB.frames.withLock { $0.removeAll() }
        for i in 0..<500 {
            a.send(ByteBuffer(bytes: [UInt8(i & 0xFF), UInt8(i >> 8)]), to: "b", address: "127.0.0.1:\(portB)")
        }
        #expect(try await inboxB.wait { inboxB.count == 500 })
        let received = inboxB.frames.withLock { $0 }
        #expect(received.allSatisfy { $0.from == "a" })
        #expect(received.map { Int($0.payload[0]) | Int($0.payload[1]) << 8 } == Array(0..<500))
        await a.stop()
        await b.stop()
    }

    @Test("a peer that goes away is retried with back-off, sends never block, and frames flow to it once it is back")
    func reconnect() async throws {
        let inboxA = Inbox(), inboxB = Inbox()
        let a = makeTransport("a", inbox: inboxA)
        var b = makeTransport("b", inbox: inboxB)
        let portB = try await b.start()
        a.send(ByteBuffer(bytes: [1]), to: "b", address: "127.0.0.1:\(portB)")
        #expect(try await inboxB.wait { inboxB.count == 1 })
        await b.stop()

        // While b is down, sends queue (bounded) or drop; none of them may block or crash.
        for _ in 0..<1_000 { a.send(ByteBuffer(bytes: [2]), to: "b", address: "127.0.0.1:\(portB)") }

        // b comes back (at a new address here: rebinding the old port can race with the
        // rest of a parallel test run); a reaches it and frames flow again.
        let inboxB2 = Inbox()
        b = makeTransport("b", inbox: inboxB2)
        let newPortB = try await b.start()
        let b2 = b
        // Keep sending, as Raft would (heartbeats), until one arrives on the new listener.
        let arrived = try await inboxB2.wait {
            a.send(ByteBuffer(bytes: [3]), to: "b", address: "127.0.0.1:\(newPortB)")
            return inboxB2.count > 0
        }
        #expect(arrived)
        #expect(a.statistics.framesDropped > 0 || a.statistics.framesSent > 1)
        await a.stop()
        await b2.stop()
    }

    @Test("garbage, a bad handshake and an oversized frame close only that connection")
    func badPeers() async throws {
        let inbox = Inbox()
        let b = makeTransport("b", inbox: inbox)
        let port = try await b.start()

        var oversized = ByteBuffer()
        oversized.writeFrame(Handshake(nodeID: "x").encoded())
        oversized.writeInteger(UInt32(1 << 30), endianness: .little)
        var selfClaim = ByteBuffer()
        selfClaim.writeFrame(Handshake(nodeID: "b").encoded())
        selfClaim.writeFrame([1, 2, 3])
        let attacks = [ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), oversized, selfClaim]
        for attack in attacks {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { $0.eventLoop.makeSucceededVoidFuture() }
                .connect(host: "127.0.0.1", port: port).get()
            try await channel.writeAndFlush(attack)
            // The node closes the connection on its side.
            try await channel.closeFuture.get()
        }
        #expect(b.statistics.connectionsRefused == 3)
        #expect(inbox.count == 0, "nothing from a refused connection may be delivered")

        // The transport still serves well-behaved peers.
        let a = makeTransport("a", inbox: Inbox())
        a.send(ByteBuffer(bytes: [9]), to: "b", address: "127.0.0.1:\(port)")
        #expect(try await inbox.wait { inbox.count == 1 })
        await a.stop()
        await b.stop()
    }
}

@Suite("Peer transport socket options")
struct PeerSocketOptionTests {
    @Test("both ends of a peer connection have TCP_NODELAY and not SO_DEBUG, read back with getsockopt")
    func socketOptions() async throws {
        let inboxA = Inbox(), inboxB = Inbox()
        let a = makeTransport("a", inbox: inboxA)
        let b = makeTransport("b", inbox: inboxB)
        try await a.start()
        let portB = try await b.start()
        a.send(ByteBuffer(bytes: [1]), to: "b", address: "127.0.0.1:\(portB)")
        #expect(try await inboxB.wait { inboxB.count == 1 }, "no connection: a socket option may have failed")
        let sockets = connectedSockets(port: portB)
        #expect(sockets.contains { $0.peerPort == portB }, "the outbound end: \(sockets)")
        #expect(sockets.contains { $0.localPort == portB }, "the accepted end: \(sockets)")
        for socket in sockets {
            #expect(socket.tcpNoDelay, "\(socket)")
            #expect(!socket.soDebug, "\(socket)")
        }
        await a.stop()
        await b.stop()
    }
}
