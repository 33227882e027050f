import KeyperHistory
@testable import KeyperVerify
import Testing

@Suite("keyper verify", .serialized)
struct VerifyTests {
    @Test("a local 3-node cluster under kill, pause, partition, transfer and membership faults stays linearizable and loses no acknowledged write")
    func shortRun() async throws {
        guard KeyperProcess.binaryIsBuilt() else { return }
        var options = VerifyOptions()
        options.localCluster = 3
        options.binary = KeyperProcess.executablePath
        options.duration = .seconds(25)
        options.clients = 4
        let summary = try await Verifier(options: options, log: { _ in }).run()
        print(summary)
        #expect(summary.passed, "\(summary)")
        #expect(summary.ok > 100, "the workload should make progress: \(summary)")
        #expect(summary.casSet > 10, "compare-and-set should succeed often: \(summary)")
        #expect(summary.faults.values.reduce(0, +) >= 3, "the nemesis should have struck: \(summary)")
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
}
