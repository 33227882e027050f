import FoundationEssentials
import HTTPTypes
import Hummingbird
import KeyperStorage
import NIOCore

/// The JSON of a lease: `{"id", "ttl_seconds", "remaining_seconds", "keys"}` (`keys` when
/// one lease was asked for). Ids are integers below 2^53, so JavaScript clients read them
/// exactly.
enum LeaseJSON {
    static func encode(_ lease: LeaseStatus) -> String {
        let remaining = Double(lease.remaining.components.seconds) + Double(lease.remaining.components.attoseconds) / 1e18
        var body = #"{"id":\#(lease.id),"ttl_seconds":\#(lease.ttlSeconds),"remaining_seconds":\#((remaining * 1000).rounded() / 1000)"#
        if let keys = lease.keys {
            body += #","keys":["# + keys.map { JSONText.quoted(String(decoding: $0, as: UTF8.self)) }.joined(separator: ",") + "]"
        }
        return body + "}\n"
    }

    private struct Body: Decodable {
        var id: UInt64
        var ttl_seconds: UInt64
        var remaining_seconds: Double
        var keys: [String]?
    }

    /// Reads ``encode(_:)`` (a leader's answer to a forwarded request).
    static func decode(_ bytes: [UInt8]) throws -> LeaseStatus {
        do {
            let body = try JSONDecoder().decode(Body.self, from: Data(bytes))
            return LeaseStatus(id: body.id, ttlSeconds: body.ttl_seconds, remaining: .milliseconds(Int64(body.remaining_seconds * 1000)),
                               keys: body.keys?.map { Array($0.utf8) })
        } catch {
            throw APIError(.badGateway, code: "leader_error", "the leader's answer is not a lease: \(error)")
        }
    }
}

/// `/v1/leases`: grant, list, read, keep alive and revoke leases (docs/leases.md).
enum LeaseAPI {
    /// The largest id a lease gets when the client does not choose one (2^53 − 1).
    static let generatedIDMax: UInt64 = (1 << 53) - 1

    /// `POST /v1/leases {"ttl": "10s", "id": 7}` (`id` optional) → `201 {"id", "ttl_seconds"}`.
    static func grant(_ request: Request, node: some KeyValueNode) async throws -> Response {
        let body = try await request.body.collect(upTo: 4096)
        let (ttl, id) = try parseGrant(Array(buffer: body), ttlSecondsMin: node.leaseTTLSecondsMin)
        let granted = try await grant(ttlSeconds: ttl, id: id, node: node)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.location] = "/v1/leases/\(granted)"
        return Response(status: .created, headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: #"{"id":\#(granted),"ttl_seconds":\#(ttl)}"# + "\n")))
    }

    /// Grants a lease; with no `id`, under a random one (another on the rare collision).
    static func grant(ttlSeconds: UInt64, id: UInt64?, node: some KeyValueNode) async throws -> UInt64 {
        for _ in 0..<4 {
            let chosen = id ?? UInt64.random(in: 1...generatedIDMax)
            switch try await node.write(KVWrite(.grantLease(id: chosen, ttlSeconds: ttlSeconds))) {
            case .applied: return chosen
            case .leaseExists where id == nil: continue
            case .leaseExists: throw APIError(.conflict, code: "lease_exists", "lease \(chosen) exists already")
            case let other: throw APIError.internalError("a lease grant answered with \(other)")
            }
        }
        throw APIError.internalError("four random lease ids were all taken")
    }

