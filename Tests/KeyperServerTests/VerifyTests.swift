import KeyperHistory
@testable import KeyperVerify
import Testing

@Suite("keyper verify", .serialized)
struct VerifyTests {
    @Test("a local 3-node cluster under kill, pause, partition, transfer and membership faults stays linearizable, loses no acknowledged write, and its lock has one holder at a time")
    func shortRun() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        var options = VerifyOptions()
        options.localCluster = 3
        options.binary = KeyperProcess.executablePath
        options.duration = .seconds(25)
        options.clients = 4
        options.lockers = 2
        let summary = try await Verifier(options: options, log: { _ in }).run()
        print(summary)
        #expect(summary.passed, "\(summary)")
        #expect(summary.ok > 100, "the workload should make progress: \(summary)")
        #expect(summary.casSet > 10, "compare-and-set should succeed often: \(summary)")
        #expect(summary.faults.values.reduce(0, +) >= 3, "the nemesis should have struck: \(summary)")
        #expect(summary.lockAcquisitions > 3 && summary.lockIncrements > 3, "the lock should change hands: \(summary)")
    }

    @Test("the lock check flags two holders writing the same value, a fencing token going back, and a counter that lost or invented increments")
    func lockCheck() {
        typealias Increment = LockWorkload.Increment
        var good = LockWorkload.Summary()
        good.increments = [Increment(value: 1, revision: 10, token: 5, holder: 0), Increment(value: 2, revision: 12, token: 5, holder: 0),
                           Increment(value: 4, revision: 20, token: 9, holder: 1)]
        good.unanswered = 1
        #expect(LockWorkload.violations(of: good, finalCounter: 3).isEmpty && LockWorkload.violations(of: good, finalCounter: 4).isEmpty)
        #expect(LockWorkload.violations(of: good, finalCounter: 2).contains { $0.contains("the counter is 2") })
        #expect(LockWorkload.violations(of: good, finalCounter: 5).contains { $0.contains("the counter is 5") })
        var overlap = good
        overlap.increments.append(Increment(value: 2, revision: 13, token: 9, holder: 1))
        #expect(LockWorkload.violations(of: overlap, finalCounter: 4).contains { $0.contains("two holders at once") })
        var backwards = good
        backwards.increments.append(Increment(value: 5, revision: 21, token: 7, holder: 2))
        #expect(LockWorkload.violations(of: backwards, finalCounter: 5).contains { $0.contains("fencing token went back") })
    }

    @Test("the lost-write check flags an acknowledged write that nothing could have overwritten")
    func lostWriteCheck() {
        typealias Op = KeyperHistory.ClientOperation
        let history = [
            Op(key: "k", kind: .write, value: "a", callTime: 1, returnTime: 2, outcome: .ok),
            Op(key: "k", kind: .write, value: "b", callTime: 3, returnTime: 4, outcome: .ok),
            Op(key: "k", kind: .read, value: "a", callTime: 10, returnTime: 11, outcome: .ok),
        ]
        #expect(Verifier.lostWrites(history).count == 1)
        var overwritten = history
        overwritten.append(Op(key: "k", kind: .write, value: "a", callTime: 5, returnTime: 0, outcome: .indeterminate))
        // "a" was written again (indeterminately) after "b": reading "a" at the end is fine.
        #expect(Verifier.lostWrites(overwritten).isEmpty)
    }

    @Test("the watch check flags an event twice or out of order, a missing revision, a stream that disagrees, a missed write")
    func watchCheck() {
        typealias Op = KeyperHistory.ClientOperation
        func put(_ revision: UInt64, _ value: String, index: Int? = nil) -> WatchedEvent {
            WatchedEvent(revision: revision, index: index, kind: "put", key: "k", value: value)
        }
        let history = [Op(key: "k", kind: .write, value: "a", callTime: 1, returnTime: 2, outcome: .ok),
                       Op(key: "k", kind: .write, value: "b", callTime: 3, returnTime: 4, outcome: .ok),
                       Op(key: "k", kind: .write, value: "c", callTime: 5, returnTime: 6, outcome: .ok),
                       Op(key: "k", kind: .write, value: "x", callTime: 5, returnTime: 6, outcome: .failed)]
        let good = [put(1, "a"), put(2, "b", index: 0), put(2, "b2"), put(3, "c")]
        #expect(Verifier.watchViolations([("one", good, []), ("two", good, [])], history: history).isEmpty)
        let twice = [put(1, "a"), put(2, "b", index: 0), put(2, "b", index: 0), put(2, "b2"), put(3, "c")]
        #expect(Verifier.watchViolations([("one", twice, [])], history: history).first?.contains("out of order or twice") == true)
        let gap = [put(1, "a"), put(3, "c")]
        #expect(Verifier.watchViolations([("one", good, []), ("two", gap, [])], history: history).contains { $0.contains("revision 2 is missing") })
        #expect(Verifier.watchViolations([("one", good, []), ("two", gap, [1])], history: history).isEmpty)  // a recorded restart
        let different = [put(1, "a"), put(2, "b", index: 0), put(2, "zz"), put(3, "c")]
        #expect(Verifier.watchViolations([("one", good, []), ("two", different, [])], history: history).contains { $0.contains("another stream saw") })
        let failedSeen = good + [put(4, "x")]
        #expect(Verifier.watchViolations([("one", failedSeen, [])], history: history).contains { $0.contains("failed was watched") })
        #expect(Verifier.watchViolations([("one", Array(good.prefix(1)) + [put(2, "b2"), put(3, "c")], [])], history: history)
            .contains { $0.contains("no stream saw the acknowledged write of k=b") })
    }
}
