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
/// are refused, so a misspelt `"sucess"` is an error rather than an empty branch.
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
        let request: RequestBody
        do {
            request = try JSONDecoder().decode(RequestBody.self, from: Data(buffer: body))
        } catch let error as DecodingError {
            throw invalid(error)
        } catch {
            throw invalid("", "the body is not a JSON transaction: \(error)")
        }
        var transaction = KVTransaction()
        for (name, count) in [("compare", request.compare.count), ("success", request.success.count), ("failure", request.failure.count)]
        where count > partsMax {
            throw APIError(.contentTooLarge, code: "txn_too_large", "\(name) has \(count) entries; a transaction takes at most \(partsMax) in each")
        }
        for (position, raw) in request.compare.enumerated() {
            transaction.compare.append(try raw.comparison(at: "compare[\(position)]", limits: limits))
        }
        transaction.success = try request.success.enumerated().map { (position, raw) throws(APIError) in
            try raw.operation(at: "success[\(position)]", limits: limits)
        }
        transaction.failure = try request.failure.enumerated().map { (position, raw) throws(APIError) in
            try raw.operation(at: "failure[\(position)]", limits: limits)
        }
        if let conflict = transaction.conflict() { throw invalid("", conflict) }
        return transaction
    }

    /// `{"succeeded", "revision", "results": [...]}`, one result per operation of the branch that ran.
    static func response(_ result: KVTransactionResult, of transaction: KVTransaction) -> Response {
        let operations = result.succeeded ? transaction.success : transaction.failure
        let results = zip(operations, result.results).map { operation, result in resultJSON(operation, result) }
        let body = #"{"succeeded":\#(result.succeeded),"revision":\#(result.revision),"results":["# + results.joined(separator: ",") + "]}\n"
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.keyperRevision] = String(result.revision)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    private static func resultJSON(_ operation: KVTransactionOperation, _ result: KVTransactionOperationResult) -> String {
        func text(_ bytes: [UInt8]) -> String { JSONText.quoted(String(decoding: bytes, as: UTF8.self)) }
        switch (operation, result) {
        case let (.put(key, _), .put(revisions)):
            return #"{"op":"put","key":"# + text(key)
                + #","create_revision":\#(revisions.create),"mod_revision":\#(revisions.mod),"version":\#(revisions.version)}"#
        case let (.delete(key), .delete(count)):
            return #"{"op":"delete","key":"# + text(key) + #","deleted":\#(count)}"#
        case let (.deletePrefix(prefix), .deletePrefix(count)):
            return #"{"op":"delete_prefix","prefix":"# + text(prefix) + #","deleted":\#(count)}"#
        case let (.get(key), .get(found)):
            guard let found else { return #"{"op":"get","key":"# + text(key) + #","found":false}"# }
            return #"{"op":"get","found":true,"# + EntryJSON.fields(key: key, found) + "}"
        case let (.list(prefix, _, _, values), .list(entries, nextAfter)):
            let kvs = entries.map { key, found in
                guard values else {
                    return #"{"key":"# + text(key) + #","create_revision":\#(found.revisions.create),"mod_revision":\#(found.revisions.mod),"#
                        + #""version":\#(found.revisions.version)}"#
                }
                return "{" + EntryJSON.fields(key: key, found) + "}"
            }
            return #"{"op":"list","prefix":"# + text(prefix) + #","kvs":["# + kvs.joined(separator: ",") + #"],"more":\#(nextAfter != nil)"#
                + (nextAfter.map { #","cursor":"# + text($0) } ?? "") + "}"
        default:
            preconditionFailure("result \(result) does not answer operation \(operation)")
        }
    }

    // MARK: The request body

    private static func invalid(_ field: String, _ message: String) -> APIError {
        .badRequest("invalid_txn", field.isEmpty ? message : "\(field): \(message)")
    }

    private static func tooLarge(_ field: String, _ message: String) -> APIError {
        APIError(.contentTooLarge, code: "txn_too_large", "\(field): \(message)")
    }

    /// A decoding error as `invalid_txn`, naming the field where it happened.
    private static func invalid(_ error: DecodingError) -> APIError {
        let (path, message): ([any CodingKey], String) = switch error {
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context): (context.codingPath, context.debugDescription)
        case let .keyNotFound(key, context): (context.codingPath + [key], "is required")
        @unknown default: ([], "\(error)")
        }
        return invalid(fieldName(path), message)
    }

    /// `success[2].value` for the path success, 2, value.
    static func fieldName(_ path: [any CodingKey]) -> String {
        path.reduce(into: "") { name, key in
            if let index = key.intValue { name += "[\(index)]" } else { name += (name.isEmpty ? "" : ".") + key.stringValue }
        }
    }

    /// Any field name, to see every field an object has.
    private struct FieldKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// An object's fields, refusing any not in `known`.
    private static func fields(of decoder: any Decoder, known: Set<String>) throws -> KeyedDecodingContainer<FieldKey> {
        let container = try decoder.container(keyedBy: FieldKey.self)
        if let unknown = container.allKeys.first(where: { !known.contains($0.stringValue) }) {
            throw DecodingError.dataCorruptedError(forKey: unknown, in: container,
                                                   debugDescription: "unknown field (expected one of \(known.sorted().joined(separator: ", ")))")
        }
        return container
    }

    private struct RequestBody: Decodable {
        var compare: [RawComparison]
        var success: [RawOperation]
        var failure: [RawOperation]

        init(from decoder: any Decoder) throws {
            let fields = try TransactionAPI.fields(of: decoder, known: ["compare", "success", "failure"])
            compare = try fields.decodeIfPresent([RawComparison].self, forKey: FieldKey(stringValue: "compare")) ?? []
            success = try fields.decodeIfPresent([RawOperation].self, forKey: FieldKey(stringValue: "success")) ?? []
            failure = try fields.decodeIfPresent([RawOperation].self, forKey: FieldKey(stringValue: "failure")) ?? []
        }
    }

    /// A JSON string, number (0 or more) or Boolean.
    private enum Scalar: Decodable {
        case string(String)
        case number(UInt64)
        case bool(Bool)

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let value = try? container.decode(Bool.self) {
                self = .bool(value)
            } else if let value = try? container.decode(UInt64.self) {
                self = .number(value)
            } else if let value = try? container.decode(String.self) {
                self = .string(value)
            } else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "expected a string, a whole number 0 or more, or a Boolean")
            }
        }
    }

    private struct RawComparison: Decodable {
        var key: String
        var target: String
        var op: String
        var value: Scalar?
        var valueBase64: String?

        init(from decoder: any Decoder) throws {
            let fields = try TransactionAPI.fields(of: decoder, known: ["key", "target", "op", "value", "value_base64"])
            key = try fields.decode(String.self, forKey: FieldKey(stringValue: "key"))
            target = try fields.decode(String.self, forKey: FieldKey(stringValue: "target"))
            op = try fields.decode(String.self, forKey: FieldKey(stringValue: "op"))
            value = try fields.decodeIfPresent(Scalar.self, forKey: FieldKey(stringValue: "value"))
            valueBase64 = try fields.decodeIfPresent(String.self, forKey: FieldKey(stringValue: "value_base64"))
        }

        func comparison(at field: String, limits: Limits) throws(APIError) -> KVComparison {
            let key = try TransactionAPI.key(self.key, at: field + ".key", limits: limits)
            let target: KVComparison.Target = switch self.target {
            case "mod_revision": .modRevision
            case "create_revision": .createRevision
            case "version": .version
            case "value": .value
            case "exists": .exists
            default: throw invalid(field + ".target", "unknown target \"\(self.target)\" (mod_revision, create_revision, version, value or exists)")
            }
            let relation: KVComparison.Relation = switch op {
            case "==": .equal
            case "!=": .notEqual
            case "<": .less
            case ">": .greater
            default: throw invalid(field + ".op", "unknown comparison \"\(op)\" (==, !=, < or >)")
            }
            let operand: KVComparison.Operand
            switch (target, value, valueBase64) {
            case (.value, _, _):
                let bytes = try TransactionAPI.value(value, base64: valueBase64, at: field, limits: limits)
                operand = .bytes(bytes)
            case (.exists, .bool(let exists)?, nil):
                guard relation == .equal || relation == .notEqual else {
                    throw invalid(field + ".op", "exists compares with == or != only")
                }
                operand = .bool(exists)
            case (.exists, _, _):
                throw invalid(field + ".value", "exists compares with true or false")
            case (_, .number(let number)?, nil):
                operand = .number(number)
            default:
                throw invalid(field + ".value", "\(self.target) compares with a whole number, 0 or more")
            }
            return KVComparison(key: key, target: target, relation: relation, operand: operand)
        }
    }

    private struct RawOperation: Decodable {
        var op: String
        var key: String?
        var prefix: String?
        var value: Scalar?
        var valueBase64: String?
        var after: String?
        var limit: Int?
        var values: Bool?
        var all: Bool?

        init(from decoder: any Decoder) throws {
            let fields = try TransactionAPI.fields(of: decoder, known: ["op", "key", "prefix", "value", "value_base64", "after", "limit", "values", "all"])
            op = try fields.decode(String.self, forKey: FieldKey(stringValue: "op"))
            key = try fields.decodeIfPresent(String.self, forKey: FieldKey(stringValue: "key"))
            prefix = try fields.decodeIfPresent(String.self, forKey: FieldKey(stringValue: "prefix"))
            value = try fields.decodeIfPresent(Scalar.self, forKey: FieldKey(stringValue: "value"))
            valueBase64 = try fields.decodeIfPresent(String.self, forKey: FieldKey(stringValue: "value_base64"))
            after = try fields.decodeIfPresent(String.self, forKey: FieldKey(stringValue: "after"))
            limit = try fields.decodeIfPresent(Int.self, forKey: FieldKey(stringValue: "limit"))
            values = try fields.decodeIfPresent(Bool.self, forKey: FieldKey(stringValue: "values"))
            all = try fields.decodeIfPresent(Bool.self, forKey: FieldKey(stringValue: "all"))
        }

        func operation(at field: String, limits: Limits) throws(APIError) -> KVTransactionOperation {
            /// The fields this operation takes besides `op`; any other given is refused.
            func only(_ allowed: Set<String>) throws(APIError) {
                let given: [(String, Bool)] = [("key", key != nil), ("prefix", prefix != nil), ("value", value != nil),
                                               ("value_base64", valueBase64 != nil), ("after", after != nil), ("limit", limit != nil),
                                               ("values", values != nil), ("all", all != nil)]
                if let (name, _) = given.first(where: { $0.1 && !allowed.contains($0.0) }) {
                    throw invalid(field + "." + name, "a \(op) takes no \(name)")
                }
            }
            func requiredKey() throws(APIError) -> [UInt8] {
                guard let key else { throw invalid(field + ".key", "is required") }
                return try TransactionAPI.key(key, at: field + ".key", limits: limits)
            }
            func checkedPrefix() throws(APIError) -> [UInt8] {
                let bytes = Array((prefix ?? "").utf8)
                guard bytes.count <= limits.keyBytesMax else {
                    throw invalid(field + ".prefix", "is \(bytes.count) bytes; the limit is \(limits.keyBytesMax) (--max-key-bytes)")
                }
                return bytes
            }
            switch op {
            case "put":
                try only(["key", "value", "value_base64"])
                let key = try requiredKey()
                return .put(key: key, value: try TransactionAPI.value(value, base64: valueBase64, at: field, limits: limits))
            case "delete":
                try only(["key"])
                return .delete(key: try requiredKey())
            case "delete_prefix":
                try only(["prefix", "all"])
                let prefix = try checkedPrefix()
                if prefix.isEmpty && all != true {
                    throw invalid(field + ".prefix", "an empty prefix deletes every key: add \"all\": true if that is what you want")
                }
                return .deletePrefix(prefix: prefix)
            case "get":
                try only(["key"])
                return .get(key: try requiredKey())
            case "list":
                try only(["prefix", "after", "limit", "values"])
                if let limit, limit <= 0 { throw invalid(field + ".limit", "must be a positive integer (got \(limit))") }
                return .list(prefix: try checkedPrefix(), after: after.map { Array($0.utf8) },
                             limit: min(limit ?? limits.listLimitMax, limits.listLimitMax), values: values ?? false)
            default:
                throw invalid(field + ".op", "unknown operation \"\(op)\" (put, delete, delete_prefix, get or list)")
            }
        }
    }

    private static func key(_ text: String, at field: String, limits: Limits) throws(APIError) -> [UInt8] {
        let key = Array(text.utf8)
        guard !key.isEmpty else { throw invalid(field, "the key is empty") }
        guard key.count <= limits.keyBytesMax else {
            throw invalid(field, "the key is \(key.count) bytes; the limit is \(limits.keyBytesMax) (--max-key-bytes)")
        }
        return key
    }

    /// A value given as `value` (a string) or `value_base64`, exactly one.
    private static func value(_ value: Scalar?, base64: String?, at field: String, limits: Limits) throws(APIError) -> [UInt8] {
        let bytes: [UInt8]
        switch (value, base64) {
        case (.string(let text)?, nil):
            bytes = Array(text.utf8)
        case (nil, let encoded?):
            guard let data = Data(base64Encoded: encoded) else { throw invalid(field + ".value_base64", "is not valid base64") }
            bytes = Array(data)
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
