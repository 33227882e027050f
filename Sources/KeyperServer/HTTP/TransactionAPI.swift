import FoundationEssentials
import HTTPTypes
import Hummingbird
import KeyperStorage
import NIOCore

/// `POST /v1/txn`: the JSON request, its checks, and the JSON answer.
///
/// ```json
/// {"compare": [{"key": "k", "target": "mod_revision", "op": "==", "value": 7}],
///  "success": [{"op": "put", "key": "k", "value": "v"}, {"op": "get", "key": "k"}],
///  "failure": [{"op": "get", "key": "k"}]}
/// ```
///
/// Targets: `mod_revision`, `create_revision`, `version` (a number), `value` (`value` or
/// `value_base64`), `exists` (a Boolean, with `==` or `!=`). Operations: `put` (`key`, `value`
/// or `value_base64`), `delete` (`key`), `delete_prefix` (`prefix`; an empty one needs
/// `"all": true`), `get` (`key`), `list` (`prefix`, `after`, `limit`, `values`). Unknown fields
/// are refused, so a misspelt `"sucess"` is an error rather than an empty branch. A field set
/// to `null` counts as absent. The body is read by ``JSONValue``, not `JSONDecoder`.
enum TransactionAPI {
    /// Comparisons, and operations in each branch, one transaction may have (etcd's default).
    static let partsMax = 128

    struct Limits {
        var keyBytesMax: Int
        var valueBytesMax: Int
        var listLimitMax: Int
    }

    /// The transaction a request body asks for, checked: `400 invalid_txn` naming the field,
    /// `413 txn_too_large` for too many parts or a value over the limit.
    static func parse(_ body: ByteBuffer, limits: Limits) throws(APIError) -> KVTransaction {
        let document: JSONValue
        do {
            document = try JSONValue.parse(Array(buffer: body))
        } catch {
            throw invalid("", "the body is not a JSON transaction: \(error)")
        }
        let request = try Fields(document, at: "", known: Self.requestFields)
        var transaction = KVTransaction()
        var parts: [String: [JSONValue]] = [:]
        for name in ["compare", "success", "failure"] {
            let elements = try request.array(name) ?? []
            guard elements.count <= partsMax else {
                throw APIError(.contentTooLarge, code: "txn_too_large",
                               "\(name) has \(elements.count) entries; a transaction takes at most \(partsMax) in each")
            }
            parts[name] = elements
        }
        for (position, element) in (parts["compare"] ?? []).enumerated() {
            transaction.compare.append(try comparison(element, at: "compare[\(position)]", limits: limits))
        }
        func branch(_ name: String) throws(APIError) -> [KVTransactionOperation] {
            var operations: [KVTransactionOperation] = []
            for (position, element) in (parts[name] ?? []).enumerated() {
                operations.append(try operation(element, at: "\(name)[\(position)]", limits: limits))
            }
            return operations
        }
        transaction.success = try branch("success")
        transaction.failure = try branch("failure")
        if let conflict = transaction.conflict() { throw invalid("", conflict) }
        return transaction
    }

    /// `{"succeeded", "revision", "results": [...]}`, one result per operation of the branch that ran.
    static func response(_ result: KVTransactionResult, of transaction: KVTransaction) -> Response {
        let operations = result.succeeded ? transaction.success : transaction.failure
        var body = #"{"succeeded":\#(result.succeeded),"revision":\#(result.revision),"results":["#
        body.reserveCapacity(64 + 96 * operations.count)
        for (position, (operation, operationResult)) in zip(operations, result.results).enumerated() {
            if position > 0 { body += "," }
            appendResult(operation, operationResult, to: &body)
        }
        body += "]}\n"
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.keyperRevision] = String(result.revision)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// One operation's result, appended to `out`.
    private static func appendResult(_ operation: KVTransactionOperation, _ result: KVTransactionOperationResult, to out: inout String) {
        func text(_ bytes: [UInt8]) -> String { JSONText.quoted(String(decoding: bytes, as: UTF8.self)) }
        func revisions(_ revisions: KeyRevisions) {
            out += #","create_revision":\#(revisions.create),"mod_revision":\#(revisions.mod),"version":\#(revisions.version)}"#
        }
        switch (operation, result) {
        case let (.put(key, _), .put(put)):
            out += #"{"op":"put","key":"#
            out += text(key)
            revisions(put)
        case let (.delete(key), .delete(count)):
            out += #"{"op":"delete","key":"# + text(key) + #","deleted":\#(count)}"#
        case let (.deletePrefix(prefix), .deletePrefix(count)):
            out += #"{"op":"delete_prefix","prefix":"# + text(prefix) + #","deleted":\#(count)}"#
        case let (.get(key), .get(found)):
            guard let found else {
                out += #"{"op":"get","key":"# + text(key) + #","found":false}"#
                return
            }
            out += #"{"op":"get","found":true,"# + EntryJSON.fields(key: key, found) + "}"
        case let (.list(prefix, _, _, values), .list(entries, nextAfter)):
            out += #"{"op":"list","prefix":"# + text(prefix) + #","kvs":["#
            for (position, (key, found)) in entries.enumerated() {
                if position > 0 { out += "," }
                if values {
                    out += "{" + EntryJSON.fields(key: key, found) + "}"
                } else {
                    out += #"{"key":"# + text(key)
                    revisions(found.revisions)
                }
            }
            out += #"],"more":\#(nextAfter != nil)"# + (nextAfter.map { #","cursor":"# + text($0) } ?? "") + "}"
        default:
            preconditionFailure("result \(result) does not answer operation \(operation)")
        }
    }

