import ArgumentParser
import KeyperBase
import KeyperClient
import KeyperReplica
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `keyper snapshot save|restore`: backups.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Back up a cluster to a file, or make a new cluster from one.",
        subcommands: [Save.self, Restore.self])

    struct Save: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save a consistent backup of the whole state to a file.",
            discussion: """
                Streams GET /v1/snapshot from a node (the first of --endpoints that answers) into FILE,
                checking its SHA-256 against the node's; FILE appears only once the backup is whole.
                The backup holds every write acknowledged before the command started.
                  keyper snapshot save backup-$(date +%F).snapshot
                """)

        @OptionGroup var cluster: EndpointOptions

        @Argument(help: "Where to write the backup.")
        var file: String

        func run() async throws {
            let endpoints = try cluster.cluster()
            let partial = file + ".part"
            var failures: [String] = []
            for url in endpoints.endpoints {
                let download: Download
                do {
                    download = try await HTTPRequester.download(url + "/v1/snapshot", to: partial)
                } catch {
                    unlink(partial)
                    failures.append("\(url): \(error)")
                    continue
                }
                guard download.result.status == 200 else {
                    unlink(partial)
                    failures.append("\(url): \(download.result.status) \(download.result.text)")
                    if download.result.status == 503 { continue }
                    break
                }
                let expected = download.result.header("X-Keyper-Snapshot-SHA256")
                guard expected == download.sha256 else {
                    unlink(partial)
                    printError("keyper snapshot save: the backup from \(url) is damaged: SHA-256 \(download.sha256), the node said \(expected ?? "nothing")")
                    throw ExitCode.failure
                }
                guard rename(partial, file) == 0 else {
                    unlink(partial)
                    printError("keyper snapshot save: cannot rename \(partial) to \(file): errno \(errno)")
                    throw ExitCode.failure
                }
                printLine("saved \(file): \(download.bytes) bytes, revision \(download.result.header("X-Keyper-Revision") ?? "?"), "
                    + "applied index \(download.result.header("X-Keyper-Applied-Index") ?? "?"), sha256 \(download.sha256)")
                return
            }
            printError("keyper snapshot save: no backup: " + failures.joined(separator: "; "))
            throw ExitCode.failure
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new data directory from a backup.",
            discussion: """
                Makes --data-dir (absent or empty) the data directory of a new single-node cluster
                (a new cluster id) holding the backup's keys with their revisions, leases and
                remembered idempotency keys; start it with the same --node-id, --raft-addr and
                --http-addr and --enable-raft, then --join other new nodes to it. With --standalone,
                a data directory for a node without Raft instead. A damaged backup is refused with
                the file and offset, and nothing is left behind.
                  keyper snapshot restore backup.snapshot --data-dir ./restored --node-id node1
                  keyper --data-dir ./restored --node-id node1 --enable-raft
                """)

        @Argument(help: "The backup (from keyper snapshot save).")
        var file: String

        @Option(name: .customLong("data-dir"), help: "The new data directory: absent or empty.")
        var dataDirectory: String

        @Option(name: .customLong("node-id"), help: "The node that will run it.")
        var nodeID = "node1"

        @Option(name: .customLong("raft-addr"), help: "The --raft-addr that node will use (recorded as its address).")
        var raftAddress = "127.0.0.1:12000"

        @Option(name: .customLong("http-addr"), help: "The --http-addr that node will use (recorded as its address).")
        var httpAddress = ":8080"

        @Flag(help: "Make a data directory for a node without Raft (the default mode of `keyper`).")
        var standalone = false

        func validate() throws {
            guard HostPort(parsing: raftAddress, listening: true) != nil else { throw ValidationError("--raft-addr must look like 127.0.0.1:12000") }
            guard HostPort(parsing: httpAddress, listening: true) != nil else { throw ValidationError("--http-addr must look like :8080") }
        }

        func run() async throws {
            guard access(file, R_OK) == 0 else {
                printError("keyper snapshot restore: cannot read \(file): errno \(errno)")
                throw ExitCode.failure
            }
            do {
                let report: KeyperReplica.Restore.Report
                if standalone {
                    report = try KeyperReplica.Restore.standalone(backup: file, into: dataDirectory, nodeID: nodeID)
                } else {
                    let raft = HostPort(parsing: raftAddress, listening: true)!.advertised().description
                    let http = HostPort(parsing: httpAddress, listening: true)!.advertised().description
                    report = try KeyperReplica.Restore.raft(backup: file, into: dataDirectory, nodeID: nodeID, raftAddress: raft,
                                                            httpAddress: http, logger: Logger(label: "keyper.restore"))
                }
                printLine("restored \(report.keys) keys at revision \(report.revision) into \(dataDirectory)"
                    + (report.clusterID.map { " (a new cluster, id \($0), with \(nodeID) its only member)" } ?? " (standalone)"))
            } catch {
                printError("keyper snapshot restore: \(error)")
                throw ExitCode.failure
            }
        }
    }
}
