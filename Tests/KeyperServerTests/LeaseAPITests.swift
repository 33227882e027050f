import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeyperStorage
import KeyperTestSupport
import NIOCore
import Testing
@testable import KeyperServer

/// The number after `"name":` in a JSON body.
func jsonNumber(_ text: String, _ name: String) -> Double? {
    guard let range = text.range(of: "\"\(name)\":") else { return nil }
    return Double(text[range.upperBound...].prefix { "0123456789.-".contains($0) })
}

@Suite("Leases over HTTP")
struct LeaseAPITests {
    private func grant(_ client: any TestClientProtocol, _ body: String) async throws -> UInt64 {
        try await client.execute(uri: "/v1/leases", method: .post, body: ByteBuffer(string: body)) { response in
            #expect(response.status == .created, "\(response.text)")
            let id = try #require(jsonNumber(response.text, "id").map { UInt64($0) })
            #expect(response.headers[.location] == "/v1/leases/\(id)")
            return id
        }
    }

    @Test("grant, attach keys, read, keep alive, list and revoke: the keys go in one revision")
    func lifecycle() async throws {
        try await withAPI { client in
            let id = try await grant(client, #"{"ttl": "60s"}"#)
            #expect(id > 0 && id < 1 << 53)
            for key in ["svc/a", "svc/b"] {
                try await client.execute(uri: "/v1/keys/\(key)?lease=\(id)", method: .put, body: ByteBuffer(string: "up")) {
                    #expect($0.status == .noContent)
                }
            }
            try await client.execute(uri: "/v1/keys/free", method: .put, body: ByteBuffer(string: "x")) { #expect($0.status == .noContent) }
            try await client.execute(uri: "/v1/leases/\(id)", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.text.hasPrefix(#"{"id":\#(id),"ttl_seconds":60,"remaining_seconds":"#))
                #expect(response.text.hasSuffix(#""keys":["svc/a","svc/b"]}"# + "\n"))
                #expect((jsonNumber(response.text, "remaining_seconds") ?? 0) > 55)
            }
            try await client.execute(uri: "/v1/leases/\(id)/keepalive", method: .post) { response in
                #expect(response.status == .ok)
                #expect(jsonNumber(response.text, "remaining_seconds") == 60 && !response.text.contains("keys"))
            }
            let other = try await grant(client, #"{"ttl": 30, "id": 12345}"#)
            #expect(other == 12345)
            try await client.execute(uri: "/v1/leases", method: .get) { response in
                #expect(response.text == #"{"leases":[{"id":12345,"ttl_seconds":30,"keys":0},{"id":\#(id),"ttl_seconds":60,"keys":2}]}"# + "\n"
                    || response.text == #"{"leases":[{"id":\#(id),"ttl_seconds":60,"keys":2},{"id":12345,"ttl_seconds":30,"keys":0}]}"# + "\n")
            }
            try await client.execute(uri: "/v1/leases", method: .post, body: ByteBuffer(string: #"{"ttl": 30, "id": 12345}"#)) {
                #expect($0.status == .conflict && $0.errorCode == "lease_exists")
            }
            try await client.execute(uri: "/v1/leases/\(id)", method: .delete) { response in
                #expect(response.status == .ok)
                #expect(response.text == #"{"id":\#(id),"deleted":2,"revision":4}"# + "\n")
                #expect(response.headers[.keyperRevision] == "4")
            }
            for key in ["svc/a", "svc/b"] {
                try await client.execute(uri: "/v1/keys/\(key)", method: .get) { #expect($0.status == .notFound) }
            }
            try await client.execute(uri: "/v1/keys/free", method: .get) { #expect($0.status == .ok) }
            for (uri, method) in [("/v1/leases/\(id)", HTTPRequest.Method.delete), ("/v1/leases/\(id)", .get), ("/v1/leases/\(id)/keepalive", .post)] {
                try await client.execute(uri: uri, method: method) { #expect($0.status == .notFound && $0.errorCode == "lease_not_found") }
            }
            // A put naming a lease that is gone changes nothing.
            try await client.execute(uri: "/v1/keys/svc/c?lease=\(id)", method: .put, body: ByteBuffer(string: "late")) {
                #expect($0.status == .notFound && $0.errorCode == "lease_not_found")
            }
            try await client.execute(uri: "/v1/keys/svc/c", method: .get) { #expect($0.status == .notFound && $0.errorCode == "key_not_found") }
        }
    }

    @Test("a lease left alone expires and takes its keys; one kept alive does not; PUT ?ttl= makes a lease for its key")
    func expiry() async throws {
        try await withAPI(.live) { client in
            // This test's process also runs the simulation tests, which can hold every thread
            // for seconds: a step that comes a TTL late finds its lease gone, rightly. Such a
            // run proves nothing about keepalives (it is said so, not failed); expiry is never
            // early whatever the delays.
            var starved = false
            func answered(_ ok: Bool, _ what: String, asked: ContinuousClock.Instant, ttl: Duration) {
                if ok { return }
                if ContinuousClock.now - asked >= ttl { starved = true } else { Issue.record("\(what) failed within the lease's TTL") }
            }
            let keptAsked = ContinuousClock.now
            let kept = try await grant(client, #"{"ttl": "3s"}"#)
            // A lease's deadline is a TTL after the leader took it in, which is after its grant was asked for.
            var asked = ["left": ContinuousClock.now]
            let left = try await grant(client, #"{"ttl": "1s"}"#)
            try await client.execute(uri: "/v1/keys/kept?lease=\(kept)", method: .put, body: ByteBuffer(string: "k")) {
                answered($0.status == .noContent, "the put of kept", asked: keptAsked, ttl: .seconds(3))
            }
            try await client.execute(uri: "/v1/keys/left?lease=\(left)", method: .put, body: ByteBuffer(string: "l")) {
                answered($0.status == .noContent, "the put of left", asked: asked["left"]!, ttl: .seconds(1))
            }
            asked["short"] = ContinuousClock.now
            let short = try await client.execute(uri: "/v1/keys/short?ttl=1500ms", method: .put, body: ByteBuffer(string: "s")) { response in
                answered(response.status == .noContent, "the put of short", asked: asked["short"]!, ttl: .seconds(2))
                return response.headers[.keyperLease].flatMap { UInt64($0) }
            }
            if let short {
                try await client.execute(uri: "/v1/leases/\(short)", method: .get) {
                    answered($0.text.contains(#""ttl_seconds":2,"#), "the read of short's lease", asked: asked["short"]!, ttl: .seconds(2))
                }
            }
            let started = ContinuousClock.now
            var gone: [String: Duration] = [:]
            // Keepalives of `kept` until the others are gone and it has outlived its TTL. Whether
            // each came within the TTL of the one before is up to the machine: the check that it
            // never expired holds only when they all did (a starved test process proves nothing).
            var lastKeepAlive = ContinuousClock.now
            var keptInTime = true
            while (gone.count < 2 || ContinuousClock.now - started < .seconds(4)) && ContinuousClock.now - started < .seconds(30) {
                let sent = ContinuousClock.now
                if sent - lastKeepAlive >= .seconds(2) || starved { keptInTime = false }
                lastKeepAlive = sent
                try await client.execute(uri: "/v1/leases/\(kept)/keepalive", method: .post) {
                    answered($0.status == .ok || !keptInTime, "a keepalive of kept", asked: sent, ttl: .seconds(3))
                }
                for key in ["left", "short"] where gone[key] == nil {
                    try await client.execute(uri: "/v1/keys/\(key)", method: .get) { if $0.status == .notFound { gone[key] = ContinuousClock.now - asked[key]! } }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            // Never before the TTL ("1500ms" is rounded up to 2 s).
            #expect((gone["left"] ?? .zero) >= .seconds(1), "\(gone)")
            #expect((gone["short"] ?? .zero) >= .seconds(2), "\(gone)")
            try await client.execute(uri: "/v1/leases/\(left)", method: .get) { #expect($0.errorCode == "lease_not_found") }
            guard keptInTime && !starved else {
                print("the test process was starved (a keepalive came more than a TTL after the one before): the kept lease is not checked")
                return
            }
            try await client.execute(uri: "/v1/keys/kept", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.text.contains("keyper_leases_expired_total 2"))
                #expect(response.text.contains("keyper_leases 1"))
            }
        }
    }

    @Test("bad lease requests are 4xx with a code, and change nothing")
    func badInput() async throws {
        try await withAPI { client in
            let bodies: [(String, String)] = [
                ("", "invalid_json"), ("[]", "invalid_lease"), (#"{}"#, "invalid_ttl"), (#"{"ttl": "0s"}"#, "invalid_ttl"),
                (#"{"ttl": -5}"#, "invalid_ttl"), (#"{"ttl": 1.5}"#, "invalid_ttl"), (#"{"ttl": "ten"}"#, "invalid_ttl"),
                (#"{"ttl": "2y"}"#, "invalid_ttl"), (#"{"ttl": "100000h"}"#, "invalid_ttl"), (#"{"ttl": true}"#, "invalid_ttl"),
                (#"{"ttl": "10s", "id": 0}"#, "invalid_lease_id"), (#"{"ttl": "10s", "id": "7"}"#, "invalid_lease_id"),
                (#"{"ttl": "10s", "tll": 3}"#, "invalid_lease"),
            ]
            for (body, code) in bodies {
                try await client.execute(uri: "/v1/leases", method: .post, body: ByteBuffer(string: body)) { response in
                    #expect(response.status == .badRequest && response.errorCode == code, "\(body): \(response.text)")
                }
            }
            for uri in ["/v1/leases/abc", "/v1/leases/0", "/v1/leases/-1", "/v1/leases/99999999999999999999999"] {
                try await client.execute(uri: uri, method: .get) { #expect($0.status == .badRequest && $0.errorCode == "invalid_lease_id", "\(uri)") }
            }
            try await client.execute(uri: "/v1/leases/1/other", method: .post) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/v1/leases/1/keepalive", method: .get) { #expect($0.status == .methodNotAllowed) }
            let puts: [(String, String)] = [
                ("/v1/keys/k?lease=abc", "invalid_lease_id"), ("/v1/keys/k?lease=0", "invalid_lease_id"),
                ("/v1/keys/k?lease=1&ttl=10s", "conflicting_lease"), ("/v1/keys/k?ttl=0", "invalid_ttl"), ("/v1/keys/k?ttl=x", "invalid_ttl"),
            ]
            for (uri, code) in puts {
                try await client.execute(uri: uri, method: .put, body: ByteBuffer(string: "v")) { #expect($0.status == .badRequest && $0.errorCode == code, "\(uri)") }
            }
            try await client.execute(uri: "/v1/keys/k?lease=424242", method: .put, body: ByteBuffer(string: "v")) {
                #expect($0.status == .notFound && $0.errorCode == "lease_not_found")
            }
            try await client.execute(uri: "/v1/keys/k", method: .get) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/v1/leases", method: .get) { #expect($0.text == #"{"leases":[]}"# + "\n") }
            // A ttl= put whose condition fails leaves no lease behind.
            try await client.execute(uri: "/v1/keys/k?ttl=10s&prev_revision=5", method: .put, body: ByteBuffer(string: "v")) {
                #expect($0.status == .preconditionFailed)
            }
            try await client.execute(uri: "/v1/leases", method: .get) { #expect($0.text == #"{"leases":[]}"# + "\n") }
        }
    }
}
