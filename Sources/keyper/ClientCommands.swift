import ArgumentParser
import FoundationEssentials
import KeyperClient
import KeyperServer

#if canImport(Glibc)
import Glibc
#endif

/// Exit statuses of the client commands (beyond ArgumentParser's 64 for bad usage).
enum ClientExit {
    static let error: Int32 = 1
    static let notFound: Int32 = 2
    static let lost: Int32 = 3
    static let notAcquired: Int32 = 4
    static let preconditionFailed: Int32 = 5
}

/// `-o text|json`.
struct OutputOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable { case text, json }

    @Option(name: [.customShort("o"), .customLong("output")], help: "text (for people) or json (for programs).")
    var output: Format = .text
}

/// Runs a client command's body: a ``KeyperError`` goes to standard error with its code, and
/// the process exits 2 for not-found, 5 for a failed condition, 1 otherwise.
func runClient(_ name: String, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as KeyperError {
        printError("keyper \(name): \(error)")
        throw ExitCode(error.isNotFound ? ClientExit.notFound : error.isPreconditionFailed ? ClientExit.preconditionFailed : ClientExit.error)
    }
}

/// A JSON string literal.
func jsonQuoted(_ text: String) -> String {
    JSONText.quoted(text)
}

/// `"value": "…"` for UTF-8, else `"value_base64": "…"`.
func jsonValue(_ bytes: [UInt8]) -> String {
    if let text = String(validating: bytes, as: UTF8.self) { return #""value":"# + jsonQuoted(text) }
    return #""value_base64":""# + Data(bytes).base64EncodedString() + "\""
}

func entryJSON(_ entry: KeyValue) -> String {
    #"{"key":"# + jsonQuoted(entry.key) + "," + jsonValue(entry.value)
        + #","create_revision":\#(entry.createRevision),"mod_revision":\#(entry.modRevision),"version":\#(entry.version)}"#
}

/// Writes bytes to standard output as they are.
func writeOut(_ bytes: [UInt8]) {
    var done = 0
    while done < bytes.count {
        let count = bytes.withUnsafeBytes { write(1, $0.baseAddress! + done, bytes.count - done) }
        if count <= 0 { return }
        done += count
    }
}

/// Reads all of standard input.
func readStandardInput() -> [UInt8] {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        bytes += buffer[..<count]
    }
    return bytes
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a key's value (exit 2 when it does not exist).",
        discussion: "The value's bytes as they are; with -o json, the value and its revisions.")

    @OptionGroup var cluster: EndpointOptions
    @OptionGroup var format: OutputOptions
    @Flag(help: "Read this node's copy, possibly behind (no round to the leader).")
    var stale = false
    @Argument var key: String

    func run() async throws {
        try await runClient("get") {
            guard let entry = try await cluster.cluster().get(key, consistency: stale ? .stale : .linearizable) else {
                throw KeyperError(status: 404, code: .keyNotFound, message: "\(key) does not exist")
            }
            if format.output == .json { printLine(entryJSON(entry)) } else { writeOut(entry.value) }
        }
    }
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a key (the value from the argument, or standard input).",
        discussion: """
            Prints the revision the write made. --if-revision N writes only if the key's mod
            revision is N (0: only if absent); a write whose condition does not hold exits 5.
            """)

    @OptionGroup var cluster: EndpointOptions
    @OptionGroup var format: OutputOptions
    @Option(help: "Attach the key to this lease.")
    var lease: UInt64?
    @Option(name: .customLong("if-revision"), help: "Write only if the key's mod revision is this (0: only if it does not exist).")
    var ifRevision: UInt64?
    @Option(name: .customLong("idempotency-key"), help: "Make retries of this write exactly-once.")
    var idempotencyKey: String?
    @Argument var key: String
    @Argument(help: "The value (default: standard input).")
    var value: String?

    func run() async throws {
        try await runClient("put") {
            let bytes = value.map { Array($0.utf8) } ?? readStandardInput()
            let result = try await cluster.cluster().put(key, value: bytes, condition: ifRevision.map { .modRevision($0) }, lease: lease,
                                                         idempotencyKey: idempotencyKey)
            printLine(format.output == .json ? #"{"revision":\#(result.revision),"replayed":\#(result.replayed)}"# : "revision \(result.revision)")
        }
    }
}

