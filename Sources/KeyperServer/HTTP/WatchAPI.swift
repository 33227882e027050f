import HTTPTypes
import Hummingbird
import KeyperStorage
import NIOCore
import ServiceLifecycle

/// `GET /v1/watch?key=K` or `?prefix=P`, optional `start_revision=N`: a Server-Sent Events
/// stream of the changes to those keys, in revision order, from the node's applied state.
///
/// ```text
/// id: 42
/// event: put
/// data: {"key":"app/a","value":"on","create_revision":40,"mod_revision":42,"version":3}
///
/// id: 43
/// event: delete
/// data: {"key":"app/a","mod_revision":43}
/// ```
///
/// The `id` is the event's revision; when one revision changed several keys (a transaction, a
/// prefix delete), its events but the last carry `R:i` (the i-th of revision R), and the last
/// `R`. A reconnect with `Last-Event-ID` (which an EventSource sends by itself) resumes right
/// after it: no event twice, none missed. An idle stream gets a comment `: progress
/// revision=N` every few seconds. A stream that cannot go on ends with `event: error` and a
/// JSON `data` (`revision_compacted` with `compact_revision`: re-read and watch from there;
/// `watch_lagging`: the client did not keep up).
enum WatchAPI {
    static func stream(_ request: Request, feed: ChangeFeed, keyBytesMax: Int) throws(APIError) -> Response {
        let query = request.uri.queryParameters
        let filter: WatchFilter
        switch (query["key"], query["prefix"]) {
        case let (key?, nil):
            guard !key.isEmpty else { throw APIError.badRequest("invalid_watch", "key is empty (use prefix= to watch every key)") }
            filter = .key(Array(String(key).utf8))
        case let (nil, prefix?): filter = .prefix(Array(String(prefix).utf8))
        case (nil, nil): throw APIError.badRequest("invalid_watch", "give key=K or prefix=P (prefix= for every key)")
        case (_?, _?): throw APIError.badRequest("invalid_watch", "give key or prefix, not both")
        }
        let watched = switch filter {
        case .key(let bytes), .prefix(let bytes): bytes
        }
        guard watched.count <= keyBytesMax else {
            throw APIError.badRequest("key_too_large", "the key or prefix is \(watched.count) bytes; the limit is \(keyBytesMax) (--max-key-bytes)")
        }
        let start = try Self.start(request)
        let watcher: Watcher
        do {
            watcher = try feed.watch(filter, from: start)
        } catch .compacted(let compactRevision) {
            var error = APIError(.gone, code: "revision_compacted",
                                 "revisions up to \(compactRevision) are no longer kept: read the keys, then watch from the revision the read saw")
            error.numbers = [("compact_revision", compactRevision)]
            throw error
        } catch {
            throw APIError(.serviceUnavailable, code: "shutting_down", "the node is shutting down")
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        let current = feed.revisions.current
        headers[.keyperRevision] = String(current)
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { watcher.cancel() }
            // The reconnection delay for EventSource clients, and where the stream stands.
            try await writer.write(ByteBuffer(string: "retry: 1000\n: watching from revision \(start?.revision ?? current + 1)\n\n"))
            streaming: while true {
                switch await watcher.next() {
                case .events(let events):
                    var bytes: [UInt8] = []
                    bytes.reserveCapacity(events.reduce(0) { $0 + ($1.encoded?.count ?? 256) })
                    for event in events { bytes += event.encoded ?? Array(Self.sse(event).utf8) }
                    try await writer.write(ByteBuffer(bytes: bytes))
                case .idle(let revision):
                    try await writer.write(ByteBuffer(string: ": progress revision=\(revision)\n\n"))
                case .ended(let reason):
                    let data = switch reason {
                    case .compacted(let revision):
                        #"{"code":"revision_compacted","compact_revision":\#(revision),"error":"the node's state was replaced from a snapshot: read the keys, then watch again"}"#
                    case .lagging(let events):
                        #"{"code":"watch_lagging","error":"the client fell \#(events) events behind; watch again from the last event id"}"#
                    case .cancelled:
                        #"{"code":"shutting_down","error":"the watch was stopped; watch again from the last event id"}"#
                    }
                    try await writer.write(ByteBuffer(string: "event: error\ndata: \(data)\n\n"))
                    break streaming
                }
            }
            try await writer.finish(nil)
        })
    }

    /// `Last-Event-ID` (`R`: after revision R; `R:i`: after the i-th event of R) or
    /// `start_revision=N` (from N on); nil: from the next change.
    static func start(_ request: Request) throws(APIError) -> WatchStart? {
        if let last = request.headers[.lastEventID] {
            let parts = last.split(separator: ":", omittingEmptySubsequences: false)
            guard let revision = parts.first.flatMap({ UInt64($0) }), revision < UInt64.max, parts.count <= 2 else {
                throw APIError.badRequest("invalid_revision", "Last-Event-ID must be an event id this API sent, such as 42 or 42:0 (got \(last))")
            }
            if parts.count == 2 {
                guard let index = Int(parts[1]), index >= 0, index < Int(Int32.max) else {
                    throw APIError.badRequest("invalid_revision", "Last-Event-ID must be an event id this API sent, such as 42 or 42:0 (got \(last))")
                }
                return WatchStart(revision: revision, skip: index + 1)
            }
            return WatchStart(revision: revision + 1)
        }
        guard request.uri.query != nil, let text = request.uri.queryParameters["start_revision"] else { return nil }
        guard let revision = UInt64(text), revision > 0 else {
            throw APIError.badRequest("invalid_revision", "start_revision must be a revision, 1 or more (got \"\(text)\")")
        }
        return WatchStart(revision: revision)
    }

    /// A long poll (`GET /v1/keys/{key}?wait_revision=N`, Consul's blocking query in revision
    /// terms): returns once the key changed at revision N or later (written or deleted), or at
    /// the timeout. `modRevision` reads the key's current mod revision (nil: absent); the
    /// watch is started first, so a change between the read and the wait is not missed.
    static func waitForChange(of key: [UInt8], since revision: UInt64, timeout: Duration, feed: ChangeFeed,
                              modRevision: @Sendable () async throws -> UInt64?) async throws {
        let watcher: Watcher
        do {
            watcher = try feed.watch(.key(key), from: WatchStart(revision: revision))
        } catch {
            // The history no longer reaches back to N: whether the key changed since is not
            // known, so the poll answers at once with the current state.
            return
        }
        defer { watcher.cancel() }
        if let current = try await modRevision(), current >= revision { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while case .idle = await watcher.next() {}
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    /// One event in the stream's format.
    static func sse(_ event: KVEvent) -> String {
        let id = event.index + 1 == event.count ? "\(event.revision)" : "\(event.revision):\(event.index)"
        switch event.kind {
        case .put:
            let data = "{" + EntryJSON.fields(key: event.key, KVStore.VersionedValue(value: event.value, revisions: event.revisions)) + "}"
            return "id: \(id)\nevent: put\ndata: \(data)\n\n"
        case .delete:
            let data = #"{"key":"# + JSONText.quoted(String(decoding: event.key, as: UTF8.self)) + #","mod_revision":\#(event.revision)}"#
            return "id: \(id)\nevent: delete\ndata: \(data)\n\n"
        }
    }
}

extension HTTPField.Name {
    /// Sent by an EventSource reconnecting: the id of the last event it received.
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
}

/// Wakes idle watch streams every `interval`, so each says where it stands and notices a
/// client that went away; at shutdown, ends every stream, so the server can drain.
struct WatchProgress: Service {
    let feed: ChangeFeed
    let interval: Duration

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                feed.wakeIdle()
            }
        }
        // Streams end, and none starts while the server drains.
        feed.close()
    }
}
