import AsyncHTTPClient
import FoundationEssentials
import NIOCore
import NIOHTTP1

/// One change a watch delivers.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: String, Sendable { case put, delete }
    public var kind: Kind
    public var key: String
    /// A put's value (empty for a delete).
    public var value: [UInt8]
    /// The revision of the change.
    public var modRevision: UInt64
    /// A put's key revisions (0 for a delete).
    public var createRevision: UInt64
    public var version: UInt64
    /// The event's id (`R`, or `R:i` inside a revision of several changes): where a watch resumes.
    public var id: String
}

extension KeyperClient {
    /// What to watch.
    public enum WatchTarget: Sendable {
        case key(String)
        case prefix(String)
    }

    /// The changes to `target` in revision order, each once, from `startRevision` (nil: from
    /// now), for as long as the stream is iterated. When the node goes away (killed, cut off,
    /// shutting down, or the stream fell behind), the watch resumes on the next node right after
    /// the last event delivered (`Last-Event-ID`); it ends with an error when the history no
    /// longer reaches back that far (`revision_compacted`: read, then watch again).
    public func watch(_ target: WatchTarget, startRevision: UInt64? = nil) -> AsyncThrowingStream<WatchEvent, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                var lastID: String?
                // Where a stream without an event yet started: a reconnect resumes from there.
                var from = startRevision
                var attempt = 0
                while !Task.isCancelled {
                    let endpoint = endpoints[((endpoints.firstIndex(of: preferredEndpoint) ?? 0) + attempt) % endpoints.count]
                    var query: String
                    switch target {
                    case .key(let key): query = "key=" + Self.query(key)
                    case .prefix(let prefix): query = "prefix=" + Self.query(prefix)
                    }
                    if lastID == nil, let from { query += "&start_revision=\(from)" }
                    var request = HTTPClientRequest(url: endpoint + "/v1/watch?" + query)
                    if let lastID { request.headers.add(name: "Last-Event-ID", value: lastID) }
                    do {
                        let response = try await HTTPClient.shared.execute(request, timeout: .hours(24 * 365))
                        if response.status != .ok {
                            let body = try await response.body.collect(upTo: 1 << 16)
                            let answer = Answer(status: Int(response.status.code), headers: response.headers, body: Array(buffer: body), endpoint: endpoint)
                            if response.status == .serviceUnavailable { throw RetryableWatchEnd() }
                            continuation.finish(throwing: answer.error ?? KeyperError(status: answer.status, code: .invalidAnswer, message: answer.text))
                            return
                        }
                        var parser = EventStreamParser()
                        for try await chunk in response.body {
                            for block in parser.feed(Array(buffer: chunk)) {
                                switch Self.event(from: block) {
                                case .event(let event):
                                    lastID = event.id
                                    attempt = 0
                                    continuation.yield(event)
                                case .start(let revision):
                                    if lastID == nil { from = revision }
                                case .end(let code, let message):
                                    if code == "revision_compacted" {
                                        continuation.finish(throwing: KeyperError(status: 410, code: .init(rawValue: code), message: message, endpoint: endpoint))
                                        return
                                    }
                                case .none: break
                                }
                            }
                        }
                    } catch {
                        // A node that went away: resume on the next.
                    }
                    attempt += 1
                    try? await Task.sleep(for: .milliseconds(min(2_000, 100 * attempt)))
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private struct RetryableWatchEnd: Error {}

    private enum Parsed {
        case event(WatchEvent)
        /// `: watching from revision N`
        case start(UInt64)
        case end(code: String, message: String)
    }

    private struct EventData: Decodable {
        var key: String
        var value: String?
        var value_base64: String?
        var create_revision: UInt64?
        var mod_revision: UInt64
        var version: UInt64?
    }

    private struct EndData: Decodable {
        var code: String
        var error: String
    }

    /// One block of the stream (lines until a blank one): an event, the server's end, or
    /// nothing (a comment, `retry:`).
    private static func event(from block: [String]) -> Parsed? {
        var id: String?
        var kind: String?
        var data: String?
        for line in block {
            if line.hasPrefix(": watching from revision "), let revision = UInt64(line.dropFirst(": watching from revision ".count)) {
                return .start(revision)
            }
            if line.hasPrefix("id: ") { id = String(line.dropFirst(4)) }
            else if line.hasPrefix("event: ") { kind = String(line.dropFirst(7)) }
            else if line.hasPrefix("data: ") { data = String(line.dropFirst(6)) }
        }
        guard let kind, let data else { return nil }
        if kind == "error" {
            let end = try? JSONDecoder().decode(EndData.self, from: Data(data.utf8))
            return .end(code: end?.code ?? "unknown", message: end?.error ?? data)
        }
        guard let id, let body = try? JSONDecoder().decode(EventData.self, from: Data(data.utf8)) else { return nil }
        let value = body.value.map { Array($0.utf8) } ?? body.value_base64.flatMap { Data(base64Encoded: $0).map(Array.init) } ?? []
        return .event(WatchEvent(kind: kind == "delete" ? .delete : .put, key: body.key, value: value, modRevision: body.mod_revision,
                                 createRevision: body.create_revision ?? 0, version: body.version ?? 0, id: id))
    }
}

/// Splits a Server-Sent Events byte stream into blocks of lines.
struct EventStreamParser {
    private var pending: [UInt8] = []
    private var lines: [String] = []

    mutating func feed(_ bytes: [UInt8]) -> [[String]] {
        pending += bytes
        var blocks: [[String]] = []
        var start = 0
        for index in pending.indices where pending[index] == UInt8(ascii: "\n") {
            let line = String(decoding: pending[start..<index], as: UTF8.self)
            start = index + 1
            if line.isEmpty {
                if !lines.isEmpty { blocks.append(lines) }
                lines = []
            } else {
                lines.append(line)
            }
        }
        pending.removeFirst(start)
        return blocks
    }
}