    /// The TTL and optional id of a grant's body.
    static func parseGrant(_ body: [UInt8], ttlSecondsMin: UInt64) throws(APIError) -> (ttl: UInt64, id: UInt64?) {
        let document: JSONValue
        do { document = try JSONValue.parse(body) } catch {
            throw APIError.badRequest("invalid_json", "the body is not JSON: \(error)")
        }
        guard case .object(let fields) = document else {
            throw APIError.badRequest("invalid_lease", #"the body must be an object such as {"ttl": "10s"}"#)
        }
        var ttl: UInt64?
        var id: UInt64?
        for (name, value) in fields {
            switch name {
            case "ttl": ttl = try ttlSeconds(value, minimum: ttlSecondsMin)
            case "id":
                guard case .number(let text) = value, let number = UInt64(text), number > 0 else {
                    throw APIError.badRequest("invalid_lease_id", "id must be a positive integer (got \(value.kind))")
                }
                id = number
            default:
                throw APIError.badRequest("invalid_lease", "unknown field \(JSONText.quoted(name)) (known: ttl, id)")
            }
        }
        guard let ttl else { throw APIError.badRequest("invalid_ttl", #"a lease needs a ttl, such as {"ttl": "10s"}"#) }
        return (ttl, id)
    }

    /// A TTL as JSON: a number of seconds, or a duration string ("10s", "5m", "1h", "1500ms",
    /// rounded up to whole seconds).
    static func ttlSeconds(_ value: JSONValue, minimum: UInt64) throws(APIError) -> UInt64 {
        switch value {
        case .number(let text): return try ttlSeconds(text, minimum: minimum)
        case .string(let bytes): return try ttlSeconds(String(decoding: bytes, as: UTF8.self), minimum: minimum)
        default: throw APIError.badRequest("invalid_ttl", "ttl must be a duration such as \"10s\" or a number of seconds (got \(value.kind))")
        }
    }

    /// A TTL as text (`?ttl=` or the body's string): "10s", "5m", "1h", "1500ms" or seconds.
    static func ttlSeconds(_ text: String, minimum: UInt64) throws(APIError) -> UInt64 {
        var seconds: UInt64?
        for (suffix, factor) in [("ms", 0), ("s", 1), ("m", 60), ("h", 3600)] where text.hasSuffix(suffix) {
            guard let number = UInt64(text.dropLast(suffix.count)) else { break }
            seconds = factor == 0 ? (number + 999) / 1000 : number.multipliedReportingOverflow(by: UInt64(factor)).overflow ? .max : number * UInt64(factor)
            break
        }
        if seconds == nil, let number = UInt64(text) { seconds = number }
        guard let seconds else {
            throw APIError.badRequest("invalid_ttl", "ttl must be a duration such as 10s, 5m or 1h, or a number of seconds (got \"\(text)\")")
        }
        guard seconds >= minimum else {
            throw APIError.badRequest("invalid_ttl", "ttl \(text) is below the minimum of \(minimum)s (one and a half election timeouts: a shorter lease could expire during a leader change)")
        }
        guard seconds <= LeaseService.ttlSecondsMax else {
            throw APIError.badRequest("invalid_ttl", "ttl \(text) is above the maximum of \(LeaseService.ttlSecondsMax)s (a year)")
        }
        return seconds
    }

    /// A lease id from the path or a query (`?lease=`).
    static func id(_ text: Substring) throws(APIError) -> UInt64 {
        guard let id = UInt64(text), id > 0 else {
            throw APIError.badRequest("invalid_lease_id", "a lease id is a positive integer (got \"\(text)\")")
        }
        return id
    }

    /// `GET /v1/leases` → `{"leases": [{"id", "ttl_seconds", "keys"}]}` (`keys`: how many).
    static func list(consistency: ReadConsistency, node: some KeyValueNode) async throws -> Response {
        let leases = try await node.leases(consistency: consistency)
        let items = leases.map { #"{"id":\#($0.id),"ttl_seconds":\#($0.ttlSeconds),"keys":\#($0.keyCount)}"# }
        return json(#"{"leases":["# + items.joined(separator: ",") + "]}\n")
    }

    /// `GET /v1/leases/{id}`.
    static func show(_ id: UInt64, node: some KeyValueNode) async throws -> Response {
        json(LeaseJSON.encode(try await node.lease(id)))
    }

    /// `POST /v1/leases/{id}/keepalive`.
    static func keepAlive(_ id: UInt64, node: some KeyValueNode) async throws -> Response {
        var status = try await node.keepAlive(lease: id)
        status.keys = nil
        return json(LeaseJSON.encode(status))
    }

    /// `DELETE /v1/leases/{id}` → `{"id", "deleted", "revision"}`: its keys deleted in one revision.
    static func revoke(_ id: UInt64, node: some KeyValueNode) async throws -> Response {
        switch try await node.write(KVWrite(.revokeLease(id: id))) {
        case let .revoked(count, revision):
            var response = json(#"{"id":\#(id),"deleted":\#(count),"revision":\#(revision)}"# + "\n")
            response.headers[.keyperRevision] = String(revision)
            return response
        case .leaseNotFound: throw APIError.leaseNotFound(id)
        case let other: throw APIError.internalError("a lease revoke answered with \(other)")
        }
    }

    private static func json(_ body: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
