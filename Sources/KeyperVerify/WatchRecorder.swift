import Dispatch
import FoundationEssentials
import KeyperBase
import KeyperHistory
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One event a watch stream delivered.
struct WatchedEvent: Equatable, Sendable {
    /// The SSE id: the revision, and the event's place within it (`R:i`; the last of a
    /// revision is plain `R`).
    var revision: UInt64
    var index: Int?
    var kind: String
    var key: String
    var value: String?
}

/// Follows `GET /v1/watch?prefix=…` from revision 1 on one node, on a thread of its own
/// (blocking sockets: a handful of streams, never on the cooperative pool), and records every
/// event. When the stream breaks (the node killed, paused, cut off) it reconnects with
/// `Last-Event-ID`, to the same node or another, as an EventSource client would; a node that
/// no longer has the history (`410`) sends it to another.
final class WatchRecorder: Sendable {
    private struct State {
        var events: [WatchedEvent] = []
        var reconnects = 0
        var compactions = 0
        /// Where the stream had to start over from the present, its position then unknown to
        /// every node (each had restarted since): the checks do not look for revisions across.
        var gaps: [Int] = []
        var stopped = false
        /// Why the stream ended in a way a client could not repair (nil while fine).
        var problem: String?
    }

    let name: String
    private let endpoints: [String]
    private let home: Int
    private let prefix: String
    private let state = Mutex(State())
    private let done = DispatchSemaphore(value: 0)

    init(name: String, endpoints: [String], home: Int, prefix: String) {
        self.name = name
        self.endpoints = endpoints
        self.home = home
        self.prefix = prefix
    }

    func start() {
        DispatchQueue(label: "keyper.verify.watch.\(name)").async { [self] in
            run()
            done.signal()
        }
    }

    /// Stops once the stream has delivered revision `revision` (or after `timeout`).
    func stop(after revision: UInt64, timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, (state.withLock { $0.events.last?.revision } ?? 0) < revision {
            try? await Task.sleep(for: .milliseconds(50))
        }
        state.withLock { $0.stopped = true }
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { [done] in
                done.wait()
                continuation.resume()
            }
        }
    }

    var summary: (events: [WatchedEvent], gaps: [Int], reconnects: Int, compactions: Int, problem: String?) {
        state.withLock { ($0.events, $0.gaps, $0.reconnects, $0.compactions, $0.problem) }
    }

    private var stopped: Bool { state.withLock { $0.stopped } }

    private func run() {
        var node = home
        var lastID: String?
        var fresh = false
        var attempt = 0
        var compactedInARow = 0
        while !stopped {
            let outcome = stream(from: endpoints[node], lastID: &lastID, fresh: fresh)
            fresh = false
            guard !stopped else { return }
            attempt += 1
            state.withLock { $0.reconnects += 1 }
            switch outcome {
            case .compacted:
                // This node lacks the history (restarted, or installed a snapshot): another has it.
                state.withLock { $0.compactions += 1 }
                compactedInARow += 1
                node = (node + 1) % endpoints.count
                if compactedInARow >= endpoints.count {
                    // None has it: start over from the present, and say where.
                    state.withLock { $0.gaps.append($0.events.count) }
                    (lastID, fresh, compactedInARow) = (nil, true, 0)
                }
            case .broken:
                compactedInARow = 0
                // Back to the home node now and then, elsewhere otherwise.
                node = attempt % 3 == 0 ? home : (node + 1) % endpoints.count
            }
            usleep(200_000)
        }
    }

    private enum Outcome { case broken, compacted }

    /// Reads one connection's stream until it breaks; `lastID` follows the events.
    private func stream(from endpoint: String, lastID: inout String?, fresh: Bool) -> Outcome {
        guard let (host, port) = HostPort.parseURL(endpoint).map({ ($0.address.host, $0.address.port) }) else { return .broken }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .broken }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host)
        var timeout = timeval(tv_sec: 0, tv_usec: 300_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return .broken }
        let start = lastID.map { "Last-Event-ID: \($0)\r\n" } ?? ""
        let request = "GET /v1/watch?prefix=\(prefix)\(fresh ? "" : "&start_revision=1") HTTP/1.1\r\nHost: \(host)\r\n\(start)\r\n"
        let sent = Array(request.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == request.utf8.count else { return .broken }
        var pending: [UInt8] = []
        var headerDone = false
        var chunked = false
        var body: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        // A stream silent for longer than a few progress intervals is dead (a paused node).
        var silentSince = ContinuousClock.now
        while !stopped {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return .broken }
            if count < 0 {
                guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else { return .broken }
                if ContinuousClock.now - silentSince > .seconds(3) { return .broken }
                continue
            }
            silentSince = ContinuousClock.now
            pending += buffer[..<count]
            if !headerDone {
                guard let end = Self.find([13, 10, 13, 10], in: pending) else { continue }
                let head = String(decoding: pending[..<end], as: UTF8.self)
                pending.removeFirst(end + 4)
                headerDone = true
                if head.hasPrefix("HTTP/1.1 410") { return .compacted }
                guard head.hasPrefix("HTTP/1.1 200") else { return .broken }
                chunked = head.lowercased().contains("transfer-encoding: chunked")
            }
            if chunked {
                // Chunks: size in hex, CRLF, the bytes, CRLF.
                while let lineEnd = Self.find([13, 10], in: pending) {
                    guard let size = Int(String(decoding: pending[..<lineEnd], as: UTF8.self).split(separator: ";")[0], radix: 16) else {
                        return .broken
                    }
                    guard pending.count >= lineEnd + 2 + size + 2 else { break }
                    if size == 0 { return .broken }
                    body += pending[(lineEnd + 2)..<(lineEnd + 2 + size)]
                    pending.removeFirst(lineEnd + 2 + size + 2)
                }
            } else {
                body += pending
                pending = []
            }
            while let end = Self.find([10, 10], in: body) {
                let block = String(decoding: body[..<end], as: UTF8.self)
                body.removeFirst(end + 2)
                switch record(block, lastID: &lastID) {
                case .compacted?: return .compacted
                case .broken?: return .broken
                case nil: break
                }
            }
        }
        return .broken
    }

    private struct EventData: Decodable {
        var key: String
        var value: String?
    }

    /// Records one SSE block; an `error` event ends the stream.
    private func record(_ block: String, lastID: inout String?) -> Outcome? {
        var id: String?, event: String?, data: String?
        for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("id: ") { id = String(line.dropFirst(4)) }
            if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
            if line.hasPrefix("data: ") { data = String(line.dropFirst(6)) }
        }
        guard let event else { return nil }  // a comment: progress
        if event == "error" {
            return data?.contains("revision_compacted") == true ? .compacted : .broken
        }
        guard let id, let data, let decoded = try? JSONDecoder().decode(EventData.self, from: Data(data.utf8)) else {
            state.withLock { $0.problem = $0.problem ?? "\(name): an event that does not parse: \(block)" }
            return .broken
        }
        let parts = id.split(separator: ":")
        guard let revision = parts.first.flatMap({ UInt64($0) }) else { return .broken }
        let index = parts.count == 2 ? Int(parts[1]) : nil
        lastID = id
        state.withLock { $0.events.append(WatchedEvent(revision: revision, index: index, kind: event, key: decoded.key, value: decoded.value)) }
        return nil
    }

    private static func find(_ pattern: [UInt8], in bytes: [UInt8]) -> Int? {
        guard bytes.count >= pattern.count else { return nil }
        for start in 0...(bytes.count - pattern.count) where bytes[start] == pattern[0] {
            if Array(bytes[start..<(start + pattern.count)]) == pattern { return start }
        }
        return nil
    }
}

