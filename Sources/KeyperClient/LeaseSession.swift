import NIOHTTP1
import Synchronization

/// A lease kept alive in the background, for as long as a lock or a candidacy needs it.
public final class LeaseSession: Sendable {
    public let id: UInt64
    public let ttlSeconds: UInt64
    private let endpoints: KeyperClient
    private let keeper = Mutex<Task<Void, Never>?>(nil)

    private init(id: UInt64, ttlSeconds: UInt64, endpoints: KeyperClient) {
        self.id = id
        self.ttlSeconds = ttlSeconds
        self.endpoints = endpoints
    }

    /// Grants a lease of `ttl` ("10s", "1m", or seconds).
    public static func grant(ttl: String, endpoints: KeyperClient) async throws -> LeaseSession {
        let body = #"{"ttl":"# + (UInt64(ttl) != nil ? ttl : "\"\(ttl)\"") + "}"
        let answer = try await endpoints.send(.POST, "/v1/leases", body: Array(body.utf8))
        guard answer.status == 201, let id = answer.jsonNumber("id"), let seconds = answer.jsonNumber("ttl_seconds") else {
            throw HTTPRequestError("could not grant a lease: \(answer.status) \(answer.text)")
        }
        return LeaseSession(id: id, ttlSeconds: seconds, endpoints: endpoints)
    }

    /// Keeps the lease alive (a keepalive every third of its TTL) until ``stop()``. `check`
    /// runs after each keepalive and answers why the holder's claim is gone, or nil while it
    /// stands. `onLost` is called once: the lease expired or was revoked, `check` said so,
    /// or no keepalive was answered for a whole TTL (the lease has then expired or is about to).
    public func keepAlive(check: @escaping @Sendable () async -> String? = { nil }, onLost: @escaping @Sendable (String) -> Void) {
        let (id, ttl, endpoints) = (self.id, ttlSeconds, self.endpoints)
        let task = Task {
            var lastAnswered = ContinuousClock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int64(ttl) * 1000 / 3))
                guard !Task.isCancelled else { return }
                if let answer = try? await endpoints.send(.POST, "/v1/leases/\(id)/keepalive", timeout: .seconds(Int64(ttl))) {
                    if answer.status == 200 {
                        lastAnswered = .now
                        if let reason = await check() {
                            onLost(reason)
                            return
                        }
                        continue
                    }
                    if answer.errorCode == "lease_not_found" {
                        onLost("lease \(id) expired or was revoked")
                        return
                    }
                }
                if ContinuousClock.now - lastAnswered >= .seconds(Int64(ttl)) {
                    onLost("no keepalive of lease \(id) was answered for \(ttl)s")
                    return
                }
            }
        }
        keeper.withLock { $0 = task }
    }

    /// Stops the keepalives.
    public func stop() {
        keeper.withLock { task in
            task?.cancel()
            task = nil
        }
    }

    /// Stops the keepalives and revokes the lease (its keys go with it). Best effort: a
    /// lease not revoked expires on its own.
    public func revoke() async {
        stop()
        _ = try? await endpoints.send(.DELETE, "/v1/leases/\(id)")
    }
}
