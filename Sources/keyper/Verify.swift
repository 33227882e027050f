import ArgumentParser
import KeyperVerify

#if canImport(Glibc)
import Glibc
#endif

/// `keyper verify`: a recorded workload, a nemesis and a linearizability check, run against a
/// cluster you name or against a local cluster it starts and breaks.
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a cluster for linearizability and lost writes under faults.",
        discussion: """
            Against your cluster (only keys under --prefix are touched):
              keyper verify --endpoints http://127.0.0.1:8080,http://127.0.0.1:8081 --duration 60s
            Against a local cluster it starts in a temporary directory and breaks:
              keyper verify --local-cluster 3 --nemesis kill,pause,partition,transfer,membership --duration 10m
            Exits 0 when the history is linearizable and no acknowledged write was lost, 1 otherwise.
            """)

    @Option(help: "Comma-separated HTTP URLs of the cluster's nodes.")
    var endpoints: String?

    @Option(name: .customLong("local-cluster"), help: "Start this many nodes locally (fault injection enabled) instead.")
    var localCluster: Int?

    @Option(help: "Faults for a local cluster: kill, pause, partition, transfer, membership (comma-separated), or none.")
    var nemesis = "kill,pause,partition,transfer,membership"

    @Option(help: "How long the workload runs, e.g. 60s or 10m.")
    var duration = "30s"

    @Option(help: "Concurrent clients.")
    var clients = 6

    @Option(help: "Keys the workload uses.")
    var keys = 4

    @Option(help: "Registers written only by compare-and-set with idempotency keys (0: none).")
    var registers = 2

    @Option(help: "Lock holders of the lock check (default: 2 with --local-cluster, 0 with --endpoints); they use the lock <prefix>-lock, whose keys are under _keyper/locks/.")
    var lockers: Int?

    @Option(help: "Key prefix; nothing outside it is written (but the lock check's lock).")
    var prefix = "keyper-verify/"

    @Option(help: "Where to write the history (JSON lines).")
    var history: String?

    @Option(help: "Seed for the workload's and the nemesis's choices.")
    var seed: UInt64?

    @Option(name: .customLong("run-as"), help: "Run the local cluster's nodes as this user (USER or USER:GROUP), as a service would; needs root.")
    var runAs: String?

    func validate() throws {
        guard (endpoints != nil) != (localCluster != nil) else {
            throw ValidationError("give exactly one of --endpoints and --local-cluster")
        }
        if let localCluster, !(1...7).contains(localCluster) { throw ValidationError("--local-cluster takes 1 to 7") }
        if runAs != nil && localCluster == nil { throw ValidationError("--run-as applies to --local-cluster") }
        guard Keyper.milliseconds(duration) != nil else { throw ValidationError("--duration must look like 30s or 10m") }
        for fault in nemesis.split(separator: ",") where fault != "none" && Fault(rawValue: String(fault)) == nil {
            throw ValidationError("unknown fault '\(fault)': use kill, pause, partition, transfer, membership or none")
        }
        guard clients >= 1, keys >= 1 else { throw ValidationError("--clients and --keys must be positive") }
        guard registers >= 0 else { throw ValidationError("--registers must be 0 or more") }
        if let lockers, lockers < 0 { throw ValidationError("--lockers must be 0 or more") }
    }

    func run() async throws {
        var options = VerifyOptions()
        options.endpoints = endpoints.map { $0.split(separator: ",").map(String.init) } ?? []
        options.localCluster = localCluster
        options.duration = .milliseconds(Keyper.milliseconds(duration)!)
        options.clients = clients
        options.keys = keys
        options.registers = registers
        options.lockers = lockers ?? (localCluster != nil ? 2 : 0)
        options.prefix = prefix
        options.historyPath = history
        options.faults = Set(nemesis.split(separator: ",").compactMap { Fault(rawValue: String($0)) })
        if let seed { options.seed = seed }
        if let runAs { options.runAs = try LocalCluster.Account(parsing: runAs) }
        options.binary = Self.executablePath()
        // Progress lines show as they happen, also when output goes to a file or a pipe.
        let summary = try await Verifier(options: options, log: { line in
            print(line)
            fflush(nil)
        }).run()
        print(summary)
        if !summary.passed { throw ExitCode(1) }
    }
}

extension Verify {
    /// This executable, so the local cluster runs the same build as the verifier.
    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return CommandLine.arguments[0] }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