extension Verifier {
    /// What the watchers saw, against each other and against the history: each stream in
    /// order with no event twice; every stream the same events at the same ids; no revision
    /// missing from the first to the last; every acknowledged write's value seen by every
    /// stream that ran past it, and no value of a write that failed.
    static func watchViolations(_ streams: [(name: String, events: [WatchedEvent], gaps: [Int])], history: [ClientOperation]) -> [String] {
        var problems: [String] = []
        var byID: [String: WatchedEvent] = [:]
        for (name, events, gaps) in streams {
            var previous: (UInt64, Int)?
            for (position, event) in events.enumerated() {
                if gaps.contains(position) { previous = nil }
                let position = (event.revision, event.index ?? Int.max)
                if let previous, !(previous < position) {
                    problems.append("\(name): event \(event.revision):\(event.index.map(String.init) ?? "last") after \(previous.0):\(previous.1) (out of order or twice)")
                    break
                }
                previous = position
                let id = "\(event.revision):\(event.index.map(String.init) ?? "last")"
                if let other = byID[id], other != event {
                    problems.append("\(name): event \(id) is \(event.kind) \(event.key)=\(event.value ?? "-"), another stream saw \(other.kind) \(other.key)=\(other.value ?? "-")")
                } else {
                    byID[id] = event
                }
            }
            // Every revision from the first to the last of each stretch without a gap, each whole
            // (its last event is plain R).
            let bounds = [0] + gaps + [events.count]
            for (start, end) in zip(bounds, bounds.dropFirst()) where start < end {
                let stretch = events[start..<end]
                let lasts = Set(stretch.filter { $0.index == nil }.map(\.revision))
                if let first = stretch.first?.revision, let last = lasts.max(), first <= last {
                    for revision in first...last where !lasts.contains(revision) {
                        problems.append("\(name): revision \(revision) is missing (or incomplete)")
                        break
                    }
                }
            }
        }
        let values = Dictionary(grouping: streams.flatMap(\.events).filter { $0.kind == "put" }, by: { $0.value ?? "" })
        for operation in history where operation.kind == .write || operation.kind == .cas {
            guard let value = operation.value else { continue }
            let applied = operation.outcome == .ok && (operation.kind == .write || operation.succeeded)
            if operation.outcome == .failed, values[value] != nil {
                problems.append("the value \(value) of a write that failed was watched")
            }
            guard applied else { continue }
            guard let watched = values[value]?.first else {
                problems.append("no stream saw the acknowledged write of \(operation.key)=\(value)")
                continue
            }
            for (name, events, gaps) in streams where gaps.isEmpty {
                guard let first = events.first?.revision, let last = events.last?.revision,
                      watched.revision > first, watched.revision <= last else { continue }
                if !events.contains(where: { $0.kind == "put" && $0.value == value && $0.key == operation.key }) {
                    problems.append("\(name) missed the write of \(operation.key)=\(value) at revision \(watched.revision)")
                }
            }
        }
        return Array(problems.prefix(10))
    }
}
