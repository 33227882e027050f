import KeyperBase
import ArgumentParser
import KeyperBench
import KeyperClient

#if canImport(Glibc)
import Glibc
#endif

/// `keyper bench`: a closed-loop HTTP load generator with kept-alive connections.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure a Keyper node or cluster: throughput and latency percentiles.",
        discussion: """
            Writes to the leader, 64 connections, 256-byte values:
              keyper bench --endpoints http://127.0.0.1:8080 --connections 64 --duration 10s
            A 90/10 read/write mix spread over three nodes:
              keyper bench --endpoints http://127.0.0.1:8080,http://127.0.0.1:8081,http://127.0.0.1:8082 --read-ratio 0.9
            Keys are --prefix followed by a number below --keys; with reads (or --preload), every key is
            written once first, with a progress line. A 10-million-key data set, loaded once and then measured:
              keyper bench --keys 10000000 --preload-only
              keyper bench --keys 10000000 --no-preload --duration 30s
            Grow it to 20 million later with --keys 20000000 --preload-only --preload-from 10000000.
            With 1,000 watch streams on the prefix, counting the events they receive:
              keyper bench --watchers 1000 --duration 10s
            Every write's value differs from the last (its first 16 bytes change), as real updates do.
            """)

    @Option(help: "Comma-separated HTTP URLs; connections are spread over them.")
    var endpoints = "http://127.0.0.1:8080"

    @Option(help: "Concurrent kept-alive connections, each with one request in flight.")
    var connections = 64

    @Option(help: "How long to run, e.g. 10s or 1m.")
    var duration = "10s"

    @Option(name: .customLong("value-bytes"), help: "Size of each written value.")
    var valueBytes = 256

    @Option(help: "Number of distinct keys.")
    var keys = 1_000

    @Option(help: "Key prefix.")
    var prefix = "bench/"

    @Option(name: .customLong("read-ratio"), help: "Fraction of operations that are reads, 0 to 1.")
    var readRatio = 0.0

    @Option(help: "Read consistency: linearizable or stale.")
    var consistency = "linearizable"

    @Flag(name: .customLong("no-preload"), help: "Do not write every key before a run with reads.")
    var noPreload = false

    @Flag(help: "Write every key before the run, even for a write-only run.")
    var preload = false

    @Flag(name: .customLong("preload-only"), help: "Write every key, report the load rate, and stop (no timed run).")
    var preloadOnly = false

    @Option(name: .customLong("preload-from"), help: "Preload only the keys from this number on (the rest were loaded before).")
    var preloadFrom = 0

    @Option(help: "Watch streams on --prefix held open during the timed run; reports the events they receive.")
    var watchers = 0

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    @Option(help: "Seed for key and operation choice.")
    var seed: UInt64?

    func validate() throws {
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard watchers >= 0 else { throw ValidationError("--watchers must not be negative") }
        guard keys >= 1 else { throw ValidationError("--keys must be at least 1") }
        guard valueBytes >= 0 else { throw ValidationError("--value-bytes must not be negative") }
        guard (0...1).contains(readRatio) else { throw ValidationError("--read-ratio must be between 0 and 1") }
        guard BenchOptions.Consistency(rawValue: consistency) != nil else {
            throw ValidationError("--consistency must be linearizable or stale")
        }
        guard Keyper.milliseconds(duration) != nil else { throw ValidationError("--duration must look like 10s or 1m") }
        guard (0..<keys).contains(preloadFrom) else { throw ValidationError("--preload-from must be below --keys") }
        guard !(noPreload && (preload || preloadOnly)) else { throw ValidationError("--no-preload contradicts --preload and --preload-only") }
        _ = try parsedEndpoints()
    }

    func parsedEndpoints() throws -> [(host: String, port: Int)] {
        try endpoints.split(separator: ",").map { url in
            guard let (target, _) = HostPort.parseURL(String(url)) else {
                throw ValidationError("expected http://host:port, got \(url)")
            }
            return (target.host, target.port)
        }
    }

    func run() async throws {
        var options = BenchOptions()
        options.endpoints = try parsedEndpoints()
        options.connections = connections
        options.duration = .milliseconds(Keyper.milliseconds(duration)!)
        options.valueBytes = valueBytes
        options.keys = keys
        options.prefix = prefix
        options.readRatio = readRatio
        options.consistency = BenchOptions.Consistency(rawValue: consistency)!
        options.preload = preload || preloadOnly || (!noPreload && readRatio > 0)
        options.preloadOnly = preloadOnly
        options.preloadFrom = preloadFrom
        options.watchers = watchers
        if let seed { options.seed = seed }

        let interactive = isatty(STDERR_FILENO) == 1
        let result = try await LoadGenerator.run(options) { progress in
            let line = BenchReport.progressLine(progress)
            writeError(interactive ? "\r\u{1B}[K" + line : line + "\n")
        }
        if interactive { writeError("\r\u{1B}[K") }
        if let preload = result.preload ?? (result.preloadOnly ? (result.writes.ok, result.elapsed) : nil) {
            writeError("preload: \(preload.keys) keys in \(BenchReport.format(preload.elapsed.seconds, 1)) s = "
                       + "\(BenchReport.format(Double(preload.keys) / Swift.max(preload.elapsed.seconds, 0.001), 0)) keys/s\n")
        }
        if result.preloadOnly {
            if json { print(BenchReport.json(result)) }
            return
        }
        print(json ? BenchReport.json(result) : BenchReport.text(result))
        if result.requests == 0 { throw ExitCode(1) }
    }
}

