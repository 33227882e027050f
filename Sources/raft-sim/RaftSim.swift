#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KeyperRaft
import KeyperSimulation

/// Long simulation runs and the core micro-benchmark, outside `swift test`:
///   swift run -c release raft-sim --seeds 100000 [--start 0] [--nodes 3|5|mixed]
///   swift run -c release raft-sim bench --batch 64 [--ticks 2000]
@main
struct RaftSim {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "bench" {
            arguments.removeFirst()
            bench(arguments)
            return
        }
        let seeds = UInt64(value(of: "--seeds", in: arguments) ?? "1000") ?? 1000
        let start = UInt64(value(of: "--start", in: arguments) ?? "0") ?? 0
        let nodes = value(of: "--nodes", in: arguments) ?? "mixed"
        let verbose = arguments.contains("--verbose")
        let began = now()
        var failures = 0
        var totals = (committed: 0, reads: 0, snapshots: 0, confChanges: 0, leaders: 0)
        for seed in start..<(start + seeds) {
            let count = nodes == "mixed" ? (seed % 2 == 0 ? 3 : 5) : (Int(nodes) ?? 3)
            var options = SimulationOptions(nodeCount: count)
            if arguments.contains("--no-membership") { options.membershipChanges = false }
            if arguments.contains("--no-transfers") { options.transfers = false }
            if arguments.contains("--no-crashes") { options.crashes = false }
            if arguments.contains("--no-snapshots") { options.snapshots = false }
            if arguments.contains("--no-partitions") { options.partitions = false }
            if arguments.contains("--no-drops") { options.dropsAndDelays = false }
            let simulation = Simulation(seed: seed, options: options)
            simulation.trace = arguments.contains("--trace")
            do {
                let report = try simulation.run()
                totals.committed += report.entriesCommitted
                totals.reads += report.readsAcknowledged
                totals.snapshots += report.snapshotsInstalled
                totals.confChanges += report.configChangesApplied
                totals.leaders += report.leadersElected
                if verbose { print(report) }
            } catch {
                failures += 1
                print("VIOLATION \(error) (nodes=\(count)); replay: KEYPER_SEED=\(seed) swift test --filter Simulation")
            }
            if (seed - start + 1) % 10_000 == 0 {
                print("... \(seed - start + 1) seeds, \(failures) failures, \(Int(now() - began))s")
            }
        }
        let elapsed = now() - began
        print("seeds=\(seeds) start=\(start) nodes=\(nodes) failures=\(failures) seconds=\(format(elapsed)) "
              + "committed=\(totals.committed) reads=\(totals.reads) snapshotsInstalled=\(totals.snapshots) "
              + "confChanges=\(totals.confChanges) leaders=\(totals.leaders)")
        if failures > 0 { exit(1) }
    }

    /// Entries committed per second through a 3-node cluster with no faults. The client keeps
    /// `batch` proposals per Ready cycle on the leader; the network delivers in one tick.
    static func bench(_ arguments: [String]) {
        let batch = Int(value(of: "--batch", in: arguments) ?? "1") ?? 1
        let ticks = Int(value(of: "--ticks", in: arguments) ?? "20000") ?? 20000
        let payload = [UInt8](repeating: 0x61, count: Int(value(of: "--bytes", in: arguments) ?? "16") ?? 16)
        let simulation = Simulation(seed: 1, options: .faultFree(nodeCount: 3))
        let began = now()
        do {
            _ = try simulation.runFaultFree(ticks: ticks) { sim in
                guard let leader = sim.leaderID else { return }
                for _ in 0..<batch { _ = try? sim.propose(payload, at: leader) }
            }
        } catch {
            print("VIOLATION \(error)")
            exit(1)
        }
        let elapsed = now() - began
        let committed = simulation.committedEntryCount
        print("batch=\(batch) ticks=\(ticks) committed=\(committed) seconds=\(format(elapsed)) "
              + "entriesPerSecond=\(Int(Double(committed) / elapsed))")
    }

    static func value(of flag: String, in arguments: [String]) -> String? {
        guard let position = arguments.firstIndex(of: flag), position + 1 < arguments.count else { return nil }
        return arguments[position + 1]
    }

    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    static func format(_ seconds: Double) -> String {
        let hundredths = Int((seconds * 100).rounded())
        return "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
    }
}
