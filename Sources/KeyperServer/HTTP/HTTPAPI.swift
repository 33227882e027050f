import FoundationEssentials
import HTTPTypes
import Hummingbird
import KeyperBase
import KeyperReplica
import KeyperStorage
import NIOCore

extension HTTPField.Name {
    /// Names the current leader's node id on every response, so clients can find it.
    static let keyperLeader = HTTPField.Name("X-Keyper-Leader")!
    /// On a stale read: the log index the local copy reflects.
    static let keyperAppliedIndex = HTTPField.Name("X-Keyper-Applied-Index")!
    /// The store revision a read saw (or a write made).
    static let keyperRevision = HTTPField.Name("X-Keyper-Revision")!
    /// A key's revisions on a read: when it was created, last changed, and writes since creation.
    static let keyperCreateRevision = HTTPField.Name("X-Keyper-Create-Revision")!
    static let keyperModRevision = HTTPField.Name("X-Keyper-Mod-Revision")!
    static let keyperVersion = HTTPField.Name("X-Keyper-Version")!
    /// A client's key for exactly-once retries of a write.
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    /// On the answer to a retry the store remembered: nothing was applied again; this is the
    /// first attempt's answer.
    static let idempotentReplayed = HTTPField.Name("Idempotent-Replayed")!
    /// The lease a `PUT …?ttl=` granted for its key.
    static let keyperLease = HTTPField.Name("X-Keyper-Lease")!
}

/// The `/v1` HTTP API, in front of any ``KeyValueNode``.
///
/// Keys are everything after `/v1/keys/`, percent-decoded (so `a/b/c`, `%2F`, spaces and UTF-8
/// all work); they are taken from the raw request path, never from a router that might
/// normalise it.
public struct KeyperAPI<Node: KeyValueNode>: Sendable {
    static var keysPath: String { Route.keys.pattern }
    static var keyPrefix: String { Route.keys.pattern + "/" }

    let node: Node
    let configuration: NodeConfiguration

    public init(node: Node, configuration: NodeConfiguration) {
        self.node = node
        self.configuration = configuration
        node.changes.setEncoder { Array(WatchAPI.sse($0).utf8) }
    }

    /// Every route, the JSON error middleware on each: `/v1/keys` and `/v1/keys/{key}` served
    /// ahead of the route table (see ``KeyperRouter``), the rest through it.
    public func makeRouter() -> KeyperRouter<Node> {
        KeyperRouter(api: self, routes: makeRouteTable())
    }