    // MARK: The request body

    /// The fields each object may have (looked up by a scan: a handful each).
    private static let requestFields = ["compare", "success", "failure"]
    private static let comparisonFields = ["key", "target", "op", "value", "value_base64"]
    private static let operationFields = ["op", "key", "prefix", "value", "value_base64", "after", "limit", "values", "all"]

    private static func invalid(_ field: String, _ message: String) -> APIError {
        .badRequest("invalid_txn", field.isEmpty ? message : "\(field): \(message)")
    }

    private static func tooLarge(_ field: String, _ message: String) -> APIError {
        APIError(.contentTooLarge, code: "txn_too_large", "\(field): \(message)")
    }

    /// An object's members, refusing any not in `known` (and a member given twice). Objects
    /// here have a handful of members: they are looked up by a scan, not hashed.
    private struct Fields {
        let members: [(key: String, value: JSONValue)]
        let path: String

        init(_ value: JSONValue, at path: String, known: [String]) throws(APIError) {
            guard case .object(let pairs) = value else { throw invalid(path, "must be an object (got \(value.kind))") }
            for (position, (key, _)) in pairs.enumerated() {
                guard known.contains(key) else {
                    throw invalid(Self.name(path, key), "unknown field (expected one of \(known.sorted().joined(separator: ", ")))")
                }
                guard !pairs[..<position].contains(where: { $0.key == key }) else { throw invalid(Self.name(path, key), "given twice") }
            }
            members = pairs
            self.path = path
        }

        static func name(_ path: String, _ key: String) -> String { path.isEmpty ? key : path + "." + key }
        func name(_ key: String) -> String { Self.name(path, key) }

        subscript(_ key: String) -> JSONValue? {
            guard let value = members.first(where: { $0.key == key })?.value, value != .null else { return nil }
            return value
        }

        /// A string's UTF-8 bytes.
        func bytes(_ key: String) throws(APIError) -> [UInt8]? {
            guard let value = self[key] else { return nil }
            guard case .string(let bytes) = value else { throw invalid(name(key), "must be a string (got \(value.kind))") }
            return bytes
        }

        func requiredBytes(_ key: String) throws(APIError) -> [UInt8] {
            guard let bytes = try bytes(key) else { throw invalid(name(key), "is required") }
            return bytes
        }

        func requiredString(_ key: String) throws(APIError) -> String {
            String(decoding: try requiredBytes(key), as: UTF8.self)
        }

        func bool(_ key: String) throws(APIError) -> Bool? {
            guard let value = self[key] else { return nil }
            guard case .bool(let flag) = value else { throw invalid(name(key), "must be true or false (got \(value.kind))") }
            return flag
        }

        func array(_ key: String) throws(APIError) -> [JSONValue]? {
            guard let value = self[key] else { return nil }
            guard case .array(let elements) = value else { throw invalid(name(key), "must be an array (got \(value.kind))") }
            return elements
        }

        /// A whole number, 0 or more.
        func number(_ key: String, what: String) throws(APIError) -> UInt64? {
            guard let value = self[key] else { return nil }
            guard case .number(let text) = value, let number = UInt64(text) else {
                let got = if case .number(let text) = value { text } else { value.kind }
                throw invalid(name(key), "\(what) must be a whole number, 0 or more (got \(got))")
            }
            return number
        }
    }

