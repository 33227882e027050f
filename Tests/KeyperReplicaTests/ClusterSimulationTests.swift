#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import KeyperClusterSimulation
import Testing

private func environment(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}

/// Runs `seeds` on one thread of its own, one batch at a time: a simulation computes without a
/// pause, and on the test runner's cooperative pool (two threads on a 2-core machine) it would
/// starve every other test's tasks (process tests waiting for a port, say) for minutes.
private let simulationThread = DispatchQueue(label: "cluster-simulation")

/// The failures of `seeds`, each with how to replay it, and what the passing ones did in all.
private func run(_ seeds: [UInt64], nodes: Int) async -> (failures: [String], totals: ClusterSimulationReport) {
    await withCheckedContinuation { continuation in
        simulationThread.async {
            var failures: [String] = []
            var totals = ClusterSimulationReport()
            for seed in seeds {
                do {
                    let report = try ClusterSimulation(seed: seed, options: ClusterSimulationOptions(nodeCount: nodes)).run()
                    totals.add(report)
                } catch {
                    failures.append("\(error)\n  replay: swift run -c release raft-sim --nodes \(nodes) --start \(seed) --seeds 1 --history --trace")
                }
            }
            continuation.resume(returning: (failures, totals))
        }
    }
}

/// The seeds of batch `batch` of `batches`: `count` seeds in all (or `variable`'s value), from
/// `KEYPER_CLUSTER_START` (default 0).
private func seeds(batch: Int, of batches: Int, count: UInt64, variable: String) -> [UInt64] {
    let count = environment(variable).flatMap(UInt64.init) ?? count
    let start = environment("KEYPER_CLUSTER_START").flatMap(UInt64.init) ?? 0
    return (start..<(start + count)).filter { Int($0 % UInt64(batches)) == batch }
}

@Suite("The shipped replica under the deterministic cluster simulation")
struct ClusterSimulationTests {
    @Test("Three replicas under crashes, torn writes, partitions, drops, transfers, removals, wiped and full disks stay safe, live and linearizable",
          arguments: 0..<10)
    func threeNodes(batch: Int) async {
        let batchSeeds = seeds(batch: batch, of: 10, count: 500, variable: "KEYPER_CLUSTER_SEEDS")
        let (failures, totals) = await run(batchSeeds, nodes: 3)
        for failure in failures { Issue.record(Comment(rawValue: failure)) }
        // Every fault and every kind of client the simulation claims, exercised in each batch of 50.
        guard batchSeeds.count >= 50 else { return }
        #expect(totals.crashes > 0 && totals.partitions > 0 && totals.transfers > 0 && totals.fullDisks > 0, "\(totals)")
        // A seed draws wipes or removals; a batch has a few of each on average, so either will do.
        #expect(totals.wipes + totals.removals > 0 && totals.joins > 0 && totals.snapshotsInstalled > 0, "\(totals)")
        #expect(totals.writesAcknowledged > 0 && totals.readsAcknowledged > 0, "\(totals)")
        // Stale reads, nearly all checked against the applied log.
        #expect(totals.staleReads > 0 && totals.staleReadsUnchecked * 10 < totals.staleReads, "\(totals)")
    }

    @Test("Five replicas: a member replaced, or a leader that joined, while a node was away must not strand it", arguments: 0..<2)
    func fiveNodes(batch: Int) async {
        let batchSeeds = seeds(batch: batch, of: 2, count: 40, variable: "KEYPER_CLUSTER_SEEDS_5")
        for failure in await run(batchSeeds, nodes: 5).failures { Issue.record(Comment(rawValue: failure)) }
    }

    @Test("A seed replays exactly: two runs give the same report")
    func deterministicReplay() async throws {
        let reports = await withCheckedContinuation { continuation in
            simulationThread.async {
                continuation.resume(returning: (Result { try ClusterSimulation(seed: 7).run() }, Result { try ClusterSimulation(seed: 7).run() }))
            }
        }
        // A failed run says why (the error names the seed and the violation).
        let first = try reports.0.get()
        let second = try reports.1.get()
        #expect(first.description == second.description)
        #expect(first.writesAcknowledged > 0 && first.readsAcknowledged > 0 && first.crashes > 0)
    }
}