    /// The route table for everything but the keys, with the JSON error middleware installed.
    func makeRouteTable() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: APIMiddleware(node: node))
        for route in Route.allCases where route != .keys && route != .key {
            // HEAD comes with GET (autoGenerateHeadEndpoints).
            for method in route.methods where method != .head {
                router.on(RouterPath(route.pattern), method: method) { request, context in
                    try await respond(to: request, route: route, context: context)
                }
            }
        }
        return router
    }

    /// The handler of every route but the keys (served ahead of the route table).
    private func respond(to request: Request, route: Route, context: BasicRequestContext) async throws -> Response {
        switch (route, request.method) {
        case (.status, _): return try await status()
        case (.health, _): return Self.healthResponse(await node.health())
        case (.live, _): return Self.healthResponse(Health(healthy: true, reason: "serving"))
        case (.ready, _): return Self.healthResponse(await node.readiness())
        case (.metrics, _):
            node.metrics.watchers.record(node.changes.watcherCount)
            if let leases = try? await node.leases(consistency: .stale) { node.metrics.leases.record(leases.count) }
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: node.metrics.exposition())))
        case (.join, _): return try await join(request)
        case (.member, _):
            try await node.removeMember(try context.parameters.require("id"))
            return Response(status: .noContent)
        case (.leaderTransfer, _): return try await transfer(request)
        case (.transaction, _): return try await transaction(request)
        case (.watch, _): return try WatchAPI.stream(request, feed: node.changes, keyBytesMax: configuration.keyBytesMax)
        case (.leases, .post): return try await LeaseAPI.grant(request, node: node)
        case (.leases, _): return try await LeaseAPI.list(consistency: try RequestParameters.consistency(request), node: node)
        case (.lease, .delete): return try await LeaseAPI.revoke(try LeaseAPI.id(context.parameters.require("id")[...]), node: node)
        case (.lease, _): return try await LeaseAPI.show(try LeaseAPI.id(context.parameters.require("id")[...]), node: node)
        case (.leaseKeepAlive, _): return try await LeaseAPI.keepAlive(try LeaseAPI.id(context.parameters.require("id")[...]), node: node)
        case (.snapshot, _): return try await SnapshotAPI.stream(node: node)
        case (.statusPage, _): return StatusPage.response()
        case (.cluster, _): return try await StatusPage.cluster(node: node)
        case (.lock, _), (.election, _):
            let kind: LockAPI.Kind = route == .lock ? .lock : .election
            let name = try LockAPI.name(try context.parameters.require("name"), kind: kind)
            switch request.method {
            case .post: return try await LockAPI.campaign(request, kind: kind, name: name, valueBytesMax: configuration.valueBytesMax, node: node)
            case .delete: return try await LockAPI.release(request, kind: kind, name: name, node: node)
            case .put: return try await LockAPI.proclaim(request, name: name, valueBytesMax: configuration.valueBytesMax, node: node)
            default: return try await LockAPI.show(request, kind: kind, name: name, node: node)
            }
        case (.debugFaults, .post): return try await faults(request)
        case (.debugFaults, _):
            try node.setFaults(dropTo: [], dropFrom: [])
            return Response(status: .noContent)
        case (.keys, _), (.key, _):
            preconditionFailure("keys are served ahead of the route table")
        }
    }

    // MARK: Keys

    func handleKeys(_ request: Request, path: String) async throws -> Response {
        // The method first: a wrong one is 405 whatever the key looks like.
        let allowed = Route(path: path)?.methods ?? []
        guard allowed.contains(request.method) else { throw APIError.methodNotAllowed(request.method, allowed: allowed) }
        if path == Self.keysPath {
            if request.method == .delete { return try await deletePrefix(request) }
            let listing = try await list(request)
            return request.method == .head ? listing.createHeadResponse() : listing
        }
        let key = try Self.key(fromPath: path, bytesMax: configuration.keyBytesMax)
        switch request.method {
        case .get: return try await get(key, request)
        case .head: return try await get(key, request).createHeadResponse()
        case .put: return try await put(key, request)
        default:
            let write = KVWrite(.delete(key: key), condition: try Self.condition(request), idempotency: try Self.idempotency(request))
            return try written(await node.write(write))
        }
    }

    static func key(fromPath path: String, bytesMax: Int) throws(APIError) -> [UInt8] {
        guard path.hasPrefix(keyPrefix) else { throw APIError.emptyKey() }
        guard let key = Percent.decode(path.dropFirst(keyPrefix.count)) else {
            throw APIError.badRequest("invalid_key", "the key has a malformed percent-escape")
        }
        guard !key.isEmpty else { throw APIError.emptyKey() }
        guard key.count <= bytesMax else {
            throw APIError.badRequest("key_too_large", "the key is \(key.count) bytes; the limit is \(bytesMax) (--max-key-bytes)")
        }
        guard String(validating: key, as: UTF8.self) != nil else {
            throw APIError.badRequest("invalid_key", "the key is not valid UTF-8 after percent-decoding")
        }
        return key
    }

    /// The raw value, its revisions in headers (`ETag` is the mod revision); with
    /// `Accept: application/json` or `?format=json`, a JSON object with the same.
    private func get(_ key: [UInt8], _ request: Request) async throws -> Response {
        let consistency = try RequestParameters.consistency(request)
        let json = try Self.wantsJSON(request)
        if let (revision, timeout) = try Self.longPoll(request) {
            try await WatchAPI.waitForChange(of: key, since: revision, timeout: timeout, feed: node.changes) {
                try await node.get(key, consistency: consistency).value?.revisions.mod
            }
        }
        // Read before the value: the value then reflects at least every entry up to this index
        // (the state machine only moves forward). Read after, it would bound nothing.
        let applied = consistency == .stale ? node.appliedIndex : nil
        let read = try await node.get(key, consistency: consistency)
        var headers = HTTPFields()
        headers[.keyperRevision] = String(read.revision)
        if let applied { headers[.keyperAppliedIndex] = String(applied) }
        guard let found = read.value else {
            var error = APIError.keyNotFound()
            error.headers = headers
            throw error
        }
        let revisions = found.revisions
        headers[.eTag] = "\"\(revisions.mod)\""
        headers[.keyperCreateRevision] = String(revisions.create)
        headers[.keyperModRevision] = String(revisions.mod)
        headers[.keyperVersion] = String(revisions.version)
        guard json else {
            headers[.contentType] = "application/octet-stream"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: found.value)))
        }
        headers[.contentType] = "application/json"
        let body = Self.keyJSON(key: key, found, revision: read.revision)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// `wait_revision=N` and `timeout=` (default 30 s, at most 5 minutes) of a long poll.
    static func longPoll(_ request: Request) throws(APIError) -> (revision: UInt64, timeout: Duration)? {
        guard request.uri.query != nil, let text = request.uri.queryParameters["wait_revision"] else { return nil }
        guard let revision = UInt64(text), revision > 0 else {
            throw APIError.badRequest("invalid_revision", "wait_revision must be a revision, 1 or more (got \"\(text)\")")
        }
        var timeout = Duration.seconds(30)
        if let given = request.uri.queryParameters["timeout"] {
            guard let milliseconds = RequestParameters.milliseconds(String(given)), milliseconds <= 300_000 else {
                throw APIError.badRequest("invalid_timeout", "timeout must be a duration such as 500ms, 30s or 5m, at most 5m (got \"\(given)\")")
            }
            timeout = .milliseconds(milliseconds)
        }
        return (revision, timeout)
    }

    /// Whether a read asks for JSON: `?format=json` (or `raw`), else an `Accept` naming
    /// `application/json`.
    static func wantsJSON(_ request: Request) throws(APIError) -> Bool {
        if request.uri.query != nil, let format = request.uri.queryParameters["format"] {
            switch format {
            case "json": return true
            case "raw": return false
            default: throw APIError.badRequest("invalid_format", "format must be json or raw (got \"\(format)\")")
            }
        }
        return request.headers[.accept]?.contains("application/json") ?? false
    }

    /// `{"key", "value" | "value_base64", "create_revision", "mod_revision", "version", "revision"}`:
    /// `value` when the bytes are UTF-8, else `value_base64`.
    static func keyJSON(key: [UInt8], _ found: KVStore.VersionedValue, revision: UInt64) -> String {
        "{" + EntryJSON.fields(key: key, found) + #","revision":\#(revision)}"# + "\n"
    }

    /// `?lease=ID` attaches the key to a lease; `?ttl=30s` grants a lease for it first (its
    /// id in `X-Keyper-Lease`; revoked again if the put changes nothing).
    private func put(_ key: [UInt8], _ request: Request) async throws -> Response {
        let body = try await Self.body(of: request, limit: configuration.valueBytesMax, tooLarge: Self.valueTooLarge)
        let condition = try Self.condition(request)
        var write = KVWrite(.put(key: key, value: Array(buffer: body)), condition: condition, idempotency: try Self.idempotency(request))
        var granted: UInt64?
        if request.uri.query != nil {
            let query = request.uri.queryParameters
            if query["lease"] != nil && query["ttl"] != nil {
                throw APIError.badRequest("conflicting_lease", "give lease (an existing lease) or ttl (a new one for this key), not both")
            }
            if let text = query["lease"] { write.lease = try LeaseAPI.id(text) }
            if let text = query["ttl"] {
                let ttl = try LeaseAPI.ttlSeconds(String(text), minimum: node.leaseTTLSecondsMin)
                guard write.idempotency == nil else {
                    throw APIError.badRequest("invalid_idempotency_key", "a put with ttl= grants a new lease each time: use an Idempotency-Key with lease= instead")
                }
                granted = try await LeaseAPI.grant(ttlSeconds: ttl, id: nil, node: node)
                write.lease = granted
            }
        }
        let result = try await node.write(write)
        guard let granted else { return try written(result) }
        do {
            var response = try written(result)
            response.headers[.keyperLease] = String(granted)
            return response
        } catch {
            // The put changed nothing: its lease has no reason to live.
            _ = try? await node.write(KVWrite(.revokeLease(id: granted)))
            throw error
        }
    }

    /// `DELETE /v1/keys?prefix=P`: every key under the prefix, in one change. An empty (or
    /// missing) prefix would delete everything: refused unless `all=true`.
    private func deletePrefix(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let prefix = Array((query["prefix"].map(String.init) ?? "").utf8)
        switch query["all"] {
        case nil, "false": if prefix.isEmpty {
            throw APIError.badRequest("empty_prefix", "an empty prefix deletes every key: add all=true if that is what you want")
        }
        case "true": break
        case let other?: throw APIError.badRequest("invalid_all", "all must be true or false (got \"\(other)\")")
        }
        guard prefix.count <= configuration.keyBytesMax else {
            throw APIError.badRequest("key_too_large", "the prefix is \(prefix.count) bytes; the limit is \(configuration.keyBytesMax) (--max-key-bytes)")
        }
        if request.headers[.ifMatch] != nil || request.headers[.ifNoneMatch] != nil || query["prev_revision"] != nil {
            throw APIError.badRequest("invalid_condition", "a prefix delete takes no condition (use a transaction)")
        }
        var write = KVWrite.deletePrefix(prefix)
        write.idempotency = try Self.idempotency(request)
        return try answer(try await node.write(write)) { result throws(APIError) in
            guard case let .deletedPrefix(count, revision) = result else {
                throw APIError.internalError("a prefix delete answered with \(result)")
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.keyperRevision] = String(revision)
            return Response(status: .ok, headers: headers,
                            body: .init(byteBuffer: ByteBuffer(string: #"{"deleted":\#(count),"revision":\#(revision)}"# + "\n")))
        }
    }

    /// The token of a write's `Idempotency-Key` (1-128 visible ASCII characters, optionally
    /// quoted as a structured-field string), stamped with this node's wall clock.
    static func idempotency(_ request: Request) throws(APIError) -> IdempotencyToken? {
        guard let value = request.headers[.idempotencyKey] else { return nil }
        var key = Array(value.trimmingASCIISpaces().utf8)
        if key.count >= 2, key.first == UInt8(ascii: "\""), key.last == UInt8(ascii: "\"") { key = Array(key.dropFirst().dropLast()) }
        guard (1...128).contains(key.count), key.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") }) else {
            throw APIError.badRequest("invalid_idempotency_key", "Idempotency-Key must be 1-128 visible ASCII characters, such as a UUID (got \(value))")
        }
        let now = Date().timeIntervalSince1970
        return IdempotencyToken(key: key, time: UInt64(max(0, now * 1000)))
    }

    /// `respond`'s answer to `result`, unless it is about an idempotency key: a retry the store
    /// remembered answers as the first attempt did, marked `Idempotent-Replayed: true`; a
    /// key reused for another change is `422 idempotency_key_reused`; a first attempt whose
    /// result was too large to keep is `409 already_applied` with its revision.
    func answer(_ result: KVWriteResult, _ respond: (KVWriteResult) throws(APIError) -> Response) throws(APIError) -> Response {
        switch result {
        case .replayed(let first):
            node.metrics.idempotentReplays.increment()
            do {
                var response = try answer(first, respond)
                response.headers[.idempotentReplayed] = "true"
                return response
            } catch {
                var error = error
                error.headers[.idempotentReplayed] = "true"
                throw error
            }
        case .idempotencyKeyReused:
            node.metrics.idempotencyKeysReused.increment()
            throw APIError(.unprocessableContent, code: "idempotency_key_reused",
                           "this Idempotency-Key was used for a different request (a retry must repeat the request exactly); nothing was applied")
        case .alreadyApplied(let revision):
            var error = APIError(.conflict, code: "already_applied",
                                 "this request was applied at revision \(revision); its result was too large to keep for a retry: read what you need")
            error.numbers = [("revision", revision)]
            throw error
        default:
            return try respond(result)
        }
    }

    /// `204` with the store revision the write made (and the key's new `ETag`), or `412
    /// revision_mismatch` with the key's current mod revision when its condition did not hold.
    func written(_ result: KVWriteResult) throws(APIError) -> Response {
        try answer(result) { result throws(APIError) in try Self.writtenOne(result) }
    }

    private static func writtenOne(_ result: KVWriteResult) throws(APIError) -> Response {
        switch result {
        case let .applied(revision, key):
            var headers = HTTPFields()
            headers[.keyperRevision] = String(revision)
            if let key { headers[.eTag] = "\"\(key.mod)\"" }
            return Response(status: .noContent, headers: headers)
        case .leaseNotFound(let id):
            throw APIError.leaseNotFound(id)
        case .deletedPrefix, .transaction, .replayed, .idempotencyKeyReused, .alreadyApplied, .leaseExists, .revoked:
            throw APIError.internalError("a write of one key answered with \(result)")
        case .conditionFailed(let current):
            var error = APIError(.preconditionFailed, code: "revision_mismatch",
                                 current == 0 ? "the condition does not hold: the key does not exist; nothing was changed"
                                     : "the condition does not hold: the key's mod revision is \(current); nothing was changed")
            error.numbers = [("current_revision", current)]
            error.headers[.eTag] = current == 0 ? nil : "\"\(current)\""
            throw error
        }
    }

    /// A write's condition: `If-Match: "<mod_revision>"` (or `*`: the key exists),
    /// `If-None-Match: *` (create only), or `?prev_revision=N` (0: must not exist); at most one.
    static func condition(_ request: Request) throws(APIError) -> KVCondition? {
        var conditions: [KVCondition] = []
        if let value = request.headers[.ifMatch] {
            let trimmed = value.trimmingASCIISpaces()
            if trimmed == "*" {
                conditions.append(.exists)
            } else {
                guard trimmed.count >= 3, trimmed.first == "\"", trimmed.last == "\"",
                      let revision = UInt64(trimmed.dropFirst().dropLast()), revision > 0 else {
                    throw APIError.badRequest("invalid_etag", "If-Match must be one quoted mod revision such as \"42\", or * (got \(value))")
                }
                conditions.append(.modRevision(revision))
            }
        }
        if let value = request.headers[.ifNoneMatch] {
            guard value.trimmingASCIISpaces() == "*" else {
                throw APIError.badRequest("invalid_etag", "If-None-Match takes only * (create only; got \(value))")
            }
            conditions.append(.modRevision(0))
        }
        if request.uri.query != nil, let text = request.uri.queryParameters["prev_revision"] {
            guard let revision = UInt64(text) else {
                throw APIError.badRequest("invalid_revision", "prev_revision must be a revision, 0 or more (got \"\(text)\")")
            }
            conditions.append(.modRevision(revision))
        }
        guard conditions.count <= 1 else {
            throw APIError.badRequest("conflicting_conditions", "give one of If-Match, If-None-Match and prev_revision")
        }
        return conditions.first
    }

    /// The request's body, at most `limit` bytes: a larger one is `tooLarge(limit)`, refused
    /// before any of it is read when its length is declared.
    private static func body(of request: Request, limit: Int, tooLarge: (Int) -> APIError) async throws -> ByteBuffer {
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit { throw tooLarge(limit) }
        do {
            return try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw tooLarge(limit)
        }
    }

    private static func valueTooLarge(_ limit: Int) -> APIError {
        APIError(.contentTooLarge, code: "value_too_large", "the value exceeds \(limit) bytes (--max-value-bytes)")
    }

    private func list(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let prefix = Array((query["prefix"].map(String.init) ?? "").utf8)
        let after = query["after"].map { Array(String($0).utf8) }
        var limit = configuration.listLimitMax
        if let text = query["limit"] {
            guard let asked = Int(text), asked > 0 else {
                throw APIError.badRequest("invalid_limit", "limit must be a positive integer (got \"\(text)\")")
            }
            limit = min(asked, configuration.listLimitMax)
        }
        let values: Bool
        switch query["values"] {
        case nil, "false": values = false
        case "true": values = true
        case let other?: throw APIError.badRequest("invalid_values", "values must be true or false (got \"\(other)\")")
        }
        let page = try await node.list(prefix: prefix, after: after, limit: limit, values: values, consistency: try RequestParameters.consistency(request))
        let cursor = page.nextAfter.map { String(decoding: $0, as: UTF8.self) }
        guard values else {
            return try Self.json(KeyListing(keys: page.entries.map { String(decoding: $0.key, as: UTF8.self) }, more: cursor != nil,
                                            cursor: cursor, revision: page.revision))
        }
        let kvs = page.entries.map { "{" + EntryJSON.fields(key: $0.key, $0.value) + "}" }.joined(separator: ",")
        let body = #"{"kvs":["# + kvs + #"],"more":\#(cursor != nil)"# + (cursor.map { #","cursor":"# + JSONText.quoted($0) } ?? "")
            + #","revision":\#(page.revision)}"# + "\n"
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.keyperRevision] = String(page.revision)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// `POST /v1/txn` (``TransactionAPI``): one that writes is one log entry; one that only
    /// reads is a read, linearizable unless `?consistency=stale`.
    private func transaction(_ request: Request) async throws -> Response {
        let body = try await Self.body(of: request, limit: configuration.transactionBytesMax, tooLarge: Self.transactionTooLarge)
        let limits = TransactionAPI.Limits(keyBytesMax: configuration.keyBytesMax, valueBytesMax: configuration.valueBytesMax,
                                           listLimitMax: configuration.listLimitMax)
        let transaction = try TransactionAPI.parse(body, limits: limits)
        let consistency = try RequestParameters.consistency(request)
        if consistency == .stale && !transaction.isReadOnly {
            throw APIError.badRequest("invalid_consistency", "a transaction that writes goes through the log: consistency=stale is for reads")
        }
        let idempotency = try Self.idempotency(request)
        // A transaction that only reads is safe to retry as it is: an Idempotency-Key changes nothing.
        guard !transaction.isReadOnly else {
            return TransactionAPI.response(try await node.read(transaction, consistency: consistency), of: transaction)
        }
        var write = KVWrite.transaction(transaction)
        write.idempotency = idempotency
        return try answer(try await node.write(write)) { result throws(APIError) in
            guard case .transaction(let done) = result else { throw APIError.internalError("a transaction answered with \(result)") }
            return TransactionAPI.response(done, of: transaction)
        }
    }

    private static func transactionTooLarge(_ limit: Int) -> APIError {
        APIError(.contentTooLarge, code: "txn_too_large", "the transaction exceeds \(limit) bytes (--max-value-bytes plus 64 KiB)")
    }

    // MARK: Membership

    private struct JoinRequest: Decodable {
        var nodeID: String
        var raftAddress: String
        var httpAddress: String?
        /// Add it as a learner that stays one (etcd's `member add --learner`).
        var learner: Bool?
        enum CodingKeys: String, CodingKey {
            case nodeID = "node_id", raftAddress = "raft_addr", httpAddress = "http_addr", learner
        }
    }

    private func join(_ request: Request) async throws -> Response {
        let body = try await request.body.collect(upTo: 64 * 1024)
        let join: JoinRequest
        do {
            join = try JSONDecoder().decode(JoinRequest.self, from: Data(buffer: body))
        } catch {
            throw APIError.badRequest("invalid_request",
                                      #"expected JSON {"node_id": "...", "raft_addr": "host:port", "http_addr": "host:port", "learner": false}"#)
        }
        var probe = configuration
        probe.nodeID = join.nodeID
        do { try probe.validate() } catch { throw APIError.badRequest("invalid_node_id", error.description) }
        guard HostPort(parsing: join.raftAddress) != nil else {
            throw APIError.badRequest("invalid_raft_addr", "raft_addr must be host:port (got \"\(join.raftAddress)\")")
        }
        if let http = join.httpAddress, !http.isEmpty, HostPort(parsing: http) == nil {
            throw APIError.badRequest("invalid_http_addr", "http_addr must be host:port (got \"\(http)\")")
        }
        let learner = join.learner ?? false
        switch try await node.join(nodeID: join.nodeID, raftAddress: join.raftAddress, httpAddress: join.httpAddress, learner: learner) {
        case .voter, .learner:
            return Response(status: .noContent)
        case .learnerPromoting:
            // Accepted, not finished: a member, but not yet one that counts for the quorum.
            let body = #"{"node_id":"# + JSONText.quoted(join.nodeID) + #","role":"learner","promotion":"pending","message":"# +
                JSONText.quoted("added as a learner; it becomes a voter once it has caught up with the log (see /v1/status)") + "}"
            return Response(status: .accepted, headers: [.contentType: "application/json"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
        }
    }

    private struct TransferRequest: Decodable {
        var target: String?
    }

    private func transfer(_ request: Request) async throws -> Response {
        let body = try await request.body.collect(upTo: 64 * 1024)
        var target = request.uri.queryParameters["target"].map(String.init)
        if body.readableBytes > 0 {
            do {
                target = try JSONDecoder().decode(TransferRequest.self, from: Data(buffer: body)).target ?? target
            } catch {
                throw APIError.badRequest("invalid_request", #"expected JSON {"target": "node-id"} or no body"#)
            }
        }
        let leader = try await node.transferLeadership(to: target)
        return try Self.json(["leader": leader])
    }

    private struct FaultsRequest: Decodable {
        var dropTo: [String]?
        var dropFrom: [String]?
        enum CodingKeys: String, CodingKey {
            case dropTo = "drop_to", dropFrom = "drop_from"
        }
    }

    /// Test-only partitions: `{"drop_to": ["node2"], "drop_from": ["node2"]}` cuts this node
    /// off from node2 in both directions; `DELETE` heals.
    private func faults(_ request: Request) async throws -> Response {
        let body = try await request.body.collect(upTo: 64 * 1024)
        let faults: FaultsRequest
        do {
            faults = try JSONDecoder().decode(FaultsRequest.self, from: Data(buffer: body))
        } catch {
            throw APIError.badRequest("invalid_request", #"expected JSON {"drop_to": [node ids], "drop_from": [node ids]}"#)
        }
        try node.setFaults(dropTo: Set(faults.dropTo ?? []), dropFrom: Set(faults.dropFrom ?? []))
        return Response(status: .noContent)
    }

    // MARK: Status

    private func status() async throws -> Response {
        try Self.json(try await node.statusWithRequests())
    }

    /// `{"status": "ok" | "unhealthy", "reason"}`, 200 or 503.
    private static func healthResponse(_ health: Health) -> Response {
        let body = #"{"status":"# + JSONText.quoted(health.healthy ? "ok" : "unhealthy")
            + #","reason":"# + JSONText.quoted(health.reason) + "}\n"
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: health.healthy ? .ok : .serviceUnavailable, headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func json(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(value)
        data.append(UInt8(ascii: "\n"))
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// A key's entry in JSON, as reads, listings and transactions answer it.
enum EntryJSON {
/// `"key", "value" | "value_base64", "create_revision", "mod_revision", "version"`.
static func fields(key: [UInt8], _ found: KVStore.VersionedValue) -> String {
    let revisions = found.revisions
    return #""key":"# + JSONText.quoted(String(decoding: key, as: UTF8.self)) + "," + value(found.value)
        + #","create_revision":\#(revisions.create),"mod_revision":\#(revisions.mod),"version":\#(revisions.version)"#
}

/// `"value": "…"` when the bytes are UTF-8, else `"value_base64": "…"`.
static func value(_ bytes: [UInt8]) -> String {
    if let text = String(validating: bytes, as: UTF8.self) { return #""value":"# + JSONText.quoted(text) }
    return #""value_base64":""# + Data(bytes).base64EncodedString() + "\""
}
}

/// `GET /v1/keys` response.
struct KeyListing: Codable, Sendable {
    var keys: [String]
    /// True when more keys follow; continue with `after=<cursor>`.
    var more: Bool
    var cursor: String?
    /// The store revision the page was read at.
    var revision: UInt64
}

/// Turns every error into the JSON error body, tells 405 from 404, and names the leader on
/// every response.
struct APIMiddleware<Context: RequestContext, Node: KeyValueNode>: RouterMiddleware {
    let node: Node

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await handle(request, path: request.uri.path, context: context, next: next)
    }

    func handle(_ request: Request, path: String, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = try Self.apiError(for: error, request: request).response(from: request, context: context)
        }
        if let leader = node.leaderHint {
            response.headers[.keyperLeader] = leader
        }
        node.metrics.recordRequest(route: Route(path: path)?.pattern ?? "other", method: request.method.rawValue,
                                   status: response.status.code, duration: ContinuousClock.now - started)
        return response
    }

    static func apiError(for error: any Error, request: Request) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as ReplicaError:
            return APIError(error)
        case let error as HTTPError where error.status == .notFound:
            if let route = Route(path: request.uri.path) {
                return .methodNotAllowed(request.method, allowed: route.methods)
            }
            return .notFound("no route for \(request.method.rawValue) \(request.uri.path)")
        case let error as any HTTPResponseError:
            return APIError(error.status, code: error.status.reasonPhrase.lowercased().replacingSpaces(),
                            "\(error)")
        default:
            return .internalError("\(error)")
        }
    }
}

extension String {
    fileprivate func replacingSpaces() -> String {
        String(map { $0 == " " ? "_" : $0 })
    }
}

/// Builds the responder: `/v1/keys` and `/v1/keys/{key}` (the hot path) go straight to their
/// handler through the same middleware; everything else through the route table. Matching a
/// catch-all route in the trie cost every key request a path split and a few allocations for
/// nothing: the key handler reads the raw path itself.
public struct KeyperRouter<Node: KeyValueNode>: HTTPResponderBuilder {
    let api: KeyperAPI<Node>
    let routes: Router<BasicRequestContext>

    public func buildResponder() -> KeyperResponder<Node> {
        KeyperResponder(api: api, routes: routes.buildResponder(), middleware: APIMiddleware(node: api.node))
    }
}

public struct KeyperResponder<Node: KeyValueNode>: HTTPResponder {
    let api: KeyperAPI<Node>
    let routes: RouterResponder<BasicRequestContext>
    let middleware: APIMiddleware<BasicRequestContext, Node>

    public func respond(to request: Request, context: BasicRequestContext) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix(KeyperAPI<Node>.keyPrefix) || path == KeyperAPI<Node>.keysPath else {
            return try await routes.respond(to: request, context: context)
        }
        return try await middleware.handle(request, path: path, context: context) { request, _ in
            try await api.handleKeys(request, path: path)
        }
    }
}

extension String {
    /// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
    fileprivate func trimmingASCIISpaces() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let start = firstIndex(where: { !isSpace($0) }) else { return "" }
        let end = lastIndex(where: { !isSpace($0) })!
        return self[start...end]
    }
}

/// Query parameters several routes share (not tied to a node type).
enum RequestParameters {
    /// "500ms", "30s", "5m" or a bare number of seconds, in milliseconds.
    static func milliseconds(_ text: String) -> Int? {
        for (suffix, factor) in [("ms", 1), ("s", 1_000), ("m", 60_000)] where text.hasSuffix(suffix) {
            return Int(text.dropLast(suffix.count)).flatMap { $0 >= 0 ? $0 * factor : nil }
        }
        return Int(text).flatMap { $0 >= 0 ? $0 * 1_000 : nil }
    }

    /// `?consistency=linearizable|stale` (default linearizable).
    static func consistency(_ request: Request) throws(APIError) -> ReadConsistency {
        // Most requests carry no query string: skip parsing one.
        guard request.uri.query != nil, let text = request.uri.queryParameters["consistency"] else { return .linearizable }
        guard let consistency = ReadConsistency(rawValue: String(text)) else {
            throw APIError.badRequest("invalid_consistency", "consistency must be linearizable or stale (got \"\(text)\")")
        }
        return consistency
    }
}
