#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KeyperRaft
import KeyperSimulation
import Testing

private func environment(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}

/// Seeds to run: `KEYPER_SEED=<n>` replays one seed (printing a trace with `KEYPER_TRACE=1`);
/// otherwise `KEYPER_SIM_SEEDS` seeds (default `defaultCount`) from `KEYPER_SIM_START` (default 0).
private func seedsToRun(defaultCount: UInt64) -> [UInt64] {
    if let seed = environment("KEYPER_SEED").flatMap(UInt64.init) { return [seed] }
    let count = environment("KEYPER_SIM_SEEDS").flatMap(UInt64.init) ?? defaultCount
    let start = environment("KEYPER_SIM_START").flatMap(UInt64.init) ?? 0
    return Array(start..<(start + count))
}

private func runSeeds(nodeCount: Int, defaultCount: UInt64) -> [String] {
    var failures: [String] = []
    for seed in seedsToRun(defaultCount: defaultCount) {
        let simulation = Simulation(seed: seed, options: SimulationOptions(nodeCount: nodeCount))
        simulation.trace = environment("KEYPER_TRACE") == "1"
        do {
            let report = try simulation.run()
            if environment("KEYPER_SEED") != nil { print(report) }
        } catch {
            failures.append("\(error)")
            print("SIMULATION VIOLATION nodes=\(nodeCount) \(error)\n  replay: KEYPER_SEED=\(seed) swift test --filter Simulation")
        }
    }
    return failures
}

@Suite("Simulation")
struct SimulationTests {
    @Test("Three nodes under faults keep election safety, log matching, leader completeness, state machine safety, liveness and linearizability")
    func threeNodes() {
        let failures = runSeeds(nodeCount: 3, defaultCount: 300)
        #expect(failures.isEmpty, "\(failures.count) seeds failed: \(failures.prefix(5))")
    }

    @Test("Five nodes under faults keep every invariant and a linearizable history")
    func fiveNodes() {
        let failures = runSeeds(nodeCount: 5, defaultCount: 200)
        #expect(failures.isEmpty, "\(failures.count) seeds failed: \(failures.prefix(5))")
    }

    @Test("A seed replays exactly: two runs give the same report")
    func deterministicReplay() throws {
        let first = try Simulation(seed: 42, options: SimulationOptions(nodeCount: 5)).run()
        let second = try Simulation(seed: 42, options: SimulationOptions(nodeCount: 5)).run()
        #expect(first.description == second.description)
    }

    @Test("The simulation exercises the features it claims to test")
    func coverage() throws {
        var total = SimulationReport()
        for seed in UInt64(0)..<20 {
            let report = try Simulation(seed: seed, options: SimulationOptions(nodeCount: seed % 2 == 0 ? 3 : 5)).run()
            total.leadersElected += report.leadersElected
            total.snapshotsInstalled += report.snapshotsInstalled
            total.configChangesApplied += report.configChangesApplied
            total.transfersStarted += report.transfersStarted
            total.crashes += report.crashes
            total.readsAcknowledged += report.readsAcknowledged
            total.writesAcknowledged += report.writesAcknowledged
            total.messagesDropped += report.messagesDropped
        }
        #expect(total.leadersElected > 40)
        #expect(total.snapshotsInstalled > 5)
        #expect(total.configChangesApplied > 20)
        #expect(total.transfersStarted > 5)
        #expect(total.crashes > 5)
        #expect(total.readsAcknowledged > 100)
        #expect(total.writesAcknowledged > 100)
        #expect(total.messagesDropped > 100)
    }

    @Test("Without faults a three-node cluster commits every proposal")
    func faultFreeCommits() throws {
        let simulation = Simulation(seed: 7, options: .faultFree(nodeCount: 3))
        var proposed = 0
        _ = try simulation.runFaultFree(ticks: 300) { sim in
            guard let leader = sim.leaderID, proposed < 500 else { return }
            for _ in 0..<5 where (try? sim.propose([1, 2, 3], at: leader)) != nil { proposed += 1 }
        }
        #expect(proposed == 500)
        // Bootstrap entries + one no-op per term + every proposal.
        #expect(simulation.committedEntryCount >= proposed + 3)
    }
}
