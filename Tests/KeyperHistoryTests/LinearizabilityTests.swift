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
}
