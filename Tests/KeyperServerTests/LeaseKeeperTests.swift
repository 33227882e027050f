import KeyperStorage
import KeyperTestSupport
import Testing
@testable import KeyperServer

@Suite("The leader's lease clock")
struct LeaseKeeperTests {
    @Test("a lease expires a TTL after it was taken in or last kept alive, once; a failed revoke is proposed again")
    func expiryAndKeepAlive() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            defer { store.close() }
            let keeper = LeaseKeeper(store: store)
            let start = ContinuousClock.now
            try store.apply([KVWrite(.grantLease(id: 1, ttlSeconds: 10)), KVWrite(.grantLease(id: 2, ttlSeconds: 5))])
            #expect(try keeper.tick(leadership: 3, now: start) == [])
            #expect(keeper.remaining(2, now: start + .seconds(1)) == .seconds(4))
            #expect(try keeper.tick(leadership: 3, now: start + .seconds(4)) == [])
            #expect(keeper.keepAlive(2, ttlSeconds: 5, term: 3, now: start + .seconds(4)) == .renewed(ttlSeconds: 5))
            #expect(try keeper.tick(leadership: 3, now: start + .seconds(8)) == [])
            #expect(keeper.keepAlive(2, ttlSeconds: 5, term: 3, now: start + .seconds(8)) == .renewed(ttlSeconds: 5))
            #expect(try keeper.tick(leadership: 3, now: start + .seconds(10)) == [1])
            // Proposed once: not again while the revoke is under way, and keepalives now fail.
            #expect(try keeper.tick(leadership: 3, now: start + .seconds(11)) == [])
            #expect(keeper.keepAlive(1, ttlSeconds: 10, term: 3, now: start + .seconds(11)) == .expired)
            // The revoke failed (leadership wavered): proposed again at the next tick.
            keeper.finished(revoking: 1, gone: false)
            #expect(try keeper.tick(leadership: 3, now: start + .seconds(11)) == [1])
            try store.apply([KVWrite(.revokeLease(id: 1))])
            keeper.finished(revoking: 1, gone: true)
            #expect(try keeper.tick(leadership: 3, now: start + .seconds(12)) == [])
            #expect(keeper.remaining(1, now: start + .seconds(12)) == nil)
            #expect(try keeper.tick(leadership: 3, now: start + .seconds(13)) == [2])
        }
    }

    @Test("a new leadership gives every lease a full TTL from when it began; a follower keeps no deadlines")
    func failoverNeverExpiresEarly() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            defer { store.close() }
            let keeper = LeaseKeeper(store: store)
            let start = ContinuousClock.now
            try store.apply([KVWrite(.grantLease(id: 1, ttlSeconds: 10))])
            #expect(try keeper.tick(leadership: 1, now: start) == [])
            // Leadership lost at 6 s: nothing is revoked while following.
            #expect(try keeper.tick(leadership: nil, now: start + .seconds(6)) == [])
            #expect(try keeper.tick(leadership: nil, now: start + .seconds(30)) == [])
            #expect(keeper.remaining(1, now: start + .seconds(30)) == nil)
            // Leader again (term 2) at 30 s: the lease has until 40 s.
            #expect(try keeper.tick(leadership: 2, now: start + .seconds(30)) == [])
            #expect(try keeper.tick(leadership: 2, now: start + .seconds(39)) == [])
            // A keepalive of an older term is refused; one of a newer term takes the keeper over.
            #expect(keeper.keepAlive(1, ttlSeconds: 10, term: 1, now: start + .seconds(39)) == .notLeader)
            #expect(keeper.keepAlive(1, ttlSeconds: 10, term: 4, now: start + .seconds(39)) == .renewed(ttlSeconds: 10))
            #expect(try keeper.tick(leadership: 4, now: start + .seconds(48)) == [])
            #expect(try keeper.tick(leadership: 4, now: start + .seconds(49)) == [1])
        }
    }

    @Test("a lease revoked and granted again under the same id between two ticks gets a full TTL, not the old one's remainder")
    func regrantedIDStartsOver() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            defer { store.close() }
            let keeper = LeaseKeeper(store: store)
            let start = ContinuousClock.now
            try store.apply([KVWrite(.grantLease(id: 7, ttlSeconds: 10))])
            #expect(try keeper.tick(leadership: 1, now: start) == [])
            try store.apply([KVWrite(.revokeLease(id: 7)), KVWrite(.grantLease(id: 7, ttlSeconds: 10))])
            #expect(try keeper.tick(leadership: 1, now: start + .seconds(9)) == [])
            #expect(try keeper.tick(leadership: 1, now: start + .seconds(11)) == [], "the new lease 7 was revoked on the old one's deadline")
            #expect(try keeper.tick(leadership: 1, now: start + .seconds(19)) == [7])
        }
    }

    @Test("at most a bounded number of revokes are in flight; the rest wait for room")
    func revokesAreBounded() throws {
        try withTemporaryDirectory { dir in
            let store = try KVStore(path: dir + "/state", durability: .normal)
            defer { store.close() }
            let keeper = LeaseKeeper(store: store)
            let start = ContinuousClock.now
            let count = LeaseKeeper.revokesInFlightMax + 10
            try store.apply((1...count).map { KVWrite(.grantLease(id: UInt64($0), ttlSeconds: 1)) })
            #expect(try keeper.tick(leadership: 1, now: start) == [])
            let first = try keeper.tick(leadership: 1, now: start + .seconds(2))
            #expect(first.count == LeaseKeeper.revokesInFlightMax)
            #expect(try keeper.tick(leadership: 1, now: start + .seconds(2)) == [])
            for id in first.prefix(10) { keeper.finished(revoking: id, gone: true) }
            let rest = try keeper.tick(leadership: 1, now: start + .seconds(2))
            #expect(rest.count == 10 && Set(rest).isDisjoint(with: first))
        }
    }
}
