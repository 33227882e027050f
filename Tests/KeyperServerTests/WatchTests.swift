import Foundation
import Glibc
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeyperBase
import KeyperStorage
import KeyperTestSupport
import NIOCore
import Testing
@testable import KeyperServer

/// Opens a watch, waits until the node has it, runs `meanwhile`, ends the node's watchers, and
/// returns what the stream carried.
private func watchStream(_ client: any TestClientProtocol, _ node: StandaloneNode, _ uri: String, headers: HTTPFields = [:],
                         meanwhile: @escaping @Sendable () async throws -> Void = {}) async throws -> String {
    let before = node.changes.watcherCount
    async let stream = client.execute(uri: uri, method: .get, headers: headers) { response in
        #expect(response.status == .ok && response.headers[.contentType] == "text/event-stream")
        return String(buffer: response.body)
    }
    while node.changes.watcherCount == before { try await Task.sleep(for: .milliseconds(5)) }
    try await meanwhile()
    // Every write above was published to the watcher before it returned, and an ended
    // watcher still hands over what it had queued: no wait is needed.
    node.changes.endWatchers()
    return try await stream
}

@Suite("Watch (Server-Sent Events)")
struct WatchTests {
    @Test("a watch streams puts and deletes with their revisions as ids; a revision of several events numbers them")
    func streams() async throws {
        try await withNodeAPI { client, node in
            let text = try await watchStream(client, node, "/v1/watch?prefix=app/") {
                try await node.put(bytes("app/a"), value: bytes("1"))
                try await node.put(bytes("other"), value: bytes("x"))
                try await node.delete(bytes("app/a"))
                _ = try await node.transaction(KVTransaction(success: [.put(key: bytes("app/b"), value: bytes("2")),
                                                                        .put(key: bytes("app/c"), value: [0xFF])]))
            }
            #expect(text.hasPrefix("retry: 1000\n: watching from revision 1\n\n"))
            #expect(text.contains("id: 1\nevent: put\ndata: {\"key\":\"app/a\",\"value\":\"1\",\"create_revision\":1,\"mod_revision\":1,\"version\":1}\n\n"))
            #expect(text.contains("id: 3\nevent: delete\ndata: {\"key\":\"app/a\",\"mod_revision\":3}\n\n"))
            #expect(text.contains("id: 4:0\nevent: put\ndata: {\"key\":\"app/b\""))
            #expect(text.contains("id: 4\nevent: put\ndata: {\"key\":\"app/c\",\"value_base64\":\"/w==\""))
            #expect(!text.contains("other"))
            #expect(text.hasSuffix("event: error\ndata: {\"code\":\"shutting_down\",\"error\":\"the watch was stopped; watch again from the last event id\"}\n\n"))
        }
    }

    @Test("Last-Event-ID resumes right after it, inside a revision too; start_revision replays from there")
    func resumes() async throws {
        try await withNodeAPI { client, node in
            try await node.put(bytes("k"), value: bytes("1"))
            _ = try await node.transaction(KVTransaction(success: [.put(key: bytes("k"), value: bytes("2")), .put(key: bytes("l"), value: bytes("3"))]))
            try await node.put(bytes("k"), value: bytes("4"))
            let ids = { (text: String) in text.split(separator: "\n").filter { $0.hasPrefix("id: ") }.map { String($0.dropFirst(4)) } }
            #expect(ids(try await watchStream(client, node, "/v1/watch?prefix=", headers: [.lastEventID: "1"])) == ["2:0", "2", "3"])
            #expect(ids(try await watchStream(client, node, "/v1/watch?prefix=", headers: [.lastEventID: "2:0"])) == ["2", "3"])
            #expect(ids(try await watchStream(client, node, "/v1/watch?key=k&start_revision=2")) == ["2:0", "3"])
            #expect(ids(try await watchStream(client, node, "/v1/watch?key=k")) == [])
        }
    }

