import FoundationEssentials
import NIOHTTP1

/// A key's value and revisions, as a read saw them.
public struct KeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    public var createRevision: UInt64
    public var modRevision: UInt64
    public var version: UInt64
    /// The value as text, when it is UTF-8.
    public var text: String? { String(validating: value, as: UTF8.self) }
}

/// What a write did.
public struct WriteResult: Sendable, Equatable {
    /// The store revision after the write.
    public var revision: UInt64
    /// A retry answered from the cluster's memory of the first attempt (`Idempotency-Key`).
    public var replayed: Bool
}

/// A page of a listing.
public struct KeyPage: Sendable {
    public var entries: [KeyValue]
    /// The last key of the page when more follow: pass it as `after`.
    public var cursor: String?
    /// The store revision the page was read at.
    public var revision: UInt64
}

/// A condition a write applies under (checked when applied, in log order).
public enum WriteCondition: Sendable, Equatable {
    /// The key's mod revision must be this (0: the key must not exist).
    case modRevision(UInt64)
    /// The key must exist.
    case exists
    /// The key must not exist.
    case absent
}

/// How fresh a read must be.
public enum ReadConsistency: String, Sendable {
    /// Reflects every write acknowledged before the read began.
    case linearizable
    /// The answering node's copy, possibly behind.
    case stale
}

extension KeyperClient {
    private struct EntryBody: Decodable {
        var key: String
        var value: String?
        var value_base64: String?
        var create_revision: UInt64
        var mod_revision: UInt64
        var version: UInt64

        var entry: KeyValue {
            let bytes = value.map { Array($0.utf8) } ?? value_base64.flatMap { Data(base64Encoded: $0).map(Array.init) } ?? []
            return KeyValue(key: key, value: bytes, createRevision: create_revision, modRevision: mod_revision, version: version)
        }
    }

    /// The key's value and revisions, or nil when it does not exist.
    ///
    /// ```swift
    /// let config = try await client.get("app/config")?.text
    /// ```
    public func get(_ key: String, consistency: ReadConsistency = .linearizable) async throws(KeyperError) -> KeyValue? {
        let answer = try await send(.GET, Self.keyPath(key) + "?format=json" + (consistency == .stale ? "&consistency=stale" : ""))
        if answer.status == 404, answer.error?.code == .keyNotFound { return nil }
        if let error = answer.error { throw error }
        return try decode(EntryBody.self, from: answer).entry
    }

    /// Writes the key; committed on a majority and durable when this returns. `lease`
    /// attaches the key to a lease; `idempotencyKey` makes a retry of the same write
    /// exactly-once (the cluster answers a retry it remembers as the first attempt).
    ///
    /// Throws ``KeyperError`` with ``KeyperError/isPreconditionFailed`` when the condition did not hold.
    @discardableResult
    public func put(_ key: String, value: [UInt8], condition: WriteCondition? = nil, lease: UInt64? = nil,
                    idempotencyKey: String? = nil) async throws(KeyperError) -> WriteResult {
        var path = Self.keyPath(key)
        if let lease { path += "?lease=\(lease)" }
        let answer = try await request(.PUT, path, body: value, headers: Self.headers(condition, idempotencyKey) + [("Content-Type", "application/octet-stream")])
        return Self.written(answer)
    }

    /// Deletes the key (no error when it was absent, unless a condition says so).
    @discardableResult
    public func delete(_ key: String, condition: WriteCondition? = nil, idempotencyKey: String? = nil) async throws(KeyperError) -> WriteResult {
        Self.written(try await request(.DELETE, Self.keyPath(key), headers: Self.headers(condition, idempotencyKey)))
    }

    /// Deletes every key that starts with `prefix`, in one revision; an empty prefix only with `all`.
    public func deletePrefix(_ prefix: String, all: Bool = false) async throws(KeyperError) -> (deleted: Int, revision: UInt64) {
        struct Body: Decodable { var deleted: Int; var revision: UInt64 }
        let answer = try await request(.DELETE, "/v1/keys?prefix=" + Self.query(prefix) + (all ? "&all=true" : ""))
        let body = try decode(Body.self, from: answer)
        return (body.deleted, body.revision)
    }

    /// One page of the keys under `prefix` after `after`, in byte order, with their values
    /// when `values` (else each value is empty).
    public func list(prefix: String = "", after: String? = nil, limit: Int? = nil, values: Bool = false,
                     consistency: ReadConsistency = .linearizable) async throws(KeyperError) -> KeyPage {
        var path = "/v1/keys?prefix=" + Self.query(prefix)
        if let after { path += "&after=" + Self.query(after) }
        if let limit { path += "&limit=\(limit)" }
        if values { path += "&values=true" }
        if consistency == .stale { path += "&consistency=stale" }
        let answer = try await request(.GET, path)
        if values {
            struct Body: Decodable { var kvs: [EntryBody]; var cursor: String?; var revision: UInt64 }
            let body = try decode(Body.self, from: answer)
            return KeyPage(entries: body.kvs.map(\.entry), cursor: body.cursor, revision: body.revision)
        }
        struct Body: Decodable { var keys: [String]; var cursor: String?; var revision: UInt64 }
        let body = try decode(Body.self, from: answer)
        return KeyPage(entries: body.keys.map { KeyValue(key: $0, value: [], createRevision: 0, modRevision: 0, version: 0) },
                       cursor: body.cursor, revision: body.revision)
    }

    /// Runs a transaction (`POST /v1/txn`) given as its JSON body; answers its JSON result.
    public func transaction(json body: [UInt8], idempotencyKey: String? = nil) async throws(KeyperError) -> [UInt8] {
        try await request(.POST, "/v1/txn", body: body, headers: idempotencyKey.map { [("Idempotency-Key", $0)] } ?? []).body
    }

    private static func headers(_ condition: WriteCondition?, _ idempotencyKey: String?) -> [(String, String)] {
        var headers: [(String, String)] = []
        switch condition {
        case .modRevision(0), .absent: headers.append(("If-None-Match", "*"))
        case .modRevision(let revision): headers.append(("If-Match", "\"\(revision)\""))
        case .exists: headers.append(("If-Match", "*"))
        case nil: break
        }
        if let idempotencyKey { headers.append(("Idempotency-Key", idempotencyKey)) }
        return headers
    }

    private static func written(_ answer: Answer) -> WriteResult {
        WriteResult(revision: answer.headers.first(name: "X-Keyper-Revision").flatMap { UInt64($0) } ?? 0,
                    replayed: answer.headers.first(name: "Idempotent-Replayed") == "true")
    }
}
