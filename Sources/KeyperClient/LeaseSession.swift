import NIOHTTP1
import Synchronization

/// A lease kept alive in the background, for as long as a lock or a candidacy needs it.
public final class LeaseSession: Sendable {
    public let id: UInt64
    public let ttlSeconds: UInt64
    private let endpoints: KeyperClient
    private let keeper = Mutex<Task<Void, Never>?>(nil)
    /// When the grant was asked for: the lease's first deadline is no earlier than a TTL after.
    private let grantAsked: ContinuousClock.Instant

    private init(id: UInt64, ttlSeconds: UInt64, endpoints: KeyperClient, grantAsked: ContinuousClock.Instant) {
        self.id = id
        self.ttlSeconds = ttlSeconds
        self.endpoints = endpoints
        self.grantAsked = grantAsked
    }

    /// Grants a lease of `ttl` ("10s", "1m", or seconds).
    public static func grant(ttl: String, endpoints: KeyperClient) async throws -> LeaseSession {
        let body = #"{"ttl":"# + (UInt64(ttl) != nil ? ttl : "\"\(ttl)\"") + "}"
        let asked = ContinuousClock.now
        let answer = try await endpoints.send(.POST, "/v1/leases", body: Array(body.utf8))
        guard answer.status == 201, let id = answer.jsonNumber("id"), let seconds = answer.jsonNumber("ttl_seconds") else {
            throw HTTPRequestError("could not grant a lease: \(answer.status) \(answer.text)")
        }
        return LeaseSession(id: id, ttlSeconds: seconds, endpoints: endpoints, grantAsked: asked)
    }

    /// Keeps the lease alive (a keepalive every third of its TTL) until ``stop()``. `check`
    /// runs beside the keepalives (never delaying one) and answers why the holder's claim is
    /// gone, or nil while it stands. `onLost` is called once: the lease expired or was revoked,
    /// `check` said so, or no keepalive was answered for the TTL counted from when the last
    /// answered one was *sent* (the server's deadline is no later than that plus the TTL), less
    /// a margin, so the holder stops before anyone else can take over.
    public func keepAlive(check: @escaping @Sendable () async -> String? = { nil }, onLost: @escaping @Sendable (String) -> Void) {
        let (id, ttl, endpoints, grantAsked) = (self.id, Duration.seconds(Int64(ttlSeconds)), self.endpoints, self.grantAsked)
        let margin = min(.milliseconds(500), ttl / 5)
        let lost = LostOnce(onLost)
        let task = Task {
            var lastSent = grantAsked
            let checking = Flag()
            while !Task.isCancelled && !lost.fired {
                let left = lastSent + ttl - margin - .now
                guard left > .zero else {
                    lost.fire("no keepalive of lease \(id) was answered within its TTL")
                    return
                }
                let sent = ContinuousClock.now
                let timeout = min(ttl / 3, left) / endpoints.endpoints.count
                if let answer = try? await endpoints.send(.POST, "/v1/leases/\(id)/keepalive", timeout: max(timeout, .milliseconds(100))) {
                    if answer.status == 200 {
                        lastSent = sent
                        // One check at a time, beside the keepalives.
                        if checking.set() {
                            Task {
                                if let reason = await check() { lost.fire(reason) }
                                checking.clear()
                            }
                        }
                        try? await Task.sleep(for: ttl / 3)
                        continue
                    }
                    if answer.errorCode == "lease_not_found" {
                        lost.fire("lease \(id) expired or was revoked")
                        return
                    }
                }
                try? await Task.sleep(for: min(.milliseconds(200), max(.zero, lastSent + ttl - margin - .now)))
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

/// Calls its closure once, whoever fires first.
final class LostOnce: Sendable {
    private let state: Mutex<(@Sendable (String) -> Void)?>

    init(_ body: @escaping @Sendable (String) -> Void) {
        state = Mutex(body)
    }

    var fired: Bool { state.withLock { $0 == nil } }

    func fire(_ reason: String) {
        let body = state.withLock { body in
            defer { body = nil }
            return body
        }
        body?(reason)
    }
}

/// A flag one holder sets at a time.
final class Flag: Sendable {
    private let value = Mutex(false)

    /// Sets it; false when it was set already.
    func set() -> Bool {
        value.withLock { set in
            defer { set = true }
            return !set
        }
    }

    func clear() {
        value.withLock { $0 = false }
    }
}
