import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeyperStorage
import KeyperTestSupport
import NIOCore
import KeyperClient
import NIOHTTP1
import Testing
@testable import KeyperServer

/// A request on a connection of its own to the live server `client` talks to: a request that
/// blocks (a lock wait) would hold up the requests behind it on a shared connection.
@discardableResult
func ownRequest(_ client: any TestClientProtocol, _ method: HTTPMethod, _ path: String, body: String = "") async throws -> HTTPResult {
    let port = try #require(client.port)
    return try await HTTPRequester.send(method, "http://127.0.0.1:\(port)\(path)", body: Array(body.utf8), timeout: .seconds(180))
}

@Suite("Locks and elections over HTTP")
struct LockAPITests {
    private func grant(_ client: any TestClientProtocol, ttl: String = "60s") async throws -> UInt64 {
        try await client.execute(uri: "/v1/leases", method: .post, body: ByteBuffer(string: #"{"ttl":"\#(ttl)"}"#)) { response in
            try #require(jsonNumber(response.text, "id").map { UInt64($0) })
        }
    }

    @Test("one holder at a time; try-once is 409 naming the holder; a waiter takes over on release, with a larger fencing token; re-entrant per lease")
    func lockHandOver() async throws {
        try await withAPI(.live) { client in
            let (a, b) = (try await grant(client), try await grant(client))
            let first = try await client.execute(uri: "/v1/locks/jobs?lease=\(a)", method: .post) { response in
                #expect(response.status == .ok, "\(response.text)")
                #expect(response.text.contains(#""name":"jobs","key":"_keyper/locks/jobs/"#) && response.text.contains(#""lease":\#(a)"#))
                return try #require(jsonNumber(response.text, "revision"))
            }
            // The same lease again: it holds already, with the same token.
            try await client.execute(uri: "/v1/locks/jobs?lease=\(a)&wait=0", method: .post) { #expect(jsonNumber($0.text, "revision") == first) }
            try await client.execute(uri: "/v1/locks/jobs?lease=\(b)&wait=0", method: .post) { response in
                #expect(response.status == .conflict && response.errorCode == "lock_held")
                #expect(jsonNumber(response.text, "holder_lease") == Double(a) && jsonNumber(response.text, "holder_revision") == first)
            }
            // b left the line when its try failed.
            try await client.execute(uri: "/v1/locks/jobs", method: .get) { response in
                #expect(response.status == .ok && jsonNumber(response.text, "lease") == Double(a) && jsonNumber(response.text, "waiters") == 0)
            }
            async let second = ownRequest(client, .POST, "/v1/locks/jobs?lease=\(b)&wait=60s")
            try await waitForWaiters(client, "jobs", 1)
            try await client.execute(uri: "/v1/locks/jobs?lease=\(a)", method: .delete) { #expect($0.status == .noContent) }
            let took = try await second
            #expect(took.status == 200 && (jsonNumber(took.text, "revision") ?? 0) > first, "\(took.text)")
            try await client.execute(uri: "/v1/locks/jobs", method: .get) { #expect(jsonNumber($0.text, "lease") == Double(b)) }
            try await client.execute(uri: "/v1/locks/jobs?lease=\(a)", method: .delete) { #expect($0.status == .notFound && $0.errorCode == "not_a_candidate") }
            // keep_place: a wait that ends keeps the waiter in line (its lease is its place).
            let c = try await grant(client)
            try await client.execute(uri: "/v1/locks/jobs?lease=\(c)&wait=0&keep_place=true", method: .post) { #expect($0.errorCode == "lock_held") }
            try await client.execute(uri: "/v1/locks/jobs", method: .get) { #expect(jsonNumber($0.text, "waiters") == 1) }
            try await client.execute(uri: "/v1/locks/jobs?lease=\(b)", method: .delete) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/locks/jobs?lease=\(c)&wait=0", method: .post) { #expect($0.status == .ok && jsonNumber($0.text, "lease") == Double(c)) }
        }
    }

    private func waitForWaiters(_ client: any TestClientProtocol, _ name: String, _ count: Int, kind: String = "locks") async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let waiters = try await client.execute(uri: "/v1/\(kind)/\(name)", method: .get) { jsonNumber($0.text, "waiters") }
            if waiters == Double(count) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting for \(count) waiters")
    }

    @Test("a holder whose lease expires loses the lock to the next in line; ?ttl= makes the lease")
    func expiryReleases() async throws {
        try await withAPI(.live) { client in
            let holder = try await client.execute(uri: "/v1/locks/expiring?ttl=1s", method: .post) { response in
                #expect(response.status == .ok)
                return try #require(jsonNumber(response.text, "lease").map { UInt64($0) })
            }
            let waiter = try await grant(client)
            let asked = ContinuousClock.now
            try await client.execute(uri: "/v1/locks/expiring?lease=\(waiter)&wait=60s", method: .post) { response in
                #expect(response.status == .ok && jsonNumber(response.text, "lease") == Double(waiter))
            }
            #expect(ContinuousClock.now - asked > .milliseconds(100))
            try await client.execute(uri: "/v1/leases/\(holder)", method: .get) { #expect($0.errorCode == "lease_not_found") }
        }
    }

    @Test("under contention from many clients, lock holders never overlap: unguarded increments under the lock lose nothing")
    func mutualExclusion() async throws {
        try await withAPI(.live) { client in
            let clients = 6
            let rounds = 5
            try await client.execute(uri: "/v1/keys/counter", method: .put, body: ByteBuffer(string: "0")) { _ in }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<clients {
                    group.addTask {
                        let granted = try await ownRequest(client, .POST, "/v1/leases", body: #"{"ttl":"60s"}"#)
                        let lease = try #require(jsonNumber(granted.text, "id").map { UInt64($0) })
                        var lastToken = 0.0
                        for _ in 0..<rounds {
                            let locked = try await ownRequest(client, .POST, "/v1/locks/counter?lease=\(lease)&wait=120s")
                            #expect(locked.status == 200, "\(locked.text)")
                            let token = jsonNumber(locked.text, "revision") ?? 0
                            #expect(token > lastToken)
                            lastToken = token
                            // Read, then write without a condition: only the lock keeps this safe.
                            let value = Int(try await ownRequest(client, .GET, "/v1/keys/counter").text) ?? -1
                            try await ownRequest(client, .PUT, "/v1/keys/counter", body: "\(value + 1)")
                            #expect(try await ownRequest(client, .DELETE, "/v1/locks/counter?lease=\(lease)").status == 204)
                        }
                    }
                }
                try await group.waitForAll()
            }
            try await client.execute(uri: "/v1/keys/counter", method: .get) { #expect($0.text == "\(clients * rounds)") }
        }
    }

    @Test("an election: the first candidate leads, others wait; the leader proclaims new values, others cannot; on resignation the next leads")
    func election() async throws {
        try await withAPI(.live) { client in
            let (a, b) = (try await grant(client), try await grant(client))
            try await client.execute(uri: "/v1/elections/primary", method: .get) { #expect($0.status == .notFound && $0.errorCode == "no_election_leader") }
            try await client.execute(uri: "/v1/elections/primary?lease=\(a)", method: .post, body: ByteBuffer(string: "node-a")) { response in
                #expect(response.status == .ok && response.text.contains(#""value":"node-a""#))
            }
            try await client.execute(uri: "/v1/elections/primary?lease=\(b)&wait=0", method: .post, body: ByteBuffer(string: "node-b")) {
                #expect($0.status == .conflict && $0.errorCode == "election_has_leader")
            }
            try await client.execute(uri: "/v1/elections/primary?lease=\(a)", method: .put, body: ByteBuffer(string: "node-a:v2")) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/elections/primary?lease=\(b)", method: .put, body: ByteBuffer(string: "usurper")) {
                #expect($0.status == .conflict && $0.errorCode == "not_election_leader")
            }
            try await client.execute(uri: "/v1/elections/primary", method: .get) { #expect($0.text.contains(#""value":"node-a:v2""#)) }
            async let campaign = ownRequest(client, .POST, "/v1/elections/primary?lease=\(b)", body: "node-b")
            try await waitForWaiters(client, "primary", 1, kind: "elections")
            try await client.execute(uri: "/v1/elections/primary?lease=\(a)", method: .delete) { #expect($0.status == .noContent) }
            #expect(try await campaign.text.contains(#""value":"node-b""#))
            try await client.execute(uri: "/v1/elections/primary", method: .get) { #expect($0.text.contains(#""lease":\#(b)"#)) }
        }
    }

    @Test("bad lock requests are 4xx with a code, and leave no candidate behind")
    func badInput() async throws {
        try await withAPI { client in
            let lease = try await grant(client)
            let cases: [(String, HTTPRequest.Method, HTTPResponse.Status, String)] = [
                ("/v1/locks/a%20b?lease=\(lease)", .post, .badRequest, "invalid_name"),
                ("/v1/locks/\(String(repeating: "n", count: 129))?lease=\(lease)", .post, .badRequest, "invalid_name"),
                ("/v1/locks/job", .post, .badRequest, "missing_lease"),
                ("/v1/locks/job?lease=\(lease)&ttl=5s", .post, .badRequest, "conflicting_lease"),
                ("/v1/locks/job?lease=x", .post, .badRequest, "invalid_lease_id"),
                ("/v1/locks/job?lease=\(lease)&wait=forever", .post, .badRequest, "invalid_wait"),
                ("/v1/locks/job?lease=\(lease)&wait=6m", .post, .badRequest, "invalid_wait"),
                ("/v1/locks/job?lease=77", .post, .notFound, "lease_not_found"),
                ("/v1/locks/job?ttl=0s", .post, .badRequest, "invalid_ttl"),
                ("/v1/locks/job", .delete, .badRequest, "missing_lease"),
                ("/v1/locks/job?lease=\(lease)", .delete, .notFound, "not_a_candidate"),
                ("/v1/locks/job", .get, .notFound, "lock_not_held"),
                ("/v1/elections/e?lease=\(lease)", .put, .conflict, "not_election_leader"),
            ]
            for (uri, method, status, code) in cases {
                try await client.execute(uri: uri, method: method) { #expect($0.status == status && $0.errorCode == code, "\(uri): \($0.text)") }
            }
            try await client.execute(uri: "/v1/locks/a/b", method: .get) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/v1/locks/job", method: .put) { #expect($0.status == .methodNotAllowed) }
            try await client.execute(uri: "/v1/keys?prefix=_keyper/", method: .get) { #expect($0.text.contains(#""keys":[]"#), "\($0.text)") }
            try await client.execute(uri: "/v1/leases", method: .get) { #expect(jsonNumber($0.text, "keys") == 0) }
        }
    }
}
