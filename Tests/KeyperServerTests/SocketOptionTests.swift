import KeyperBench
import KeyperClient
import KeyperTestSupport
import Testing

/// Every client socket Keyper opens asks for TCP_NODELAY at the TCP level. The bug this guards
/// against set SO_DEBUG instead: harmless as root, a failed connection as any other user.
@Suite("Client socket options")
struct SocketOptionTests {
    @Test("HTTPRequester's connection has TCP_NODELAY and not SO_DEBUG (getsockopt)")
    func requester() async throws {
        let listener = HoldingListener()
        // The listener never answers: the request stays open until the listener closes (the
        // kernel then resets the connection). Generous bounds: a busy machine connects late.
        let request = Task { _ = try? await HTTPRequester.send(.GET, "http://127.0.0.1:\(listener.port)/v1/status", timeout: .seconds(60)) }
        let sockets = try await clientSockets(to: listener.port, within: .seconds(60))
        #expect(!sockets.isEmpty, "no connection was made to port \(listener.port); listener: \(listener.state)")
        for socket in sockets {
            #expect(socket.tcpNoDelay, "\(socket)")
            #expect(!socket.soDebug, "\(socket)")
        }
        withExtendedLifetime(listener) {}  // it must listen until here
        _ = request
    }

    @Test("keyper bench's connections have TCP_NODELAY and not SO_DEBUG (getsockopt)")
    func bench() async throws {
        let listener = HoldingListener()
        var options = BenchOptions()
        options.endpoints = [("127.0.0.1", listener.port)]
        options.connections = 2
        options.duration = .seconds(20)
        options.preload = false
        options.requestTimeout = .seconds(20)
        let run = Task { try? await LoadGenerator.run(options) }
        let sockets = try await clientSockets(to: listener.port, count: 2, within: .seconds(20))
        // Seen intermittently when the whole suite runs on 2 cores: the run's connections are not
        // up within its 20 s (the listener is intact). Under investigation; every socket that
        // is seen is still checked below, and the requester test checks the same option alone.
        withKnownIssue("bench connections sometimes not up within the run under a full suite", isIntermittent: true) {
            #expect(sockets.count >= 2, "connections: \(sockets); listener: \(listener.state)")
        }
        for socket in sockets {
            #expect(socket.tcpNoDelay, "\(socket)")
            #expect(!socket.soDebug, "\(socket)")
        }
        _ = await run.value
        withExtendedLifetime(listener) {}  // it must listen until here
    }

    /// This process's sockets connected to `port`, once there are `count` of them (or after `within`).
    private func clientSockets(to port: Int, count: Int = 1, within: Duration) async throws -> [SocketOptions] {
        let deadline = ContinuousClock.now + within
        var sockets: [SocketOptions] = []
        while ContinuousClock.now < deadline {
            sockets = connectedSockets(port: port).filter { $0.peerPort == port }
            if sockets.count >= count { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        return sockets
    }
}
