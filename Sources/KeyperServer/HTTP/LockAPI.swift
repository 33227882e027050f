import HTTPTypes
import Hummingbird
import KeyperStorage
import NIOCore

/// Locks and elections, served by any node from leases, conditional writes, listings and
/// watches (etcd's concurrency recipes, run server-side so a curl user gets them too).
///
/// A candidate for the lock (or election) `N` is the key `_keyper/locks/N/<lease id in hex>`
/// (`_keyper/elections/…`), created with the candidate's lease: its create revision is its
/// place in line. The candidate with the lowest create revision holds the lock; each other
/// waits for the deletion of the one just ahead of it (no thundering herd). The create
/// revision is the fencing token: each holder's is larger than every earlier holder's. A
/// holder's lease expiring deletes its key, and the next in line takes over.
enum LockAPI {
    enum Kind: Sendable {
        case lock
        case election

        var prefix: String {
            switch self {
            case .lock: "_keyper/locks/"
            case .election: "_keyper/elections/"
            }
        }

        var noun: String { self == .lock ? "lock" : "election" }
    }

    /// How long a request waits for its turn by default, and at most.
    static let waitDefault = Duration.seconds(30)
    static let waitMax = Duration.seconds(300)
    /// Candidates read per page of a listing.
    static let candidatesPerPage = 10_000

    /// A lock's holder or an election's leader.
    struct Holder: Sendable {
        var key: [UInt8]
        var revision: UInt64
        var lease: UInt64
        var value: [UInt8]
        var waiters: Int
    }

