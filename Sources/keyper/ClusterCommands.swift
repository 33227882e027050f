import ArgumentParser
import KeyperClient

/// Pads cells to their column's width.
func table(_ rows: [[String]]) -> String {
    guard let header = rows.first else { return "" }
    let widths = header.indices.map { column in rows.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
    return rows.map { row in
        row.enumerated().map { column, cell in
            column == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The whole cluster in a table: each member's role, term, indexes, lag, address and health.",
        discussion: """
            Asks a node for the members, then each member for itself. LAG is how many committed
            entries the member has not applied yet, counted from the highest commit index seen.
            """)

    @OptionGroup var cluster: EndpointOptions
    @OptionGroup var format: OutputOptions

    struct Row {
        var id: String
        var role: String
        var term: String
        var commit: UInt64?
        var applied: UInt64?
        var address: String
        var health: String
    }

    func run() async throws {
        try await runClient("status") {
            let client = try cluster.cluster()
            let first = try await client.status()
            var rows: [Row] = []
            if let members = first.members, first.mode == "raft" {
                // Each member answers for itself, all at once.
                rows = await withTaskGroup(of: Row.self) { group in
                    for member in members {
                        group.addTask {
                            let url = "http://" + member.httpAddress
                            let status = try? await client.status(endpoint: url)
                            let health = await client.health(endpoint: url)
                            let role = (status?.role ?? "unreachable") + (member.role == "learner" ? " (learner)" : "")
                            return Row(id: member.id, role: role, term: status?.term.map(String.init) ?? "-", commit: status?.commitIndex,
                                       applied: status?.appliedIndex, address: member.httpAddress,
                                       health: status == nil ? "unreachable" : health.healthy ? "ok" : health.reason)
                        }
                    }
                    var rows: [Row] = []
                    for await row in group { rows.append(row) }
                    return rows.sorted { $0.id < $1.id }
                }
            } else {
                let health = await client.health(endpoint: client.preferredEndpoint)
                rows = [Row(id: first.nodeID, role: first.mode, term: "-", commit: nil, applied: nil, address: client.preferredEndpoint,
                            health: health.healthy ? "ok" : health.reason)]
            }
            let commit = rows.compactMap(\.commit).max() ?? 0
            func lag(_ row: Row) -> String { row.applied.map { String(commit - min(commit, $0)) } ?? "-" }
            if format.output == .json {
                let items = rows.map { row in
                    #"{"id":"# + jsonQuoted(row.id) + #","role":"# + jsonQuoted(row.role) + #","term":"# + (UInt64(row.term).map(String.init) ?? "null")
                        + #","commit_index":\#(row.commit.map(String.init) ?? "null"),"applied_index":\#(row.applied.map(String.init) ?? "null")"#
                        + #","lag":\#(row.applied.map { String(commit - min(commit, $0)) } ?? "null"),"address":"# + jsonQuoted(row.address)
                        + #","health":"# + jsonQuoted(row.health) + "}"
                }
                printLine(#"{"cluster_id":"# + jsonQuoted(first.clusterID ?? "") + #","members":["# + items.joined(separator: ",") + "]}")
                return
            }
            var lines = [["ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "ADDRESS", "HEALTH"]]
            for row in rows {
                lines.append([row.id, row.role, row.term, row.commit.map(String.init) ?? "-", row.applied.map(String.init) ?? "-", lag(row),
                              row.address, row.health])
            }
            printLine(table(lines))
            for warning in first.warnings ?? [] { printLine("warning: \(warning)") }
        }
    }
}

struct Member: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, add and remove cluster members.",
        subcommands: [List.self, Add.self, Remove.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every member: id, voter or learner, addresses.")
        @OptionGroup var cluster: EndpointOptions
        @OptionGroup var format: OutputOptions

        func run() async throws {
            try await runClient("member list") {
                let members = try await cluster.cluster().status().members ?? []
                if format.output == .json {
                    printLine("[" + members.map { member in
                        #"{"id":"# + jsonQuoted(member.id) + #","role":"# + jsonQuoted(member.role) + #","raft_addr":"# + jsonQuoted(member.raftAddress)
                            + #","http_addr":"# + jsonQuoted(member.httpAddress) + "}"
                    }.joined(separator: ",") + "]")
                } else {
                    printLine(table([["ID", "ROLE", "RAFT", "HTTP"]] + members.map {
                        [$0.id, $0.role + ($0.promotion == "pending" ? " (promotion pending)" : ""), $0.raftAddress, $0.httpAddress]
                    }))
                }
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a member (what a new node's --join does): answers once it is a voter (or a learner).")
        @OptionGroup var cluster: EndpointOptions
        @Option(name: .customLong("http-addr"), help: "The new node's HTTP address.")
        var httpAddress: String?
        @Flag(help: "Add it as a learner that stays one (no vote).")
        var learner = false
        @Argument var id: String
        @Argument(help: "The new node's Raft address (host:port).")
        var raftAddress: String

        func run() async throws {
            try await runClient("member add") {
                let role = try await cluster.cluster().addMember(id: id, raftAddress: raftAddress, httpAddress: httpAddress, learner: learner)
                printLine("added \(id) as \(role)")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member.")
        @OptionGroup var cluster: EndpointOptions
        @Argument var id: String

        func run() async throws {
            try await runClient("member remove") {
                try await cluster.cluster().removeMember(id)
                printLine("removed \(id)")
            }
        }
    }
}

struct Leader: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Leadership.",
        subcommands: [Transfer.self])

    struct Transfer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move leadership to a member (default: the most caught-up voter).")
        @OptionGroup var cluster: EndpointOptions
        @Argument(help: "The member to lead.")
        var target: String?

        func run() async throws {
            try await runClient("leader transfer") {
                printLine("leader: " + (try await cluster.cluster().transferLeadership(to: target)))
            }
        }
    }
}