struct Del: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del",
        abstract: "Delete a key, or every key under a prefix (--prefix).")

    @OptionGroup var cluster: EndpointOptions
    @OptionGroup var format: OutputOptions
    @Flag(help: "Delete every key that starts with the argument, in one revision.")
    var prefix = false
    @Option(name: .customLong("if-revision"), help: "Delete only if the key's mod revision is this.")
    var ifRevision: UInt64?
    @Argument var key: String

    func run() async throws {
        try await runClient("del") {
            let client = try cluster.cluster()
            if prefix {
                let (deleted, revision) = try await client.deletePrefix(key)
                printLine(format.output == .json ? #"{"deleted":\#(deleted),"revision":\#(revision)}"# : "deleted \(deleted) keys, revision \(revision)")
            } else {
                let result = try await client.delete(key, condition: ifRevision.map { .modRevision($0) })
                printLine(format.output == .json ? #"{"revision":\#(result.revision)}"# : "revision \(result.revision)")
            }
        }
    }
}

struct Ls: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List keys under a prefix, in byte order (every page, or --limit keys).")

    @OptionGroup var cluster: EndpointOptions
    @OptionGroup var format: OutputOptions
    @Flag(help: "With the values (text: key, a tab, the value).")
    var values = false
    @Option(help: "At most this many keys.")
    var limit: Int?
    @Argument(help: "The prefix (default: every key).")
    var prefix = ""

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be positive") }
    }

    func run() async throws {
        try await runClient("ls") {
            let client = try cluster.cluster()
            var after: String?
            var listed = 0
            var first = true
            if format.output == .json { writeOut(Array("[".utf8)) }
            repeat {
                let page = try await client.list(prefix: prefix, after: after, limit: limit.map { min(1000, $0 - listed) }, values: values)
                for entry in page.entries {
                    switch format.output {
                    case .json:
                        writeOut(Array(((first ? "" : ",\n") + (values ? entryJSON(entry) : jsonQuoted(entry.key))).utf8))
                        first = false
                    case .text:
                        printLine(values ? entry.key + "\t" + (entry.text ?? "<\(entry.value.count) bytes>") : entry.key)
                    }
                }
                listed += page.entries.count
                after = page.cursor
            } while after != nil && listed < (limit ?? .max)
            if format.output == .json { printLine("]") }
        }
    }
}