/// Progress goes to standard error, so `--json` output on standard output stays clean.
private func writeError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// How `keyper bench` prints a result.
enum BenchReport {
    static let percentiles: [(label: String, value: Double)] = [("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)]

    static func text(_ result: BenchResult) -> String {
        let options = result.options
        var lines = [
            "keyper bench: \(options.connections) connection\(options.connections == 1 ? "" : "s") to "
                + "\(options.endpoints.count) endpoint\(options.endpoints.count == 1 ? "" : "s"), "
                + "\(format(result.elapsed.seconds, 1)) s, \(options.valueBytes)-byte values, \(options.keys) keys, "
                + "read ratio \(format(options.readRatio, 2))\(options.readRatio > 0 ? " (\(options.consistency.rawValue))" : "")",
            "requests: \(result.requests) in \(format(result.elapsed.seconds, 2)) s = \(format(result.throughput, 1)) req/s",
            "errors: \(result.errors)" + (result.errors == 0 ? "" : " (connection \(result.connectionErrors)"
                + (result.all.unexpected.isEmpty ? "" : ", status " + LoadGenerator.describe(result.all.unexpected)) + ")"),
            "",
            "latency        " + percentiles.map { pad($0.label, 9) }.joined() + pad("max", 9) + pad("mean", 9),
        ]
        func row(_ name: String, _ stats: OperationStats) -> String {
            pad(name, 9, left: true) + pad(String(stats.latency.count), 6)
                + percentiles.map { pad(milliseconds(stats.latency.value(atPercentile: $0.value)), 9) }.joined()
                + pad(milliseconds(stats.latency.max), 9) + pad(milliseconds(UInt64(stats.latency.mean)), 9)
        }
        if result.reads.latency.count > 0 && result.writes.latency.count > 0 {
            lines.append(row("all", result.all))
        }
        if result.reads.latency.count > 0 { lines.append(row("reads", result.reads)) }
        if result.writes.latency.count > 0 { lines.append(row("writes", result.writes)) }
        lines.append("(milliseconds; count after the name)")
        if result.reads.notFound > 0 { lines.append("reads that found no value: \(result.reads.notFound)") }
        if options.watchers > 0 {
            lines.append("watch events: \(result.watchEvents) to \(options.watchers) watchers = "
                + "\(format(Double(result.watchEvents) / Swift.max(result.elapsed.seconds, 0.001), 0)) events/s; "
                + "streams ended by the server or broken: \(result.watchersEnded)")
        }
        return lines.joined(separator: "\n")
    }

    /// `preload [#######.............]  3,400,000 / 10,000,000 keys  34%  11,800/s  eta 9m20s  errors 0`
    /// during a preload; `12s  61234 requests  5100/s  errors 0` during the timed run.
    static func progressLine(_ progress: LoadGenerator.Progress) -> String {
        guard progress.phase == .preload, let total = progress.total, total > 0 else {
            return "\(Int(progress.elapsed.seconds))s  \(progress.requests) requests  \(progress.lastSecond)/s  errors \(progress.errors)"
        }
        let done = Swift.min(progress.requests, total)
        let width = 30
        let filled = Int(Double(done) / Double(total) * Double(width))
        let rate = Double(done) / Swift.max(progress.elapsed.seconds, 0.001)
        let remaining = rate > 0 ? Int(Double(total - done) / rate) : 0
        let eta = remaining >= 60 ? "\(remaining / 60)m\(remaining % 60)s" : "\(remaining)s"
        return "preload [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]  "
            + "\(done) / \(total) keys  \(done * 100 / total)%  \(format(rate, 0))/s  eta \(eta)  errors \(progress.errors)"
    }

    static func json(_ result: BenchResult) -> String {
        func stats(_ stats: OperationStats) -> String {
            let latency = (percentiles.map { ($0.label, stats.latency.value(atPercentile: $0.value)) } + [("max", stats.latency.max)])
                .map { "\"\($0.0)\":\(format(Double($0.1) / 1_000, 1))" }.joined(separator: ",")
            let unexpected = stats.unexpected.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
            return #"{"requests":\#(stats.latency.count),"ok":\#(stats.ok),"not_found":\#(stats.notFound),"unexpected_status":{\#(unexpected)},"latency_us":{\#(latency),"mean":\#(format(stats.latency.mean / 1_000, 1))}}"#
        }
        let options = result.options
        let endpoints = options.endpoints.map { "\"http://\($0.host):\($0.port)\"" }.joined(separator: ",")
        return #"{"endpoints":[\#(endpoints)],"connections":\#(options.connections),"value_bytes":\#(options.valueBytes),"keys":\#(options.keys),"read_ratio":\#(options.readRatio),"consistency":"\#(options.consistency.rawValue)","elapsed_s":\#(format(result.elapsed.seconds, 3)),"preload_only":\#(result.preloadOnly),"preload_keys":\#(result.preload?.keys ?? 0),"preload_s":\#(format(result.preload?.elapsed.seconds ?? 0, 3)),"requests":\#(result.requests),"throughput":\#(format(result.throughput, 1)),"errors":\#(result.errors),"connection_errors":\#(result.connectionErrors),"watchers":\#(options.watchers),"watch_events":\#(result.watchEvents),"watchers_ended":\#(result.watchersEnded),"all":\#(stats(result.all)),"reads":\#(stats(result.reads)),"writes":\#(stats(result.writes))}"#
    }

    static func milliseconds(_ nanoseconds: UInt64) -> String { format(Double(nanoseconds) / 1e6, 3) }

    static func format(_ value: Double, _ decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        var text = String(rounded)
        if let dot = text.firstIndex(of: ".") {
            let have = text.distance(from: dot, to: text.endIndex) - 1
            if decimals == 0 { text = String(text[..<dot]) } else if have < decimals { text += String(repeating: "0", count: decimals - have) }
        } else if decimals > 0 {
            text += "." + String(repeating: "0", count: decimals)
        }
        return text
    }

    static func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: Swift.max(0, width - text.count))
        return left ? text + fill : fill + text
    }
}
