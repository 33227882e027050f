#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KeyperClusterSimulation
import KeyperRaft

/// Long simulation runs and the core micro-benchmark, outside `swift test`:
///   swift run -c release raft-sim [cluster] --seeds 100000 [--start 0] [--nodes 3|5] [--verbose] [--history] [--progress]
///       (the shipped replica: real WAL on simulated disks, real state machine, simulated network and clock)
///   swift run -c release raft-sim bench --batch 64 [--entries 200000] [--bytes 16]   (the Raft core alone)
@main
struct RaftSim {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "bench" {
            arguments.removeFirst()
            return benchCore(arguments)
        }
        if arguments.first == "cluster" { arguments.removeFirst() }
        cluster(arguments)
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
        ClusterSimulation.removeAbandonedScratch(options)
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
                totals.add(report)
                if arguments.contains("--verbose") { print(report) }
            } catch {
                failures += 1
                let nodes = options.nodeCount == 3 ? "" : " --nodes \(options.nodeCount)"
                print("VIOLATION \(error); replay: swift run -c release raft-sim --start \(seed) --seeds 1\(nodes) --history")
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
              + "installs=\(totals.snapshotsInstalled) restarts=\(totals.snapshotRestarts) leaders=\(totals.leadersElected) "
              + "cas=\(totals.compareAndSetsSet)/refused=\(totals.compareAndSetsRefused)/retries=\(totals.compareAndSetRetries)"
              + "/replays=\(totals.compareAndSetReplays)")
        if failures > 0 { exit(1) }
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