struct Txn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a transaction: its JSON from a file or standard input; prints the result's JSON.",
        discussion: """
              echo '{"compare":[{"key":"a","target":"version","op":"==","value":0}],"success":[{"op":"put","key":"a","value":"1"}]}' | keyper txn
            """)

    @OptionGroup var cluster: EndpointOptions
    @Argument(help: "A file with the transaction's JSON (default: standard input).")
    var file: String?

    func run() async throws {
        try await runClient("txn") {
            let body: [UInt8]
            if let file {
                guard let bytes = readFile(file) else { throw ValidationError("cannot read \(file)") }
                body = bytes
            } else {
                body = readStandardInput()
            }
            writeOut(try await cluster.cluster().transaction(json: body))
        }
    }
}

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the changes to a key, or to every key under a prefix, as they happen.",
        discussion: """
            One line per change: PUT key value (revision R) or DELETE key (revision R); with -o json,
            one JSON object per line. Resumes on another node when one goes away; stops on SIGINT.
            """)

    @OptionGroup var cluster: EndpointOptions
    @OptionGroup var format: OutputOptions
    @Flag(help: "Watch every key that starts with the argument.")
    var prefix = false
    @Option(name: .customLong("start-revision"), help: "Start at this revision (from the history the node keeps).")
    var startRevision: UInt64?
    @Argument var key: String

    func run() async throws {
        try await runClient("watch") {
            let stream = try cluster.cluster().watch(prefix ? .prefix(key) : .key(key), startRevision: startRevision)
            for try await event in stream {
                switch (format.output, event.kind) {
                case (.json, .put):
                    printLine(#"{"type":"put","id":"\#(event.id)","key":"# + jsonQuoted(event.key) + "," + jsonValue(event.value)
                        + #","create_revision":\#(event.createRevision),"mod_revision":\#(event.modRevision),"version":\#(event.version)}"#)
                case (.json, .delete):
                    printLine(#"{"type":"delete","id":"\#(event.id)","key":"# + jsonQuoted(event.key) + #","mod_revision":\#(event.modRevision)}"#)
                case (.text, .put):
                    printLine("PUT \(event.key) \(String(validating: event.value, as: UTF8.self) ?? "<\(event.value.count) bytes>") (revision \(event.modRevision))")
                case (.text, .delete):
                    printLine("DELETE \(event.key) (revision \(event.modRevision))")
                }
            }
        }
    }
}

struct LeaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease",
        abstract: "Grant, keep alive, show, list and revoke leases.",
        subcommands: [Grant.self, KeepAlive.self, Show.self, List.self, Revoke.self])

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a lease; prints its id.")
        @OptionGroup var cluster: EndpointOptions
        @OptionGroup var format: OutputOptions
        @Argument(help: "Its TTL in seconds.")
        var ttl: UInt64

        func run() async throws {
            try await runClient("lease grant") {
                let lease = try await cluster.cluster().grantLease(ttlSeconds: ttl)
                printLine(format.output == .json ? #"{"id":\#(lease.id),"ttl_seconds":\#(lease.ttlSeconds)}"# : "\(lease.id)")
            }
        }
    }

    struct KeepAlive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "keepalive",
            abstract: "Keep a lease alive (a third of its TTL apart) until stopped, or once with --once.")
        @OptionGroup var cluster: EndpointOptions
        @Flag(help: "One keepalive, then exit.")
        var once = false
        @Argument var id: UInt64

        func run() async throws {
            try await runClient("lease keepalive") {
                let client = try cluster.cluster()
                while true {
                    let lease = try await client.keepAlive(lease: id)
                    printLine("lease \(id) kept alive: \(lease.ttlSeconds) s")
                    if once { return }
                    try await Task.sleep(for: .milliseconds(Int64(lease.ttlSeconds) * 1000 / 3))
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A lease's TTL, time left and keys.")
        @OptionGroup var cluster: EndpointOptions
        @OptionGroup var format: OutputOptions
        @Argument var id: UInt64

        func run() async throws {
            try await runClient("lease show") {
                let lease = try await cluster.cluster().lease(id)
                if format.output == .json {
                    printLine(#"{"id":\#(lease.id),"ttl_seconds":\#(lease.ttlSeconds),"remaining_seconds":\#(lease.remainingSeconds ?? 0),"keys":["#
                        + (lease.keys ?? []).map(jsonQuoted).joined(separator: ",") + "]}")
                } else {
                    printLine("lease \(lease.id): ttl \(lease.ttlSeconds) s, \(lease.remainingSeconds.map { String($0) } ?? "?") s left, \(lease.keys?.count ?? 0) keys")
                    for key in lease.keys ?? [] { printLine("  \(key)") }
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every lease, with its TTL and key count.")
        @OptionGroup var cluster: EndpointOptions
        @OptionGroup var format: OutputOptions

        func run() async throws {
            try await runClient("lease list") {
                let leases = try await cluster.cluster().leases()
                if format.output == .json {
                    printLine("[" + leases.map { #"{"id":\#($0.id),"ttl_seconds":\#($0.ttlSeconds),"keys":\#($0.keyCount ?? 0)}"# }.joined(separator: ",") + "]")
                } else {
                    for lease in leases { printLine("\(lease.id)\tttl \(lease.ttlSeconds) s\t\(lease.keyCount ?? 0) keys") }
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a lease: its keys are deleted in one revision.")
        @OptionGroup var cluster: EndpointOptions
        @Argument var id: UInt64

        func run() async throws {
            try await runClient("lease revoke") {
                let (deleted, revision) = try await cluster.cluster().revokeLease(id)
                printLine("revoked lease \(id): \(deleted) keys deleted, revision \(revision)")
            }
        }
    }
}
