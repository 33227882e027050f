import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeyperBase
import KeyperTestSupport
import NIOCore
import Testing
@testable import KeyperServer

/// Runs `body` against a standalone node in a fresh data directory, through Hummingbird's
/// in-process test client (`.router`) or a real socket (`.live`).
func withAPI(
    _ setup: TestingSetup = .router,
    configure: (inout NodeConfiguration) -> Void = { _ in },
    _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void
) async throws {
    try await withNodeAPI(setup, configure: configure) { client, _ in try await body(client) }
}

/// ``withAPI(_:configure:_:)`` with the node at hand.
func withNodeAPI(
    _ setup: TestingSetup = .router,
    configure: (inout NodeConfiguration) -> Void = { _ in },
    _ body: @escaping @Sendable (any TestClientProtocol, StandaloneNode) async throws -> Void
) async throws {
    try await withTemporaryDirectory { dir in
        var configuration = NodeConfiguration()
        configuration.dataDirectory = dir + "/data"
        configuration.httpAddress = HostPort(host: "127.0.0.1", port: 0)
        configure(&configuration)
        let node = try StandaloneNode(configuration: configuration)
        defer { node.close() }
        let app = Application(
            router: KeyperAPI(node: node, configuration: configuration).makeRouter(),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(setup) { client in try await body(client, node) }
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }
    /// The `code` field of a JSON error body.
    var errorCode: String? {
        guard let range = text.range(of: #""code":""#) else { return nil }
        return String(text[range.upperBound...].prefix(while: { $0 != "\"" }))
    }
}

@Suite("HTTP API")
struct HTTPAPITests {
    @Test("the status page is one self-contained HTML page; /v1/cluster of a standalone node is that node, with its request counts")
    func statusPage() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/keys/a", method: .put, body: ByteBuffer(string: "1")) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/a", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .ok && response.headers[.contentType] == "text/html; charset=utf-8")
                #expect(response.text.contains("setInterval(refresh, 1000)") && !response.text.contains("src=\"http"))
            }
            try await client.execute(uri: "/v1/cluster", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.text.contains(#""leader":"node1","members":[{"id":"node1""#), "\(response.text)")
                #expect(response.text.contains(#""requests":{"reads":1,"writes":1,"#), "\(response.text)")
            }
        }
    }

    @Test("PUT then GET returns the exact bytes; DELETE makes it 404")
    func putGetDelete() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/keys/foo", method: .put, body: ByteBuffer(string: "hello")) {
                #expect($0.status == .noContent)
                #expect($0.headers[.keyperLeader] == "node1")
            }
            try await client.execute(uri: "/v1/keys/foo", method: .get) {
                #expect($0.status == .ok)
                #expect($0.text == "hello")
                #expect($0.headers[.contentType] == "application/octet-stream")
            }
            try await client.execute(uri: "/v1/keys/foo", method: .delete) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/foo", method: .get) {
                #expect($0.status == .notFound)
                #expect($0.errorCode == "key_not_found")
                #expect($0.headers[.contentType] == "application/json")
            }
            // DELETE is idempotent.
            try await client.execute(uri: "/v1/keys/foo", method: .delete) { #expect($0.status == .noContent) }
        }
    }

    @Test("a read carries the key's revisions and the store revision; JSON on request, base64 for bytes that are not UTF-8")
    func revisionsOnRead() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/keys/a", method: .put, body: ByteBuffer(string: "one")) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/b", method: .put, body: ByteBuffer(bytes: [0xFF, 0x00])) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/a", method: .put, body: ByteBuffer(string: "two")) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/a", method: .get) {
                #expect($0.text == "two")
                #expect($0.headers[.eTag] == "\"3\"")
                #expect($0.headers[.keyperCreateRevision] == "1" && $0.headers[.keyperModRevision] == "3" && $0.headers[.keyperVersion] == "2")
                #expect($0.headers[.keyperRevision] == "3")
            }
            try await client.execute(uri: "/v1/keys/a?format=json", method: .get) {
                #expect($0.headers[.contentType] == "application/json")
                #expect($0.text == #"{"key":"a","value":"two","create_revision":1,"mod_revision":3,"version":2,"revision":3}"# + "\n")
            }
            try await client.execute(uri: "/v1/keys/b", method: .get, headers: [.accept: "application/json"]) {
                #expect($0.text == #"{"key":"b","value_base64":"/wA=","create_revision":2,"mod_revision":2,"version":1,"revision":3}"# + "\n")
            }
            try await client.execute(uri: "/v1/keys/b?format=raw", method: .get, headers: [.accept: "application/json"]) {
                #expect(Array(buffer: $0.body) == [0xFF, 0x00])
            }
            try await client.execute(uri: "/v1/keys/a?format=xml", method: .get) {
                #expect($0.status == .badRequest && $0.errorCode == "invalid_format")
            }
            // A delete of a present key is a revision; an absent key says which revision it was absent at.
            try await client.execute(uri: "/v1/keys/a", method: .delete) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/a", method: .get) {
                #expect($0.status == .notFound && $0.headers[.keyperRevision] == "4")
            }
            // Created again: a new life, version 1.
            try await client.execute(uri: "/v1/keys/a", method: .put, body: ByteBuffer(string: "three")) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/a", method: .head) {
                #expect($0.headers[.keyperCreateRevision] == "5" && $0.headers[.keyperVersion] == "1" && $0.headers[.eTag] == "\"5\"")
            }
        }
    }

    @Test("conditional writes: If-None-Match create-only, If-Match compare-and-swap, prev_revision; a mismatch is 412 and changes nothing")
    func conditionalWrites() async throws {
        try await withAPI { client in
            // Create only.
            try await client.execute(uri: "/v1/keys/c", method: .put, headers: [.ifNoneMatch: "*"], body: ByteBuffer(string: "1")) {
                #expect($0.status == .noContent && $0.headers[.eTag] == "\"1\"" && $0.headers[.keyperRevision] == "1")
            }
            try await client.execute(uri: "/v1/keys/c", method: .put, headers: [.ifNoneMatch: "*"], body: ByteBuffer(string: "x")) {
                #expect($0.status == .preconditionFailed && $0.errorCode == "revision_mismatch")
                #expect($0.text.contains(#""current_revision":1}"#))
            }
            // Compare-and-swap on the ETag read.
            try await client.execute(uri: "/v1/keys/c", method: .put, headers: [.ifMatch: "\"1\""], body: ByteBuffer(string: "2")) {
                #expect($0.status == .noContent && $0.headers[.eTag] == "\"2\"")
            }
            try await client.execute(uri: "/v1/keys/c", method: .put, headers: [.ifMatch: "\"1\""], body: ByteBuffer(string: "lost")) {
                #expect($0.status == .preconditionFailed && $0.text.contains(#""current_revision":2}"#))
            }
            try await client.execute(uri: "/v1/keys/c?prev_revision=2", method: .put, body: ByteBuffer(string: "3")) {
                #expect($0.status == .noContent && $0.headers[.eTag] == "\"3\"")
            }
            try await client.execute(uri: "/v1/keys/c", method: .get) { #expect($0.text == "3" && $0.headers[.keyperVersion] == "3") }
            // Conditional deletes; prev_revision=0 is "must not exist".
            try await client.execute(uri: "/v1/keys/c?prev_revision=2", method: .delete) { #expect($0.status == .preconditionFailed) }
            try await client.execute(uri: "/v1/keys/c", method: .delete, headers: [.ifMatch: "\"3\""]) {
                #expect($0.status == .noContent && $0.headers[.keyperRevision] == "4")
            }
            try await client.execute(uri: "/v1/keys/c", method: .delete, headers: [.ifMatch: "*"]) {
                #expect($0.status == .preconditionFailed && $0.text.contains(#""current_revision":0}"#))
            }
            try await client.execute(uri: "/v1/keys/c?prev_revision=0", method: .put, body: ByteBuffer(string: "new")) {
                #expect($0.status == .noContent && $0.headers[.eTag] == "\"5\"")
            }
            // Bad conditions are refused before anything happens.
            let bad: [(String, HTTPFields, String)] = [
                ("/v1/keys/c", [.ifMatch: "5"], "invalid_etag"),
                ("/v1/keys/c", [.ifMatch: "W/\"5\""], "invalid_etag"),
                ("/v1/keys/c", [.ifMatch: "\"-1\""], "invalid_etag"),
                ("/v1/keys/c", [.ifMatch: "\"0\""], "invalid_etag"),
                ("/v1/keys/c", [.ifMatch: "\"99999999999999999999999\""], "invalid_etag"),
                ("/v1/keys/c", [.ifMatch: "\"5\", \"6\""], "invalid_etag"),
                ("/v1/keys/c", [.ifNoneMatch: "\"5\""], "invalid_etag"),
                ("/v1/keys/c?prev_revision=-3", [:], "invalid_revision"),
                ("/v1/keys/c?prev_revision=x", [:], "invalid_revision"),
                ("/v1/keys/c?prev_revision=5", [.ifNoneMatch: "*"], "conflicting_conditions"),
            ]
            for (uri, headers, code) in bad {
                try await client.execute(uri: uri, method: .put, headers: headers, body: ByteBuffer(string: "bad")) {
                    #expect($0.status == .badRequest && $0.errorCode == code, "\(uri) \(headers)")
                }
            }
            try await client.execute(uri: "/v1/keys/c", method: .get) { #expect($0.text == "new" && $0.headers[.keyperRevision] == "5") }
        }
    }

    @Test("DELETE /v1/keys?prefix= removes the keys under it in one revision; an empty prefix needs all=true")
    func prefixDelete() async throws {
        try await withAPI { client in
            for key in ["cfg/a", "cfg/b", "cfg2", "other"] {
                try await client.execute(uri: "/v1/keys/\(key)", method: .put, body: ByteBuffer(string: "v")) { #expect($0.status == .noContent) }
            }
            try await client.execute(uri: "/v1/keys?prefix=cfg%2F", method: .delete) {
                #expect($0.status == .ok && $0.text == #"{"deleted":2,"revision":5}"# + "\n")
            }
            try await client.execute(uri: "/v1/keys?prefix=nothing", method: .delete) {
                #expect($0.text == #"{"deleted":0,"revision":5}"# + "\n")
            }
            for (uri, code) in [("/v1/keys", "empty_prefix"), ("/v1/keys?prefix=", "empty_prefix"), ("/v1/keys?all=yes", "invalid_all"),
                                ("/v1/keys?prefix=c&prev_revision=1", "invalid_condition")] {
                try await client.execute(uri: uri, method: .delete) { #expect($0.status == .badRequest && $0.errorCode == code, "\(uri)") }
            }
            try await client.execute(uri: "/v1/keys", method: .get) { #expect($0.text.contains(#""keys":["cfg2","other"]"#)) }
            try await client.execute(uri: "/v1/keys?all=true", method: .delete) {
                #expect($0.text == #"{"deleted":2,"revision":6}"# + "\n")
            }
            try await client.execute(uri: "/v1/keys", method: .get) { #expect($0.text.contains(#""keys":[]"#)) }
        }
    }

    @Test("POST /v1/txn: compare-and-swap, both branches, reads inside, one revision for all writes, read-only transactions")
    func transactions() async throws {
        try await withAPI { client in
            func txn(_ body: String, uri: String = "/v1/txn", _ check: @escaping @Sendable (TestResponse) -> Void) async throws {
                try await client.execute(uri: uri, method: .post, body: ByteBuffer(string: body)) { check($0) }
            }
            // Create-if-absent of two keys at once.
            try await txn(#"{"compare":[{"key":"cfg/a","target":"exists","op":"==","value":false}],"#
                          + #""success":[{"op":"put","key":"cfg/a","value":"1"},{"op":"put","key":"cfg/b","value_base64":"AP8="},"#
                          + #"{"op":"get","key":"cfg/a"}],"failure":[{"op":"get","key":"cfg/a"}]}"#) {
                #expect($0.status == .ok && $0.headers[.keyperRevision] == "1")
                #expect($0.text == #"{"succeeded":true,"revision":1,"results":["#
                        + #"{"op":"put","key":"cfg/a","create_revision":1,"mod_revision":1,"version":1},"#
                        + #"{"op":"put","key":"cfg/b","create_revision":1,"mod_revision":1,"version":1},"#
                        + #"{"op":"get","found":true,"key":"cfg/a","value":"1","create_revision":1,"mod_revision":1,"version":1}]}"# + "\n")
            }
            // Again: the failure branch runs and nothing changes.
            try await txn(#"{"compare":[{"key":"cfg/a","target":"exists","op":"==","value":false}],"#
                          + #""success":[{"op":"put","key":"cfg/a","value":"x"}],"failure":[{"op":"get","key":"nope"}]}"#) {
                #expect($0.text == #"{"succeeded":false,"revision":1,"results":[{"op":"get","key":"nope","found":false}]}"# + "\n")
            }
            // A compare-and-swap on the mod revision, a delete and a listing in one change.
            try await txn(#"{"compare":[{"key":"cfg/a","target":"mod_revision","op":"==","value":1},"#
                          + #"{"key":"cfg/a","target":"value","op":"==","value":"1"}],"#
                          + #""success":[{"op":"put","key":"cfg/a","value":"2"},{"op":"delete","key":"cfg/b"},"#
                          + #"{"op":"list","prefix":"cfg/","values":true}]}"#) {
                #expect($0.text == #"{"succeeded":true,"revision":2,"results":["#
                        + #"{"op":"put","key":"cfg/a","create_revision":1,"mod_revision":2,"version":2},"#
                        + #"{"op":"delete","key":"cfg/b","deleted":1},"#
                        + #"{"op":"list","prefix":"cfg/","kvs":[{"key":"cfg/a","value":"2","create_revision":1,"mod_revision":2,"version":2}],"#
                        + #""more":false}]}"# + "\n")
            }
            // A read-only transaction (stale allowed); delete_prefix; a list without values pages.
            try await txn(#"{"success":[{"op":"list","prefix":"cfg/","limit":1}]}"#, uri: "/v1/txn?consistency=stale") {
                #expect($0.text.contains(#""kvs":[{"key":"cfg/a","create_revision":1,"mod_revision":2,"version":2}],"more":false}"#))
            }
            try await txn(#"{"success":[{"op":"delete_prefix","prefix":"cfg/"}]}"#) {
                #expect($0.text == #"{"succeeded":true,"revision":3,"results":[{"op":"delete_prefix","prefix":"cfg/","deleted":1}]}"# + "\n")
            }
            try await txn(#"{"success":[{"op":"delete_prefix","prefix":"","all":true}]}"#) {
                #expect($0.text.contains(#""revision":3,"#) && $0.text.contains(#""deleted":0"#))
            }
            try await txn(#"{"success":[{"op":"put","key":"w","value":"1"}]}"#, uri: "/v1/txn?consistency=stale") {
                #expect($0.status == .badRequest && $0.errorCode == "invalid_consistency")
            }
            try await client.execute(uri: "/v1/txn", method: .get) { #expect($0.status == .methodNotAllowed) }
        }
    }

    @Test("a bad transaction gets 400 invalid_txn naming the field, or 413 txn_too_large, and changes nothing")
    func badTransactions() async throws {
        try await withAPI(configure: { $0.valueBytesMax = 100 }) { client in
            let put = #"{"op":"put","key":"k","value":"v"}"#
            let cases: [(String, String, String)] = [
                ("not json", "invalid_txn", ""),
                (#"{"sucess":[]}"#, "invalid_txn", "sucess"),
                (#"{"compare":[{"key":"k","target":"modrev","op":"==","value":1}]}"#, "invalid_txn", "compare[0].target"),
                (#"{"compare":[{"key":"k","target":"version","op":"=~","value":1}]}"#, "invalid_txn", "compare[0].op"),
                (#"{"compare":[{"key":"k","target":"version","op":"==","value":-1}]}"#, "invalid_txn", "compare[0].value"),
                (#"{"compare":[{"key":"k","target":"version","op":"==","value":"1"}]}"#, "invalid_txn", "compare[0].value"),
                (#"{"compare":[{"key":"k","target":"version","op":"==","value":1.5}]}"#, "invalid_txn", "compare[0].value"),
                (#"{"compare":[{"key":"k","target":"mod_revision","op":"==","value":99999999999999999999999}]}"#, "invalid_txn", "compare[0].value"),
                (#"{"compare":[{"key":"k","target":"exists","op":"<","value":true}]}"#, "invalid_txn", "compare[0].op"),
                (#"{"compare":[{"key":"","target":"exists","op":"==","value":true}]}"#, "invalid_txn", "compare[0].key"),
                (#"{"compare":[{"target":"exists","op":"==","value":true}]}"#, "invalid_txn", "compare[0].key"),
                (#"{"success":[{"op":"upsert","key":"k"}]}"#, "invalid_txn", "success[0].op"),
                (#"{"success":[{"op":"put","key":"k"}]}"#, "invalid_txn", "success[0].value"),
                (#"{"success":[{"op":"put","key":"k","value":"a","value_base64":"YQ=="}]}"#, "invalid_txn", "success[0].value"),
                (#"{"success":[{"op":"put","key":"k","value_base64":"%%%"}]}"#, "invalid_txn", "success[0].value_base64"),
                (#"{"success":[{"op":"get","key":"k","value":"v"}]}"#, "invalid_txn", "success[0].value"),
                (#"{"failure":[{"op":"list","limit":0}]}"#, "invalid_txn", "failure[0].limit"),
                (#"{"success":[{"op":"delete_prefix","prefix":""}]}"#, "invalid_txn", "success[0].prefix"),
                (#"{"success":["# + put + "," + put + "]}", "invalid_txn", "success[1]"),
                (#"{"success":["# + put + #",{"op":"delete","key":"k"}]}"#, "invalid_txn", "success[1]"),
                (#"{"success":[{"op":"put","key":"k","value":""# + String(repeating: "x", count: 101) + #""}]}"#, "txn_too_large", "success[0].value"),
                (#"{"success":["# + Array(repeating: #"{"op":"get","key":"k"}"#, count: 129).joined(separator: ",") + "]}", "txn_too_large", "success"),
                (#"{"success":["# + Array(repeating: #"{"op":"get","key":"k"}"#, count: 5_000).joined(separator: ",") + "]}", "txn_too_large", ""),
            ]
            for (body, code, field) in cases {
                try await client.execute(uri: "/v1/txn", method: .post, body: ByteBuffer(string: body)) {
                    let status: HTTPResponse.Status = code == "txn_too_large" ? .contentTooLarge : .badRequest
                    #expect($0.status == status && $0.errorCode == code, "\(body.prefix(120)): \($0.text)")
                    #expect(field.isEmpty || $0.text.contains(#""error":""# + field), "\(body.prefix(120)): \($0.text)")
                }
            }
            try await client.execute(uri: "/v1/keys?values=true", method: .get) {
                #expect($0.text.contains(#""kvs":[]"#) && $0.text.contains(#""revision":0"#))
            }
        }
    }

    @Test("Idempotency-Key: a retry answers as the first attempt did and applies nothing; another request under the key is 422")
    func idempotencyKeys() async throws {
        try await withAPI { client in
            let key: HTTPFields = [.idempotencyKey: "3f1c0d7e-retry"]
            try await client.execute(uri: "/v1/keys/n", method: .put, headers: key, body: ByteBuffer(string: "1")) {
                #expect($0.status == .noContent && $0.headers[.keyperRevision] == "1" && $0.headers[.idempotentReplayed] == nil)
            }
            try await client.execute(uri: "/v1/keys/other", method: .put, body: ByteBuffer(string: "x")) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/n", method: .put, headers: key, body: ByteBuffer(string: "1")) {
                #expect($0.status == .noContent && $0.headers[.keyperRevision] == "1" && $0.headers[.eTag] == "\"1\"")
                #expect($0.headers[.idempotentReplayed] == "true")
            }
            try await client.execute(uri: "/v1/keys/n", method: .put, headers: key, body: ByteBuffer(string: "2")) {
                #expect($0.status == .unprocessableContent && $0.errorCode == "idempotency_key_reused")
            }
            try await client.execute(uri: "/v1/keys/n", method: .get) { #expect($0.text == "1" && $0.headers[.keyperVersion] == "1") }
            // A conditional write that failed fails the same way on a retry, even once the condition would hold.
            let cas: HTTPFields = [.idempotencyKey: "\"cas-7\"", .ifMatch: "\"3\""]
            try await client.execute(uri: "/v1/keys/n", method: .put, headers: cas, body: ByteBuffer(string: "3")) {
                #expect($0.status == .preconditionFailed)
            }
            try await client.execute(uri: "/v1/keys/pad", method: .put, body: ByteBuffer(string: "")) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/n", method: .put, headers: [.ifMatch: "\"1\""], body: ByteBuffer(string: "2")) {
                #expect($0.headers[.eTag] == "\"4\"")
            }
            try await client.execute(uri: "/v1/keys/n", method: .put, headers: cas, body: ByteBuffer(string: "another")) {
                #expect($0.status == .unprocessableContent)
            }
            try await client.execute(uri: "/v1/keys/n", method: .put, headers: cas, body: ByteBuffer(string: "3")) {
                #expect($0.status == .preconditionFailed && $0.headers[.idempotentReplayed] == "true")
            }
            // Transactions and prefix deletes.
            let body = #"{"success":[{"op":"put","key":"t","value":"v"},{"op":"get","key":"n"}]}"#
            var first = ""
            try await client.execute(uri: "/v1/txn", method: .post, headers: [.idempotencyKey: "txn-1"], body: ByteBuffer(string: body)) {
                first = $0.text
                #expect($0.status == .ok && $0.text.contains(#""revision":5"#))
            }
            try await client.execute(uri: "/v1/txn", method: .post, headers: [.idempotencyKey: "txn-1"], body: ByteBuffer(string: body)) {
                #expect($0.text == first && $0.headers[.idempotentReplayed] == "true")
            }
            try await client.execute(uri: "/v1/keys?prefix=t", method: .delete, headers: [.idempotencyKey: "wipe"]) {
                #expect($0.text == #"{"deleted":1,"revision":6}"# + "\n")
            }
            try await client.execute(uri: "/v1/keys/t", method: .put, body: ByteBuffer(string: "again")) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys?prefix=t", method: .delete, headers: [.idempotencyKey: "wipe"]) {
                #expect($0.text == #"{"deleted":1,"revision":6}"# + "\n" && $0.headers[.idempotentReplayed] == "true")
            }
            try await client.execute(uri: "/v1/keys/t", method: .get) { #expect($0.text == "again") }
            for bad in ["", "has space", String(repeating: "x", count: 129), "caf\u{e9}"] {
                try await client.execute(uri: "/v1/keys/z", method: .put, headers: [.idempotencyKey: bad], body: ByteBuffer(string: "1")) {
                    #expect($0.status == .badRequest && $0.errorCode == "invalid_idempotency_key", "\(bad)")
                }
            }
            try await client.execute(uri: "/v1/keys/z", method: .get) { #expect($0.status == .notFound) }
        }
    }

    @Test("keys with slashes, escaped slashes, spaces and UTF-8 are distinct and round-trip")
    func keyEncoding() async throws {
        try await withAPI { client in
            let cases: [(uri: String, value: String)] = [
                ("/v1/keys/a/b/c", "slashes"),
                ("/v1/keys/a%2Fb%2Fc", "escaped"),  // decodes to the same key as a/b/c
                ("/v1/keys/with%20space", "space"),
                ("/v1/keys/%C3%A9t%C3%A9", "utf8"),
            ]
            for (uri, value) in cases {
                try await client.execute(uri: uri, method: .put, body: ByteBuffer(string: value)) {
                    #expect($0.status == .noContent)
                }
            }
            try await client.execute(uri: "/v1/keys/a/b/c", method: .get) { #expect($0.text == "escaped") }
            try await client.execute(uri: "/v1/keys/with%20space", method: .get) { #expect($0.text == "space") }
            try await client.execute(uri: "/v1/keys/été", method: .get) { #expect($0.text == "utf8") }
            try await client.execute(uri: "/v1/keys?prefix=a/", method: .get) {
                #expect($0.text.contains(#""keys":["a/b/c"]"#))
            }
        }
    }

    @Test("binary values of every byte come back byte-exact")
    func binaryValue() async throws {
        try await withAPI { client in
            var generator = SystemRandomNumberGenerator()
            let value = (0..<16_384).map { _ in UInt8.random(in: 0...255, using: &generator) }
            try await client.execute(uri: "/v1/keys/bin", method: .put, body: ByteBuffer(bytes: value)) {
                #expect($0.status == .noContent)
            }
            try await client.execute(uri: "/v1/keys/bin", method: .get) {
                #expect(Array(buffer: $0.body) == value)
            }
        }
    }

    @Test("an empty value is stored and is not the same as absent")
    func emptyValue() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/keys/e", method: .put) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys/e", method: .get) {
                #expect($0.status == .ok)
                #expect($0.body.readableBytes == 0)
            }
        }
    }

    @Test("bad keys get 400 with a JSON error and change nothing")
    func badKeys() async throws {
        try await withAPI(configure: { $0.keyBytesMax = 8 }) { client in
            for (uri, code) in [("/v1/keys/", "empty_key"), ("/v1/keys/123456789", "key_too_large"),
                                ("/v1/keys/%zz", "invalid_key"), ("/v1/keys/%FF", "invalid_key")] {
                for method in [HTTPRequest.Method.put, .get, .delete] {
                    try await client.execute(uri: uri, method: method, body: ByteBuffer(string: "x")) {
                        #expect($0.status == .badRequest, "\(method) \(uri)")
                        #expect($0.errorCode == code, "\(method) \(uri): \($0.text)")
                    }
                }
            }
            try await client.execute(uri: "/v1/status", method: .get) { #expect($0.text.contains(#""keys":0"#)) }
        }
    }

    @Test("a value over the limit gets 413, is not stored, and the node keeps serving")
    func valueTooLarge() async throws {
        try await withAPI(.live, configure: { $0.valueBytesMax = 1024 }) { client in
            try await client.execute(uri: "/v1/keys/big", method: .put, body: ByteBuffer(repeating: 1, count: 1025)) {
                #expect($0.status == .contentTooLarge)
                #expect($0.errorCode == "value_too_large")
            }
            try await client.execute(uri: "/v1/keys/big", method: .get) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/v1/keys/ok", method: .put, body: ByteBuffer(repeating: 1, count: 1024)) {
                #expect($0.status == .noContent)
            }
            try await client.execute(uri: "/v1/health", method: .get) { #expect($0.status == .ok) }
        }
    }

    @Test("a wrong method gets 405 with Allow; an unknown route gets 404, both as JSON")
    func methodAndRouteErrors() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/keys/foo", method: .post) {
                #expect($0.status == .methodNotAllowed)
                #expect($0.errorCode == "method_not_allowed")
                #expect($0.headers[.allow] == "GET, HEAD, PUT, DELETE")
            }
            // The method is judged before the key: a bad key with a wrong method is still 405.
            try await client.execute(uri: "/v1/keys/%ZZ", method: .post) { #expect($0.status == .methodNotAllowed) }
            try await client.execute(uri: "/v1/keys/", method: .post) { #expect($0.status == .methodNotAllowed) }
            // HEAD answers like GET, without the body.
            try await client.execute(uri: "/v1/keys/head-me", method: .put, body: ByteBuffer(string: "body")) { _ in }
            try await client.execute(uri: "/v1/keys/head-me", method: .head) {
                #expect($0.status == .ok)
                #expect($0.body.readableBytes == 0)
            }
            try await client.execute(uri: "/v1/status", method: .delete) { #expect($0.status == .methodNotAllowed) }
            try await client.execute(uri: "/v1/keys", method: .put) { #expect($0.status == .methodNotAllowed) }
            try await client.execute(uri: "/v1/join", method: .get) { #expect($0.status == .methodNotAllowed) }
            try await client.execute(uri: "/v2/nothing", method: .get) {
                #expect($0.status == .notFound)
                #expect($0.errorCode == "not_found")
            }
            // Every route of the table, with a method it does not take: 405 naming exactly its methods.
            for route in Route.allCases {
                let path = route.pattern.replacing("{key}", with: "k").replacing("{id}", with: "n9")
                #expect(Route(path: path) == route)
                let wrong: HTTPRequest.Method = route.methods.contains(.patch) ? .options : .patch
                try await client.execute(uri: path, method: wrong) {
                    #expect($0.status == .methodNotAllowed, "\(path)")
                    #expect($0.headers[.allow] == route.methods.map(\.rawValue).joined(separator: ", "), "\(path)")
                }
            }
        }
    }

    @Test("the route table gives every path its route: the metric label and the methods allowed")
    func routeTable() {
        #expect(Route(path: "/v1/keys") == .keys)
        #expect(Route(path: "/v1/keys/a/b%2Fc") == .key)
        #expect(Route(path: "/v1/members/node2") == .member)
        #expect(Route(path: "/v1/members/node2/extra") == nil)
        #expect(Route(path: "/v1/keysx") == nil)
        #expect(Route(path: "/") == .statusPage)
        #expect(Route(path: "/index.html") == nil)
        #expect(Route(path: "/v1/locks/a") == .lock && Route(path: "/v1/locks/a/b") == nil && Route(path: "/v1/locks/") == nil)
        #expect(Route(path: "/v1/leases/7/keepalive") == .leaseKeepAlive && Route(path: "/v1/leases/7/other") == nil)
        #expect(Set(Route.allCases.map(\.pattern)).count == Route.allCases.count)
        for route in Route.allCases where route.methods.contains(.get) { #expect(route.methods.contains(.head)) }
    }

    @Test("listing returns ordered keys with a cursor and the revision read at, values on request, caps the limit, and rejects a bad limit")
    func listing() async throws {
        try await withAPI(configure: { $0.listLimitMax = 3 }) { client in
            for key in ["b", "a", "c/1", "c/2", "c/3", "d"] {
                try await client.execute(uri: "/v1/keys/\(key)", method: .put, body: ByteBuffer(string: "v"))
            }
            try await client.execute(uri: "/v1/keys?limit=2", method: .get) {
                #expect($0.status == .ok)
                #expect($0.text == #"{"cursor":"b","keys":["a","b"],"more":true,"revision":6}"# + "\n")
            }
            // With values: each key's value and revisions, and the revision the page was read at.
            try await client.execute(uri: "/v1/keys/c%2F2", method: .put, body: ByteBuffer(bytes: [0xFE])) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/keys?prefix=c%2F&values=true", method: .get) {
                #expect($0.headers[.keyperRevision] == "7")
                #expect($0.text == #"{"kvs":[{"key":"c/1","value":"v","create_revision":3,"mod_revision":3,"version":1},"#
                        + #"{"key":"c/2","value_base64":"/g==","create_revision":4,"mod_revision":7,"version":2},"#
                        + #"{"key":"c/3","value":"v","create_revision":5,"mod_revision":5,"version":1}],"more":false,"revision":7}"# + "\n")
            }
            try await client.execute(uri: "/v1/keys?values=true&limit=1", method: .get) {
                #expect($0.text.hasSuffix(#"}],"more":true,"cursor":"a","revision":7}"# + "\n"))
            }
            try await client.execute(uri: "/v1/keys?values=yes", method: .get) {
                #expect($0.status == .badRequest && $0.errorCode == "invalid_values")
            }
            try await client.execute(uri: "/v1/keys?after=b&limit=100", method: .get) {
                // Capped at listLimitMax = 3.
                #expect($0.text.contains(#""more":true"#))
                #expect($0.text.contains(#""cursor":"c/3""#))
            }
            try await client.execute(uri: "/v1/keys?prefix=c%2F&after=c%2F1", method: .get) {
                #expect($0.text.contains("c/2"))
                #expect($0.text.contains(#""more":false"#))
                #expect(!$0.text.contains("c/1"))
            }
            for bad in ["0", "-1", "x"] {
                try await client.execute(uri: "/v1/keys?limit=\(bad)", method: .get) {
                    #expect($0.status == .badRequest)
                    #expect($0.errorCode == "invalid_limit")
                }
            }
        }
    }

    @Test("consistency must be linearizable or stale")
    func consistencyParameter() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/keys/k", method: .put, body: ByteBuffer(string: "v"))
            try await client.execute(uri: "/v1/keys/k?consistency=stale", method: .get) { #expect($0.text == "v") }
            try await client.execute(uri: "/v1/keys/k?consistency=linearizable", method: .get) { #expect($0.text == "v") }
            try await client.execute(uri: "/v1/keys/k?consistency=eventual", method: .get) {
                #expect($0.status == .badRequest)
                #expect($0.errorCode == "invalid_consistency")
            }
        }
    }

    @Test("status reports the node, its mode and its key count")
    func status() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/keys/a", method: .put, body: ByteBuffer(string: "1"))
            try await client.execute(uri: "/v1/status", method: .get) {
                #expect($0.status == .ok)
                #expect($0.headers[.contentType] == "application/json")
                let text = $0.text
                for field in [#""node_id":"node1""#, #""status":"ok""#, #""mode":"standalone""#,
                              #""is_leader":true"#, #""keys":1"#, #""leader_id":"node1""#, #""version":""#,
                              #""uptime_seconds":"#] {
                    #expect(text.contains(field), "\(field) in \(text)")
                }
            }
        }
    }

    @Test("health, liveness and readiness answer 200; join is refused without Raft")
    func healthAndJoin() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/health", method: .get) {
                #expect($0.status == .ok)
                #expect($0.text.contains(#""status":"ok""#))
            }
            for uri in ["/livez", "/readyz"] {
                try await client.execute(uri: uri, method: .get) { #expect($0.status == .ok && $0.text.contains(#""status":"ok""#), "\(uri)") }
            }
            try await client.execute(uri: "/v1/join", method: .post,
                                     body: ByteBuffer(string: #"{"node_id":"node2","raft_addr":"127.0.0.1:12001"}"#)) {
                #expect($0.status == .conflict)
                #expect($0.errorCode == "raft_disabled")
            }
        }
    }

    @Test("concurrent writes are all acknowledged and all stored (group commit)")
    func concurrentWrites() async throws {
        try await withAPI { client in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<200 {
                    group.addTask {
                        try await client.execute(uri: "/v1/keys/c\(i)", method: .put, body: ByteBuffer(string: "\(i)")) {
                            #expect($0.status == .noContent)
                        }
                    }
                }
                try await group.waitForAll()
            }
            for i in stride(from: 0, to: 200, by: 17) {
                try await client.execute(uri: "/v1/keys/c\(i)", method: .get) { #expect($0.text == "\(i)") }
            }
            try await client.execute(uri: "/v1/status", method: .get) { #expect($0.text.contains(#""keys":200"#)) }
        }
    }
}

extension HTTPAPITests {
    @Test("metrics count requests by route and status, and commits, in Prometheus text")
    func metrics() async throws {
        try await withAPI { client in
            try await client.execute(uri: "/v1/keys/m1", method: .put, body: ByteBuffer(string: "v"))
            try await client.execute(uri: "/v1/keys/absent", method: .get)
            try await client.execute(uri: "/metrics", method: .get) {
                #expect($0.status == .ok)
                #expect($0.headers[.contentType]?.hasPrefix("text/plain") == true)
                let text = $0.text
                for line in [#"keyper_http_requests_total{route="/v1/keys/{key}",method="PUT",status="204"} 1"#,
                             #"keyper_http_requests_total{route="/v1/keys/{key}",method="GET",status="404"} 1"#,
                             "keyper_writes_committed_total 1", "keyper_commit_duration_seconds_count 1"] {
                    #expect(text.contains(line), "missing \(line) in\n\(text)")
                }
                #expect(!text.contains("m1"), "keys must never become label values")
            }
        }
    }
}

@Suite("Configuration")
struct ConfigurationTests {
    @Test("listen addresses parse the prototype's forms")
    func listenAddresses() {
        #expect(HostPort(parsing: ":8080", listening: true) == HostPort(host: "0.0.0.0", port: 8080))
        #expect(HostPort(parsing: "127.0.0.1:8081", listening: true) == HostPort(host: "127.0.0.1", port: 8081))
        #expect(HostPort(parsing: "localhost:0", listening: true) == HostPort(host: "localhost", port: 0))
        #expect(HostPort(parsing: "[::1]:9000", listening: true) == HostPort(host: "::1", port: 9000))
        #expect(HostPort(parsing: "8080", listening: true) == nil)
        #expect(HostPort(parsing: ":99999", listening: true) == nil)
        #expect(HostPort(parsing: "::1:80", listening: true) == nil)
        // To dial, a host and a port in 1...65535.
        #expect(HostPort(parsing: "127.0.0.1:12000") == HostPort(host: "127.0.0.1", port: 12000))
        #expect(HostPort(parsing: "[::1]:9") == HostPort(host: "::1", port: 9))
        #expect(HostPort(parsing: ":9") == nil)
        #expect(HostPort(parsing: "host") == nil)
        #expect(HostPort(parsing: "host:0") == nil)
        #expect(HostPort(parsing: "[]:80") == nil)
        #expect(HostPort.parseURL("http://[::1]:8080/v1/join")! == (HostPort(host: "::1", port: 8080), "/v1/join"))
        #expect(HostPort.parseURL("http://node2:8080")! == (HostPort(host: "node2", port: 8080), "/"))
        #expect(HostPort.parseURL("https://node2:8080") == nil)
    }

    @Test("validate rejects a bad node id and limits")
    func validation() {
        var configuration = NodeConfiguration()
        #expect(throws: Never.self) { try configuration.validate() }
        configuration.nodeID = "has space"
        #expect(throws: ConfigurationError.self) { try configuration.validate() }
        configuration.nodeID = "node1"
        configuration.keyBytesMax = 0
        #expect(throws: ConfigurationError.self) { try configuration.validate() }
    }
}
