import KeyperHistory
import Testing

private func write(_ key: String, _ value: String, _ call: UInt64, _ end: UInt64, _ outcome: ClientOperation.Outcome = .ok) -> ClientOperation {
    ClientOperation(key: key, kind: .write, value: value, callTime: call, returnTime: end, outcome: outcome)
}

private func read(_ key: String, _ value: String?, _ call: UInt64, _ end: UInt64) -> ClientOperation {
    ClientOperation(key: key, kind: .read, value: value, callTime: call, returnTime: end, outcome: .ok)
}

@Suite("Linearizability checker")
struct LinearizabilityTests {
    @Test("A sequential history is linearizable")
    func sequential() {
        let history = [write("k", "1", 1, 2), read("k", "1", 3, 4), write("k", "2", 5, 6), read("k", "2", 7, 8)]
        #expect(LinearizabilityChecker.check(history).isLinearizable)
    }

    @Test("A stale read after a completed write is not linearizable")
    func staleRead() {
        let history = [write("k", "1", 1, 2), write("k", "2", 3, 4), read("k", "1", 5, 6)]
        let result = LinearizabilityChecker.check(history)
        #expect(!result.isLinearizable)
        #expect(result.failingKey == "k")
    }

    @Test("Concurrent operations may be ordered either way")
    func concurrent() {
        let history = [write("k", "1", 1, 10), read("k", "1", 2, 3), read("k", nil, 0, 4)]
        #expect(LinearizabilityChecker.check(history).isLinearizable)
    }

    @Test("Two reads cannot see values in opposite orders")
    func oppositeOrders() {
        let history = [
            write("k", "1", 1, 20), write("k", "2", 1, 20),
            read("k", "1", 2, 3), read("k", "2", 4, 5), read("k", "1", 6, 7),
        ]
        #expect(!LinearizabilityChecker.check(history).isLinearizable)
    }

    @Test("An indeterminate write may have taken effect, or not")
    func indeterminateWrite() {
        let tookEffect = [write("k", "1", 1, 0, .indeterminate), read("k", "1", 5, 6)]
        let didNot = [write("k", "1", 1, 0, .indeterminate), read("k", nil, 5, 6)]
        #expect(LinearizabilityChecker.check(tookEffect).isLinearizable)
        #expect(LinearizabilityChecker.check(didNot).isLinearizable)
    }

    @Test("A failed write never takes effect")
    func failedWrite() {
        let history = [write("k", "1", 1, 2, .failed), read("k", "1", 5, 6)]
        #expect(!LinearizabilityChecker.check(history).isLinearizable)
    }

    @Test("Deletes make a key absent; keys are checked independently")
    func deletesAndKeys() {
        let history = [
            write("a", "1", 1, 2),
            ClientOperation(key: "a", kind: .delete, value: nil, callTime: 3, returnTime: 4, outcome: .ok),
            read("a", nil, 5, 6), read("b", nil, 1, 2), write("b", "x", 3, 4), read("b", "x", 5, 6),
        ]
        #expect(LinearizabilityChecker.check(history).isLinearizable)
    }

    private func cas(_ key: String, _ expected: String?, _ value: String, _ call: UInt64, _ end: UInt64,
                     _ outcome: ClientOperation.Outcome = .ok, succeeded: Bool = true) -> ClientOperation {
        ClientOperation(key: key, kind: .cas, value: value, callTime: call, returnTime: end, outcome: outcome, expected: expected,
                        succeeded: succeeded)
    }

    @Test("compare-and-set: a success must have found its expected value, a refusal must not have; an unanswered one may apply")
    func compareAndSet() {
        #expect(LinearizabilityChecker.check([cas("k", nil, "1", 1, 2), cas("k", "1", "2", 3, 4), read("k", "2", 5, 6)]).isLinearizable)
        // Two concurrent CAS from the same value: only one may succeed.
        #expect(!LinearizabilityChecker.check([write("k", "0", 0, 1), cas("k", "0", "a", 2, 5), cas("k", "0", "b", 2, 5)]).isLinearizable)
        #expect(LinearizabilityChecker.check([write("k", "0", 0, 1), cas("k", "0", "a", 2, 5), cas("k", "0", "b", 2, 5, succeeded: false)])
            .isLinearizable)
        // A retry answered "refused" for a CAS that was in fact applied (applied, then its retry applied again and
        // failed): the value it wrote is read later, but it says it changed nothing.
        #expect(!LinearizabilityChecker.check([write("k", "0", 0, 1), cas("k", "0", "a", 2, 5, succeeded: false), read("k", "a", 6, 7)])
            .isLinearizable)
        // A lost CAS: acknowledged, yet a later read shows the value before it.
        #expect(!LinearizabilityChecker.check([write("k", "0", 0, 1), cas("k", "0", "a", 2, 3), read("k", "0", 4, 5)]).isLinearizable)
        // Unanswered: may have applied or not.
        #expect(LinearizabilityChecker.check([write("k", "0", 0, 1), cas("k", "0", "a", 2, 0, .indeterminate), read("k", "a", 4, 5)])
            .isLinearizable)
        #expect(LinearizabilityChecker.check([write("k", "0", 0, 1), cas("k", "0", "a", 2, 0, .indeterminate), read("k", "0", 4, 5)])
            .isLinearizable)
    }
}