    /// 1-128 letters, digits, `.`, `_`, `-` or `:` (a name is one path segment, and never a
    /// prefix of another name's candidates).
    static func name(_ text: String, kind: Kind) throws(APIError) -> String {
        let allowed = text.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || ".-_:".utf8.contains(byte)
        }
        guard allowed, (1...128).contains(text.utf8.count) else {
            throw APIError.badRequest("invalid_name", "a \(kind.noun) name is 1-128 letters, digits, '.', '_', '-' or ':' (got \"\(text)\")")
        }
        return text
    }

    static func candidateKey(kind: Kind, name: String, lease: UInt64) -> [UInt8] {
        let hex = String(lease, radix: 16)
        return Array((kind.prefix + name + "/" + String(repeating: "0", count: 16 - hex.count) + hex).utf8)
    }

    static func lease(ofCandidate key: [UInt8]) -> UInt64 {
        UInt64(String(decoding: key.suffix(16), as: UTF8.self), radix: 16) ?? 0
    }

    /// The candidates in line, by create revision, and the store revision of the listing (every
    /// page of it: the holder may be anywhere in key order, which is lease order).
    static func candidates(kind: Kind, name: String, node: some KeyValueNode,
                           consistency: ReadConsistency = .linearizable) async throws -> (candidates: [Holder], revision: UInt64) {
        let prefix = Array((kind.prefix + name + "/").utf8)
        var entries: [(key: [UInt8], value: KVStore.VersionedValue)] = []
        var after: [UInt8]?
        var revision: UInt64 = 0
        repeat {
            // Later pages are read at least as fresh as the first (they may see later
            // candidates, which queue behind the ones already seen).
            let page = try await node.list(prefix: prefix, after: after, limit: candidatesPerPage, values: true,
                                           consistency: after == nil ? consistency : .stale)
            if after == nil { revision = page.revision }
            entries += page.entries
            after = page.nextAfter
        } while after != nil
        let sorted = entries.sorted { $0.value.revisions.create < $1.value.revisions.create }
        let holders = sorted.map { entry in
            Holder(key: entry.key, revision: entry.value.revisions.create, lease: lease(ofCandidate: entry.key), value: entry.value.value,
                   waiters: max(0, sorted.count - 1))
        }
        return (holders, revision)
    }

    /// Joins the line under `lease` (or finds this lease already in it) and waits, up to
    /// `wait`, for its turn. Throws `409 lock_held` (naming the holder) when the wait ends
    /// first, after leaving the line; `409 lock_lost` if the lease ended while waiting.
    static func acquire(kind: Kind, name: String, lease: UInt64, value: [UInt8], wait: Duration, keepPlace: Bool = false,
                        node: some KeyValueNode) async throws -> Holder {
        let key = candidateKey(kind: kind, name: name, lease: lease)
        var joined = false
        switch try await node.write(KVWrite(.put(key: key, value: value), condition: .modRevision(0), lease: lease)) {
        case .applied: joined = true
        case .conditionFailed: break  // this lease is in line already: its place stands
        case .leaseNotFound: throw APIError.leaseNotFound(lease)
        case let other: throw APIError.internalError("a \(kind.noun) candidate's put answered with \(other)")
        }
        let deadline = ContinuousClock.now + wait
        while true {
            let (line, revision) = try await candidates(kind: kind, name: name, node: node)
            guard let position = line.firstIndex(where: { $0.key == key }) else {
                throw APIError(.conflict, code: "\(kind.noun)_lost",
                               "lease \(lease) ended (expired or revoked) while waiting for the \(kind.noun) \(name)")
            }
            if position == 0 { return line[0] }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                if joined && !keepPlace { _ = try? await node.write(KVWrite(.delete(key: key))) }
                var error = APIError(.conflict, code: kind == .lock ? "lock_held" : "election_has_leader",
                                     "the \(kind.noun) \(name) is held under lease \(line[0].lease) (revision \(line[0].revision))")
                error.numbers = [("holder_lease", line[0].lease), ("holder_revision", line[0].revision)]
                throw error
            }
            // Wait for the one just ahead to go (or change), then look again.
            let ahead = line[position - 1].key
            try await WatchAPI.waitForChange(of: ahead, since: revision + 1, timeout: remaining, feed: node.changes) {
                try await node.get(ahead, consistency: .stale).value?.revisions.mod
            }
        }
    }

    /// `{"name", "key", "revision", "lease", "waiters"}`, with `"value"` for an election.
    static func json(_ holder: Holder, kind: Kind, name: String) -> String {
        var body = #"{"name":"# + JSONText.quoted(name) + #","key":"# + JSONText.quoted(String(decoding: holder.key, as: UTF8.self))
            + #","revision":\#(holder.revision),"lease":\#(holder.lease),"waiters":\#(holder.waiters)"#
        if kind == .election { body += "," + EntryJSON.value(holder.value) }
        return body + "}\n"
    }

    private static func respond(_ body: String, revision: UInt64? = nil) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if let revision { headers[.keyperRevision] = String(revision) }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// The lease of a request: `?lease=ID`, or `?ttl=` for a new one (then granted here).
    private static func lease(of request: Request, node: some KeyValueNode) async throws -> (id: UInt64, granted: Bool) {
        let query = request.uri.queryParameters
        switch (query["lease"], query["ttl"]) {
        case let (lease?, nil): return (try LeaseAPI.id(lease), false)
        case let (nil, ttl?):
            let seconds = try LeaseAPI.ttlSeconds(String(ttl), minimum: node.leaseTTLSecondsMin)
            return (try await LeaseAPI.grant(ttlSeconds: seconds, id: nil, node: node), true)
        case (nil, nil): throw APIError.badRequest("missing_lease", "give lease=ID (a lease you keep alive) or ttl=10s (a new lease)")
        default: throw APIError.badRequest("conflicting_lease", "give lease or ttl, not both")
        }
    }

    /// `?wait=`: how long to wait for the turn (0: try once).
    private static func wait(_ request: Request) throws(APIError) -> Duration {
        guard let text = request.uri.queryParameters["wait"] else { return waitDefault }
        guard let milliseconds = RequestParameters.milliseconds(String(text)), milliseconds <= 300_000 else {
            throw APIError.badRequest("invalid_wait", "wait must be a duration such as 0, 500ms, 30s or 5m, at most 5m (got \"\(text)\")")
        }
        return .milliseconds(milliseconds)
    }

    /// `POST /v1/locks/{name}` or `/v1/elections/{name}` (the body: the candidate's value):
    /// waits for the turn.
    static func campaign(_ request: Request, kind: Kind, name: String, valueBytesMax: Int, node: some KeyValueNode) async throws -> Response {
        let wait = try wait(request)
        let keepPlace: Bool
        switch request.uri.queryParameters["keep_place"] {
        case nil, "false": keepPlace = false
        case "true": keepPlace = true
        case let other?: throw APIError.badRequest("invalid_keep_place", "keep_place must be true or false (got \"\(other)\")")
        }
        let body = try await request.body.collect(upTo: valueBytesMax)
        let (lease, granted) = try await lease(of: request, node: node)
        do {
            let holder = try await acquire(kind: kind, name: name, lease: lease, value: Array(buffer: body), wait: wait,
                                           keepPlace: keepPlace && !granted, node: node)
            return respond(json(holder, kind: kind, name: name), revision: holder.revision)
        } catch {
            if granted { _ = try? await node.write(KVWrite(.revokeLease(id: lease))) }
            throw error
        }
    }

    /// `GET`: the holder (leader), or 404.
    static func show(_ request: Request, kind: Kind, name: String, node: some KeyValueNode) async throws -> Response {
        let (line, revision) = try await candidates(kind: kind, name: name, node: node,
                                                    consistency: RequestParameters.consistency(request))
        guard let holder = line.first else {
            throw APIError(.notFound, code: kind == .lock ? "lock_not_held" : "no_election_leader", "no one holds the \(kind.noun) \(name)")
        }
        return respond(json(holder, kind: kind, name: name), revision: revision)
    }

    /// `DELETE ?lease=ID`: leaves the line (releases the lock, resigns).
    static func release(_ request: Request, kind: Kind, name: String, node: some KeyValueNode) async throws -> Response {
        guard let text = request.uri.queryParameters["lease"] else {
            throw APIError.badRequest("missing_lease", "give lease=ID: the lease the \(kind.noun) was taken with")
        }
        let key = candidateKey(kind: kind, name: name, lease: try LeaseAPI.id(text))
        switch try await node.write(KVWrite(.delete(key: key), condition: .exists)) {
        case .applied(let revision, _):
            var headers = HTTPFields()
            headers[.keyperRevision] = String(revision)
            return Response(status: .noContent, headers: headers)
        case .conditionFailed:
            throw APIError(.notFound, code: "not_a_candidate", "lease \(text) neither holds nor waits for the \(kind.noun) \(name)")
        case let other: throw APIError.internalError("a \(kind.noun) release answered with \(other)")
        }
    }

    /// `PUT /v1/elections/{name}?lease=ID`: the leader announces a new value (etcd's
    /// proclaim); anyone else gets `409 not_election_leader`.
    static func proclaim(_ request: Request, name: String, valueBytesMax: Int, node: some KeyValueNode) async throws -> Response {
        guard let text = request.uri.queryParameters["lease"] else {
            throw APIError.badRequest("missing_lease", "give lease=ID: the lease the leader campaigned with")
        }
        let lease = try LeaseAPI.id(text)
        let value = Array(buffer: try await request.body.collect(upTo: valueBytesMax))
        let key = candidateKey(kind: .election, name: name, lease: lease)
        let (line, _) = try await candidates(kind: .election, name: name, node: node)
        let notLeader = APIError(.conflict, code: "not_election_leader", "lease \(lease) does not lead the election \(name)")
        // Leading now, and the key unchanged since: no one can get ahead of an existing key,
        // so it still leads when the put applies.
        guard let first = line.first, first.key == key,
              let current = try await node.get(key, consistency: .linearizable).value?.revisions.mod else { throw notLeader }
        switch try await node.write(KVWrite(.put(key: key, value: value), condition: .modRevision(current), lease: lease)) {
        case .applied(let revision, _):
            var holder = first
            holder.value = value
            return respond(json(holder, kind: .election, name: name), revision: revision)
        case .conditionFailed, .leaseNotFound: throw notLeader
        case let other: throw APIError.internalError("a proclaim answered with \(other)")
        }
    }
}
