import Logging
import NIOCore
import NIOPosix
import Synchronization
import KeyperTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif
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

@Suite("Bulk frames paced by the connection")
struct PeerTransportBulkTests {
    @Test("under back-pressure sendIfReady keeps what the connection cannot take: every frame it accepts arrives, in order")
    func backPressure() async throws {
        // A receiver slower than the sender: its socket buffers fill, then the sender's.
        let inboxB = Inbox()
        let b = PeerTransport(configuration: .init(nodeID: "b", host: "127.0.0.1", port: 0), logger: Logger(label: "test.b")) {
            from, frame in
            usleep(300)
            inboxB.receive(from, frame)
        }
        let portB = try await b.start()
        var configuration = PeerTransport.Configuration(nodeID: "a", host: "127.0.0.1", port: 0)
        configuration.sendBufferBytesMax = 64 * 1024
        let a = PeerTransport(configuration: configuration, logger: Logger(label: "test.a"), receiver: { _, _ in })
        let address = "127.0.0.1:\(portB)"

        // 600 frames of 64 KiB (39 MB): far more than loopback socket buffers hold.
        let count = 600
        var numbers: Set<UInt64> = []
        var busy = 0
        for i in 0..<count {
            var frame = [UInt8](repeating: UInt8(i & 0xFF), count: 64 * 1024)
            frame[0] = UInt8(i & 0xFF)
            frame[1] = UInt8(i >> 8)
            while true {
                // Small frames beside them, as heartbeats would be: these may be dropped.
                a.send(ByteBuffer(bytes: [0xFF]), to: "b", address: address)
                if let number = a.sendIfReady(ByteBuffer(bytes: frame), to: "b", address: address) {
                    numbers.insert(number)
                    break
                }
                busy += 1
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        #expect(try await inboxB.wait(timeout: .seconds(60)) {
            inboxB.frames.withLock { $0.filter { $0.payload.count > 1 }.count } == count
        })
        let bulk = inboxB.frames.withLock { $0.filter { $0.payload.count > 1 } }
        #expect(bulk.map { Int($0.payload[0]) | Int($0.payload[1]) << 8 } == Array(0..<count))
        #expect(numbers.count == 1, "one connection carried them all")
        #expect(busy > 0, "the connection pushed back (39 MB cannot fit in loopback buffers)")
        await a.stop()
        await b.stop()
    }

    @Test("a connection made anew answers with another number; while it is being made, nothing is taken")
    func newConnectionNewNumber() async throws {
        let inboxB = Inbox()
        let a = makeTransport("a", inbox: Inbox())
        let b = makeTransport("b", inbox: inboxB)
        let address = "127.0.0.1:\(try await b.start())"
        #expect(a.sendIfReady(ByteBuffer(bytes: [1, 1]), to: "b", address: address) == nil, "no connection yet: this starts one")
        let first = try await sendEventually(ByteBuffer(bytes: [2, 2]), from: a, to: address)
        // A new identity re-opens every connection.
        a.setIdentity(.init(clusterID: "c", incarnation: 7))
        let second = try await sendEventually(ByteBuffer(bytes: [3, 3]), from: a, to: address)
        #expect(first != nil && second != nil)
        #expect(first != second)
        #expect(try await inboxB.wait { inboxB.count == 2 })
        #expect(inboxB.frames.withLock { $0.map(\.payload) } == [[2, 2], [3, 3]], "a frame not taken is not sent later")
        await a.stop()
        await b.stop()
    }
}

/// Offers `frame` to b until the connection takes it; the connection's number, or nil after 20 s.
private func sendEventually(_ frame: ByteBuffer, from a: PeerTransport, to address: String) async throws -> UInt64? {
    let deadline = ContinuousClock.now + .seconds(20)
    while ContinuousClock.now < deadline {
        if let number = a.sendIfReady(frame, to: "b", address: address) { return number }
        try await Task.sleep(for: .milliseconds(10))
    }
    return nil
}

@Suite("A receiver's backlog bounds what peers have in flight to it")
struct PeerTransportInboundTests {
    @Test("past inboundBytesMax unprocessed, the connection stops being read and the sender is pushed back; processing resumes it, nothing lost")
    func inboundBacklog() async throws {
        let inboxB = Inbox()
        var configurationB = PeerTransport.Configuration(nodeID: "b", host: "127.0.0.1", port: 0)
        configurationB.inboundBytesMax = 1 << 20
        let b = PeerTransport(configuration: configurationB, logger: Logger(label: "test.b"), receiver: inboxB.receive)
        let address = "127.0.0.1:\(try await b.start())"
        var configurationA = PeerTransport.Configuration(nodeID: "a", host: "127.0.0.1", port: 0)
        configurationA.sendBufferBytesMax = 256 * 1024
        let a = PeerTransport(configuration: configurationA, logger: Logger(label: "test.a"), receiver: { _, _ in })

        // b processes nothing: a can get out its 1 MiB, plus what the socket buffers and a's
        // own buffer hold, and then no more.
        let frameBytes = 64 * 1024
        var sent = 0
        var refusedInARow = 0
        while refusedInARow < 200 && sent < 4_000 {
            if a.sendIfReady(ByteBuffer(bytes: [UInt8](repeating: UInt8(sent & 0xFF), count: frameBytes)), to: "b", address: address) != nil {
                sent += 1
                refusedInARow = 0
            } else {
                refusedInARow += 1
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        #expect(sent < 4_000, "the sender was pushed back (250 MB would not fit in any buffer)")
        #expect(b.pausedConnections == 1)
        let heldAtPause = inboxB.count
        #expect(heldAtPause * frameBytes < 4 << 20, "b stopped reading soon after its bound, not after everything")

        // b processes what it holds: reading resumes, and every frame a sent arrives in order.
        let total = sent
        let processed = Mutex(0)
        let arrived = try await inboxB.wait(timeout: .seconds(60)) {
            let count = inboxB.count
            let newly = processed.withLock { processed in
                defer { processed = max(processed, count) }
                return count - processed
            }
            if newly > 0 { b.consumed(bytes: newly * frameBytes) }
            return count == total
        }
        #expect(arrived)
        #expect(inboxB.frames.withLock { $0.map { Int($0.payload[0]) } } == (0..<sent).map { $0 & 0xFF })
        await a.stop()
        await b.stop()
    }
}