    private static func comparison(_ element: JSONValue, at field: String, limits: Limits) throws(APIError) -> KVComparison {
        let fields = try Fields(element, at: field, known: Self.comparisonFields)
        let key = try Self.key(try fields.requiredBytes("key"), at: field + ".key", limits: limits)
        let targetName = try fields.requiredString("target")
        let target: KVComparison.Target = switch targetName {
        case "mod_revision": .modRevision
        case "create_revision": .createRevision
        case "version": .version
        case "value": .value
        case "exists": .exists
        default: throw invalid(field + ".target", "unknown target \"\(targetName)\" (mod_revision, create_revision, version, value or exists)")
        }
        let op = try fields.requiredString("op")
        let relation: KVComparison.Relation = switch op {
        case "==": .equal
        case "!=": .notEqual
        case "<": .less
        case ">": .greater
        default: throw invalid(field + ".op", "unknown comparison \"\(op)\" (==, !=, < or >)")
        }
        let operand: KVComparison.Operand
        switch target {
        case .value:
            operand = .bytes(try value(fields, at: field, limits: limits))
        case .exists:
            guard fields["value_base64"] == nil else { throw invalid(field + ".value_base64", "exists compares with true or false") }
            guard let exists = try? fields.bool("value") else { throw invalid(field + ".value", "exists compares with true or false") }
            guard relation == .equal || relation == .notEqual else { throw invalid(field + ".op", "exists compares with == or != only") }
            operand = .bool(exists)
        case .modRevision, .createRevision, .version:
            guard fields["value_base64"] == nil else { throw invalid(field + ".value_base64", "\(targetName) compares with a number") }
            guard let number = try fields.number("value", what: targetName) else {
                throw invalid(field + ".value", "\(targetName) compares with a whole number, 0 or more")
            }
            operand = .number(number)
        }
        return KVComparison(key: key, target: target, relation: relation, operand: operand)
    }

    private static func operation(_ element: JSONValue, at field: String, limits: Limits) throws(APIError) -> KVTransactionOperation {
        let fields = try Fields(element, at: field, known: Self.operationFields)
        let op = try fields.requiredString("op")
        /// The fields this operation takes besides `op`; any other given is refused.
        func only(_ allowed: [String]) throws(APIError) {
            if let extra = fields.members.first(where: { $0.key != "op" && !allowed.contains($0.key) })?.key {
                throw invalid(field + "." + extra, "a \(op) takes no \(extra)")
            }
        }
        func requiredKey() throws(APIError) -> [UInt8] {
            try Self.key(try fields.requiredBytes("key"), at: field + ".key", limits: limits)
        }
        func checkedPrefix() throws(APIError) -> [UInt8] {
            let bytes = try fields.bytes("prefix") ?? []
            guard bytes.count <= limits.keyBytesMax else {
                throw invalid(field + ".prefix", "is \(bytes.count) bytes; the limit is \(limits.keyBytesMax) (--max-key-bytes)")
            }
            return bytes
        }
        switch op {
        case "put":
            try only(["key", "value", "value_base64"])
            let key = try requiredKey()
            return .put(key: key, value: try value(fields, at: field, limits: limits))
        case "delete":
            try only(["key"])
            return .delete(key: try requiredKey())
        case "delete_prefix":
            try only(["prefix", "all"])
            let prefix = try checkedPrefix()
            let all = try fields.bool("all") ?? false
            if prefix.isEmpty && !all {
                throw invalid(field + ".prefix", "an empty prefix deletes every key: add \"all\": true if that is what you want")
            }
            return .deletePrefix(prefix: prefix)
        case "get":
            try only(["key"])
            return .get(key: try requiredKey())
        case "list":
            try only(["prefix", "after", "limit", "values"])
            let limit = try fields.number("limit", what: "limit")
            if let limit, limit == 0 { throw invalid(field + ".limit", "must be a positive integer (got 0)") }
            return .list(prefix: try checkedPrefix(), after: try fields.bytes("after"),
                         limit: Int(min(limit ?? UInt64(limits.listLimitMax), UInt64(limits.listLimitMax))),
                         values: try fields.bool("values") ?? false)
        default:
            throw invalid(field + ".op", "unknown operation \"\(op)\" (put, delete, delete_prefix, get or list)")
        }
    }

    private static func key(_ key: [UInt8], at field: String, limits: Limits) throws(APIError) -> [UInt8] {
        guard !key.isEmpty else { throw invalid(field, "the key is empty") }
        guard key.count <= limits.keyBytesMax else {
            throw invalid(field, "the key is \(key.count) bytes; the limit is \(limits.keyBytesMax) (--max-key-bytes)")
        }
        return key
    }

    /// A value given as `value` (a string) or `value_base64`, exactly one.
    private static func value(_ fields: Fields, at field: String, limits: Limits) throws(APIError) -> [UInt8] {
        let bytes: [UInt8]
        switch (fields["value"], fields["value_base64"]) {
        case (.string(let text)?, nil):
            bytes = text
        case (nil, .string(let encoded)?):
            guard let data = Data(base64Encoded: String(decoding: encoded, as: UTF8.self)) else { throw invalid(field + ".value_base64", "is not valid base64") }
            bytes = Array(data)
        case (nil, _?):
            throw invalid(field + ".value_base64", "must be a string of base64")
        case (nil, nil):
            throw invalid(field + ".value", "is required (a string, or value_base64)")
        case (_?, _?):
            throw invalid(field + ".value", "give value or value_base64, not both")
        case (_?, nil):
            throw invalid(field + ".value", "must be a string (use value_base64 for bytes)")
        }
        guard bytes.count <= limits.valueBytesMax else {
            throw tooLarge(field + ".value", "is \(bytes.count) bytes; the limit is \(limits.valueBytesMax) (--max-value-bytes)")
        }
        return bytes
    }
}
