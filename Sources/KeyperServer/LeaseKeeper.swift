import KeyperStorage
import Synchronization

/// The leader's clock for leases (docs/leases.md).
///
/// Which leases exist is replicated state; when each expires is not: the leader keeps a
/// deadline per lease on its own monotonic clock, moves it on every keepalive, and when one
/// passes it proposes the lease's revoke through the log, so every replica deletes the keys
/// at the same point. A node that becomes leader (or leader again, in a new term) gives every
/// lease a full TTL from then on: a lease never expires early because of a failover, and
/// lives at most one TTL longer.
///
/// Takes no clock and no I/O: the caller passes the time and the leadership, and proposes
/// the revokes ``tick(leadership:now:)`` returns (``LeaseKeeperTask`` does both).
final class LeaseKeeper: Sendable {
    /// How many revokes may be in flight at once: expiries past that wait for the next tick.
    static let revokesInFlightMax = 64

    private struct State {
        /// The term of the leadership the deadlines belong to (nil: not leader).
        var term: UInt64?
        /// The lease generation the deadlines were last matched with.
        var generation: UInt64?
        var deadlines: [UInt64: ContinuousClock.Instant] = [:]
        var ttls: [UInt64: UInt64] = [:]
        /// The grant each deadline belongs to: a lease revoked and granted again under the same
        /// id between two ticks starts a full TTL, not the old lease's remainder.
        var grants: [UInt64: UInt64] = [:]
        /// Leases whose revoke was proposed and has not finished: keepalives of these fail.
        var revoking: Set<UInt64> = []
    }

    private let store: KVStore
    private let state = Mutex(State())

    init(store: KVStore) {
        self.store = store
    }

    /// Brings the deadlines up to date with the leadership and the store's leases, and
    /// returns the leases to revoke now (each once, until ``finished(revoking:)``).
    /// `leadership`: this node's term while it is leader, else nil.
    func tick(leadership: UInt64?, now: ContinuousClock.Instant) throws -> [UInt64] {
        guard let term = leadership else {
            state.withLock { $0 = State() }
            return []
        }
        let generation = try store.leaseGeneration()
        let current = state.withLock { $0.term == term && $0.generation == generation }
        // Read outside the keeper's lock: the store's lock is the one applies take.
        let leases = current ? nil : try store.leaseTTLs()
        return state.withLock { state in
            if state.term != term {
                // A new leadership: every lease starts a full TTL now.
                state = State(term: term)
            }
            if let leases, state.generation != leases.generation {
                var ttls: [UInt64: UInt64] = [:]
                ttls.reserveCapacity(leases.leases.count)
                for (id, ttl, grant) in leases.leases {
                    ttls[id] = ttl
                    if state.deadlines[id] == nil || state.grants[id].map({ $0 != grant }) == true {
                        state.deadlines[id] = now + .seconds(ttl)
                    }
                    state.grants[id] = grant
                }
                state.deadlines = state.deadlines.filter { ttls[$0.key] != nil }
                state.grants = state.grants.filter { ttls[$0.key] != nil }
                state.revoking = state.revoking.filter { ttls[$0] != nil }
                state.ttls = ttls
                state.generation = leases.generation
            }
            var expired: [UInt64] = []
            let room = Self.revokesInFlightMax - state.revoking.count
            guard room > 0 else { return [] }
            for (id, deadline) in state.deadlines where deadline <= now && !state.revoking.contains(id) {
                expired.append(id)
                if expired.count == room { break }
            }
            state.revoking.formUnion(expired)
            return expired.sorted()
        }
    }

    /// A revoke proposed by ``tick(leadership:now:)`` ended: `gone` when the lease is no more
    /// (revoked, or already gone), else it failed and the next tick proposes it again while
    /// this node leads.
    func finished(revoking id: UInt64, gone: Bool) {
        state.withLock { state in
            state.revoking.remove(id)
            if gone {
                state.deadlines[id] = nil
                state.ttls[id] = nil
            }
        }
    }

    enum KeepAlive: Equatable {
        /// The lease's deadline is a full TTL from now.
        case renewed(ttlSeconds: UInt64)
        /// The lease is expiring (its revoke is under way).
        case expired
        /// The keeper already counts a later term than `term`.
        case notLeader
    }

    /// Moves the lease's deadline to a full TTL from `now`. The caller has checked, after a
    /// read barrier, that the lease exists with `ttlSeconds`; `term` is the leadership it
    /// saw. A lease the keeper does not know yet (granted, not yet seen by a tick) is taken in.
    func keepAlive(_ id: UInt64, ttlSeconds: UInt64, term: UInt64, now: ContinuousClock.Instant) -> KeepAlive {
        state.withLock { state in
            if state.term != term {
                // Leadership taken up before the clock's next tick: this keepalive starts it.
                if let known = state.term, known > term { return .notLeader }
                state = State(term: term)
            }
            guard !state.revoking.contains(id) else { return .expired }
            state.deadlines[id] = now + .seconds(ttlSeconds)
            state.ttls[id] = ttlSeconds
            return .renewed(ttlSeconds: ttlSeconds)
        }
    }

    /// How long the lease has left, as this leader sees it (nil: not leader, or unknown).
    func remaining(_ id: UInt64, now: ContinuousClock.Instant) -> Duration? {
        state.withLock { state in
            guard state.term != nil, let deadline = state.deadlines[id] else { return nil }
            return max(.zero, deadline - now)
        }
    }
}

/// Runs a ``LeaseKeeper``: a tick every `interval`, each expired lease revoked through
/// `revoke` (a write of the node, answering whether the lease is gone), until cancelled.
enum LeaseKeeperTask {
    static func start(keeper: LeaseKeeper, interval: Duration = .milliseconds(100),
                      leadership: @escaping @Sendable () -> UInt64?,
                      revoke: @escaping @Sendable (UInt64) async -> Bool) -> Task<Void, Never> {
        Task.detached {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let expired = try? keeper.tick(leadership: leadership(), now: .now) else { continue }
                for id in expired {
                    Task { keeper.finished(revoking: id, gone: await revoke(id)) }
                }
            }
        }
    }
}
