#if canImport(Glibc)
import Glibc
#endif
import KeyperClusterSimulation
import Testing

private func environment(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}

/// The seeds of batch `batch` of `batches`: `KEYPER_CLUSTER_SEEDS` seeds in all (default 500),
/// from `KEYPER_CLUSTER_START` (default 0); batches run in parallel.
private func seeds(batch: Int, of batches: Int) -> [UInt64] {
    let count = environment("KEYPER_CLUSTER_SEEDS").flatMap(UInt64.init) ?? 500
    let start = environment("KEYPER_CLUSTER_START").flatMap(UInt64.init) ?? 0
    return (start..<(start + count)).filter { Int($0 % UInt64(batches)) == batch }
}

@Suite("The shipped replica under the deterministic cluster simulation")
struct ClusterSimulationTests {
    static let batches = 10

    @Test("Three replicas under crashes, torn writes, partitions, drops and transfers stay safe, live and linearizable",
          arguments: 0..<batches)
    func seedBatch(batch: Int) {
        for seed in seeds(batch: batch, of: Self.batches) {
            do {
                _ = try ClusterSimulation(seed: seed).run()
            } catch {
                Issue.record("\(error)\n  replay: swift run raft-sim cluster --start \(seed) --seeds 1 --history --trace")
            }
        }
    }

    @Test("A seed replays exactly: two runs give the same report")
    func deterministicReplay() throws {
        let first = try ClusterSimulation(seed: 7).run()
        let second = try ClusterSimulation(seed: 7).run()
        #expect(first.description == second.description)
        #expect(first.writesAcknowledged > 0 && first.readsAcknowledged > 0 && first.crashes > 0)
    }
}