    @Test("a long poll (wait_revision) answers at once when the key changed since, on a change, or at its timeout")
    func longPoll() async throws {
        try await withNodeAPI { client, node in
            try await node.put(bytes("k"), value: bytes("1"))
            try await client.execute(uri: "/v1/keys/k?wait_revision=1", method: .get) { #expect($0.text == "1") }
            // Waits for the write at revision 2.
            let started = ContinuousClock.now
            async let changed = client.execute(uri: "/v1/keys/k?wait_revision=2&timeout=10s", method: .get) { response in
                (response.text, response.headers[.eTag])
            }
            while node.changes.watcherCount == 0 { try await Task.sleep(for: .milliseconds(5)) }
            try await node.put(bytes("k"), value: bytes("2"))
            let (text, etag) = try await changed
            #expect(text == "2" && etag == "\"2\"" && ContinuousClock.now - started < .seconds(5))
            // Nothing happens: the current state at the timeout.
            let quiet = ContinuousClock.now
            try await client.execute(uri: "/v1/keys/k?wait_revision=3&timeout=300ms", method: .get) { #expect($0.text == "2") }
            #expect(ContinuousClock.now - quiet >= .milliseconds(300))
            // A delete is a change too.
            async let deleted = client.execute(uri: "/v1/keys/k?wait_revision=3&timeout=10s", method: .get) { $0.status }
            while node.changes.watcherCount == 0 { try await Task.sleep(for: .milliseconds(5)) }
            try await node.delete(bytes("k"))
            #expect(try await deleted == .notFound)
            for (uri, code) in [("/v1/keys/k?wait_revision=0", "invalid_revision"), ("/v1/keys/k?wait_revision=x", "invalid_revision"),
                                ("/v1/keys/k?wait_revision=1&timeout=10m", "invalid_timeout"), ("/v1/keys/k?wait_revision=1&timeout=-1s", "invalid_timeout")] {
                try await client.execute(uri: uri, method: .get) { #expect($0.status == .badRequest && $0.errorCode == code, "\(uri)") }
            }
            #expect(node.changes.watcherCount == 0)
        }
    }

    @Test("a start older than the history is 410 revision_compacted; bad requests are 400")
    func refusals() async throws {
        try await withNodeAPI(configure: { $0.changeLimits = ChangeFeed.Limits(historyRevisions: 2) }) { client, node in
            for n in 0..<5 { try await node.put(bytes("k\(n)"), value: bytes("v")) }
            try await client.execute(uri: "/v1/watch?prefix=&start_revision=2", method: .get) {
                #expect($0.status == .gone && $0.errorCode == "revision_compacted" && $0.text.contains(#""compact_revision":3"#))
            }
            let bad: [(String, HTTPFields, String)] = [
                ("/v1/watch", [:], "invalid_watch"),
                ("/v1/watch?key=a&prefix=b", [:], "invalid_watch"),
                ("/v1/watch?key=", [:], "invalid_watch"),
                ("/v1/watch?key=a&start_revision=0", [:], "invalid_revision"),
                ("/v1/watch?key=a&start_revision=-1", [:], "invalid_revision"),
                ("/v1/watch?key=a", [.lastEventID: "x"], "invalid_revision"),
                ("/v1/watch?key=a", [.lastEventID: "3:"], "invalid_revision"),
                ("/v1/watch?key=a", [.lastEventID: "18446744073709551615"], "invalid_revision"),
                ("/v1/watch?key=a", [.lastEventID: "1:9223372036854775807"], "invalid_revision"),
            ]
            for (uri, headers, code) in bad {
                try await client.execute(uri: uri, method: .get, headers: headers) {
                    #expect($0.status == .badRequest && $0.errorCode == code, "\(uri) \(headers)")
                }
            }
            #expect(node.changes.watcherCount == 0)
        }
    }
}

/// A blocking TCP connection to 127.0.0.1, for reading a stream as it comes.
private final class RawConnection {
    let fd: Int32

    init(port: Int) throws {
        // CLOEXEC: a process another test spawns meanwhile must not inherit the connection
        // (it would keep it open after this side closes it).
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ProcessTestError("connect failed: errno \(errno)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Reads until `text` has arrived (all read so far is returned), or `timeout` passes.
    func read(until text: String, timeout: Duration) -> String {
        var received: [UInt8] = []
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now < deadline && !String(decoding: received, as: UTF8.self).contains(text) {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 { received += buffer[..<count] } else if count == 0 { break }
        }
        return String(decoding: received, as: UTF8.self)
    }

    func close() { Glibc.close(fd) }
}

@Suite("Watch streams of a real process", .serialized)
struct WatchProcessTests {
    @Test("an idle stream gets progress notices; a client that goes away is dropped; SIGTERM ends open streams and exits")
    func progressAndShutdown() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let process = try KeyperProcess(arguments: ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:0",
                                                        "--watch-progress-interval", "200ms"], logPath: dir + "/node.log")
            try await process.waitUntilListening()
            let watch = try RawConnection(port: process.port)
            watch.send("GET /v1/watch?prefix=cfg/ HTTP/1.1\r\nHost: x\r\n\r\n")
            let opening = watch.read(until: ": progress revision=0", timeout: .seconds(5))
            #expect(opening.contains("text/event-stream") && opening.contains(": progress revision=0"), "\(opening)")
            try await withClient(process) { client in
                let put = try await client.execute(.init("/v1/keys/cfg/a", method: .put, body: ByteBuffer(string: "on")))
                #expect(put.status == .noContent)
            }
            let event = watch.read(until: "\n\n", timeout: .seconds(5))
            #expect(event.contains("id: 1\nevent: put\ndata: {\"key\":\"cfg/a\",\"value\":\"on\""), "\(event)")
            func watchers() async throws -> Int? {
                try await withClient(process) { client in
                    let metrics = try await client.execute(.init("/metrics", method: .get))
                    let text = metrics.body.map { String(buffer: $0) } ?? ""
                    let line = text.split(separator: "\n").first { $0.hasPrefix("keyper_watchers ") }
                    return line.flatMap { Double($0.dropFirst("keyper_watchers ".count)) }.map { Int($0) }
                }
            }
            #expect(try await watchers() == 1)
            watch.close()
            // The next progress notice fails to go out: the watcher is gone.
            var gauge = try await watchers()
            let closed = ContinuousClock.now
            for _ in 0..<150 where gauge != 0 {
                try await Task.sleep(for: .milliseconds(100))
                gauge = try await watchers()
            }
            #expect(gauge == 0, "still \(gauge.map(String.init) ?? "?") watchers \(ContinuousClock.now - closed) after the client left")
            print("watcher dropped \(ContinuousClock.now - closed) after its client closed")
            // An open stream does not hold up a shutdown.
            let open = try RawConnection(port: process.port)
            open.send("GET /v1/watch?key=cfg/a HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = open.read(until: ": watching", timeout: .seconds(5))
            process.signal(SIGTERM)
            let ending = open.read(until: "shutting_down", timeout: .seconds(10))
            #expect(ending.contains("event: error"), "\(ending)")
            #expect(await process.exited() == 0)
            open.close()
        }
    }

    @Test("--log-format json writes one JSON object per line; /livez and /readyz answer")
    func jsonLogsAndProbes() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        try await withTemporaryDirectory { dir in
            let process = try KeyperProcess(arguments: ["--data-dir", dir + "/data", "--http-addr", "127.0.0.1:0", "--log-format", "json"],
                                            logPath: dir + "/node.log")
            try await process.waitUntilListening()
            try await withClient(process) { client in
                for uri in ["/livez", "/readyz"] {
                    let response = try await client.execute(.init(uri, method: .get))
                    #expect(response.status == .ok, "\(uri)")
                }
            }
            process.signal(SIGTERM)
            #expect(await process.exited() == 0)
            let lines = try String(contentsOfFile: dir + "/node.log", encoding: .utf8).split(separator: "\n")
            #expect(lines.count >= 3)
            for line in lines {
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                #expect(object?["time"] is String && object?["level"] is String && object?["message"] is String, "\(line)")
            }
        }
    }
}
