#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KeyperClusterSimulation
import KeyperRaft
import KeyperSimulation

/// Long simulation runs and the core micro-benchmark, outside `swift test`:
///   swift run -c release raft-sim --seeds 100000 [--start 0] [--nodes 3|5|mixed]
///   swift run -c release raft-sim bench --batch 64 [--entries 200000] [--bytes 16]   (core alone)
///   swift run -c release raft-sim bench --simulation --batch 64 [--ticks 2000]       (whole simulator)
///   swift run -c release raft-sim cluster --seeds 1000 [--start 0] [--nodes 3] [--verbose] [--history] [--progress]
///       (the shipped replica: real WAL on simulated disks, real SQLite, simulated network and clock)
@main
struct RaftSim {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "cluster" {
            arguments.removeFirst()
            return cluster(arguments)
        }
        if arguments.first == "bench" {
            arguments.removeFirst()
            if arguments.contains("--simulation") { bench(arguments) } else { benchCore(arguments) }
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
            if arguments.contains("--no-disk-replacements") { options.diskReplacements = false }
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

    /// Seeds of ``ClusterSimulation``: the replica that ships, under faults.
    static func cluster(_ arguments: [String]) {
        let seeds = UInt64(value(of: "--seeds", in: arguments) ?? "1000") ?? 1000
        let start = UInt64(value(of: "--start", in: arguments) ?? "0") ?? 0
        var options = ClusterSimulationOptions(nodeCount: Int(value(of: "--nodes", in: arguments) ?? "3") ?? 3)
        if arguments.contains("--no-crashes") { options.crashes = false }
        if arguments.contains("--no-partitions") { options.partitions = false }
        if arguments.contains("--no-drops") { options.drops = false }
        if arguments.contains("--no-wipes") { options.diskWipes = false }
        if arguments.contains("--no-removals") { options.removals = false }
        if arguments.contains("--no-stale-reads") { options.staleReads = false }
        if arguments.contains("--no-snapshots") { options.snapshots = false }
        options.trace = arguments.contains("--trace")
        let progress = arguments.contains("--progress")
        let began = now()
        var failures = 0
        var totals = ClusterSimulationReport()
        for seed in start..<(start + seeds) {
            if progress {
                // Flushed, so a crash (a precondition failing under an injected bug) names its seed.
                print("seed \(seed)")
                fflush(nil)
            }
            do {
                let report = try ClusterSimulation(seed: seed, options: options).run()
                totals.writesAcknowledged += report.writesAcknowledged
                totals.readsAcknowledged += report.readsAcknowledged
                totals.staleReads += report.staleReads
                totals.staleReadsUnchecked += report.staleReadsUnchecked
                totals.removals += report.removals
                totals.wipes += report.wipes
                totals.crashes += report.crashes
                totals.snapshotsInstalled += report.snapshotsInstalled
                totals.leadersElected += report.leadersElected
                if arguments.contains("--verbose") { print(report) }
            } catch {
                failures += 1
                print("VIOLATION \(error); replay: swift run raft-sim cluster --start \(seed) --seeds 1 --history")
                if arguments.contains("--history") { print(error.history) }
                fflush(nil)
            }
            if (seed - start + 1) % 1_000 == 0 {
                print("... \(seed - start + 1) seeds, \(failures) failures, \(Int(now() - began))s")
            }
        }
        print("cluster seeds=\(seeds) start=\(start) nodes=\(options.nodeCount) failures=\(failures) seconds=\(format(now() - began)) "
              + "writes=\(totals.writesAcknowledged) reads=\(totals.readsAcknowledged) stale=\(totals.staleReads)"
              + "/unchecked=\(totals.staleReadsUnchecked) crashes=\(totals.crashes) wipes=\(totals.wipes) removals=\(totals.removals) "
              + "installs=\(totals.snapshotsInstalled) leaders=\(totals.leadersElected)")
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

    /// The core alone: three RawNodes on MemoryStorage and a perfect in-memory network, no
    /// simulator and no checks. Each round the leader takes `batch` proposals, then every message
    /// is delivered and every Ready handled until the cluster is quiet.
    static func benchCore(_ arguments: [String]) {
        let batch = Int(value(of: "--batch", in: arguments) ?? "1") ?? 1
        let entriesTarget = Int(value(of: "--entries", in: arguments) ?? "200000") ?? 200_000
        let payload = [UInt8](repeating: 0x61, count: Int(value(of: "--bytes", in: arguments) ?? "16") ?? 16)
        let ids = [NodeID("n1"), NodeID("n2"), NodeID("n3")]
        let configuration = Configuration(voters: Set(ids))
        var storages: [MemoryStorage] = []
        var nodes: [RawNode] = []
        for (position, id) in ids.enumerated() {
            let storage = MemoryStorage(bootstrapping: configuration)
            storages.append(storage)
            nodes.append(try! RawNode(config: Config(id: id, randomSeed: UInt64(position + 1)), storage: storage))
        }
        var queue: [Message] = []
        var applied = 0
        func handleAll() {
            var busy = true
            while busy {
                busy = false
                for position in nodes.indices where nodes[position].hasReady {
                    busy = true
                    let ready = nodes[position].ready()
                    queue.append(contentsOf: ready.messages)
                    storages[position].append(ready.entries)
                    if let hardState = ready.hardState { storages[position].setHardState(hardState) }
                    queue.append(contentsOf: ready.messagesAfterPersist)
                    if position == 0 { applied += ready.committedEntries.count }
                    nodes[position].advance(ready)
                }
                let messages = queue
                queue.removeAll(keepingCapacity: true)
                for message in messages {
                    busy = true
                    let position = ids.firstIndex(of: message.to)!
                    try! nodes[position].step(message)
                }
            }
        }
        // n1 campaigns and wins.
        while nodes[0].role != .leader {
            nodes[0].tick()
            handleAll()
        }
        applied = 0
        let began = now()
        var proposed = 0
        var rounds = 0
        while applied < entriesTarget {
            for _ in 0..<batch {
                if (try? nodes[0].propose(payload)) != nil { proposed += 1 }
            }
            handleAll()
            rounds += 1
            if rounds % 16 == 0 {
                for position in nodes.indices { nodes[position].tick() }
                handleAll()
            }
        }
        let elapsed = now() - began
        print("core batch=\(batch) bytes=\(payload.count) committed=\(applied) seconds=\(format(elapsed)) "
              + "entriesPerSecond=\(Int(Double(applied) / elapsed)) readyRoundsPerSecond=\(Int(Double(rounds) / elapsed))")
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
