import KeyperBase
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// What `keyper bench` runs.
public struct BenchOptions: Sendable {
    public enum Consistency: String, Sendable, CaseIterable {
        case linearizable, stale
    }

    /// `host:port` of each node; connections are spread over them round-robin.
    public var endpoints: [(host: String, port: Int)] = [("127.0.0.1", 8080)]
    public var connections = 64
    public var duration: Duration = .seconds(10)
    public var valueBytes = 256
    public var keys = 1_000
    /// Keys are `prefix` + a number below `keys`.
    public var prefix = "bench/"
    /// The fraction of operations that are reads (0 = all writes, 1 = all reads).
    public var readRatio = 0.0
    public var consistency = Consistency.linearizable
    /// Write every key once before the timed run (so reads find values).
    public var preload = true
    /// Preload only keys from this number on (the ones below were loaded by an earlier run).
    public var preloadFrom = 0
    /// Stop after the preload: load a data set without a timed run.
    public var preloadOnly = false
    public var seed: UInt64 = UInt64.random(in: 0...UInt64.max)
    /// An answer slower than this closes the connection and counts as an error.
    public var requestTimeout: Duration = .seconds(10)
    /// Watch streams on `prefix` held open during the timed run, counting what they receive.
    public var watchers = 0

    public init() {}
}

/// Counts and latencies of one kind of request.
public struct OperationStats: Sendable {
    public var latency = LatencyHistogram()
    /// Answers with a status the benchmark expects (2xx; 404 for reads of an absent key).
    public var ok: UInt64 = 0
    /// Answers with any other status, by status code.
    public var unexpected: [Int: UInt64] = [:]
    /// Reads answered 404.
    public var notFound: UInt64 = 0

    mutating func merge(_ other: OperationStats) {
        latency.merge(other.latency)
        ok += other.ok
        notFound += other.notFound
        unexpected.merge(other.unexpected, uniquingKeysWith: +)
    }
}

/// What a run measured.
public struct BenchResult: Sendable {
    public var options: BenchOptions
    public var elapsed: Duration = .zero
    public var reads = OperationStats()
    public var writes = OperationStats()
    /// Connections that failed, were closed by the server, or timed out mid-request.
    public var connectionErrors: UInt64 = 0
    /// The preload before the timed run, when there was one: keys written and how long it took.
    public var preload: (keys: UInt64, elapsed: Duration)?
    /// Only a preload ran (``BenchOptions/preloadOnly``): the counts are its writes.
    public var preloadOnly = false
    /// With watchers: the events they received during the timed run, and the streams the
    /// server ended (lagging) or that broke.
    public var watchEvents: UInt64 = 0
    public var watchersEnded: UInt64 = 0

    public var all: OperationStats {
        var all = reads
        all.merge(writes)
        return all
    }

    public var requests: UInt64 { all.latency.count }
    public var errors: UInt64 { all.unexpected.values.reduce(0, +) + connectionErrors }
    public var throughput: Double {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return seconds > 0 ? Double(requests) / seconds : 0
    }
}

/// An HTTP/1.1 load generator: each connection is kept alive and driven from its event loop,
/// one request at a time, the next sent the moment the previous answer ends (closed-loop, like
/// wrk). Latencies go into per-connection histograms merged at the end; nothing is shared on
/// the request path but two atomic counters for the progress line.
public enum LoadGenerator {
    /// `progress` is called about once a second, during the preload too (``Progress/phase``).
    public static func run(_ options: BenchOptions, progress: (@Sendable (Progress) -> Void)? = nil) async throws -> BenchResult {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: Swift.min(options.connections, System.coreCount))
        do {
            let result = try await run(options, group: group, progress: progress)
            try? await group.shutdownGracefully()
            return result
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private static func run(_ options: BenchOptions, group: MultiThreadedEventLoopGroup,
                            progress: (@Sendable (Progress) -> Void)?) async throws -> BenchResult {
        let value = ByteBuffer(bytes: (0..<options.valueBytes).map { UInt8(ascii: "a") + UInt8($0 % 26) })

        var preloaded: BenchResult?
        if options.preload, options.preloadFrom < options.keys {
            let preload = Workload(options: options, value: value, phase: .preload)
            let start = ContinuousClock.now
            let reporter = progress.map { reportProgress(of: preload, since: start, to: $0) }
            var result = try await drive(preload, group: group, until: .now() + .hours(24))
            reporter?.cancel()
            result.elapsed = ContinuousClock.now - start
            if result.errors > 0 {
                throw BenchError("preloading \(options.keys - options.preloadFrom) keys failed: \(result.errors) errors (\(describe(result.all.unexpected)))")
            }
            preloaded = result
        }
        if options.preloadOnly, var result = preloaded {
            result.preloadOnly = true
            return result
        }

        let watches = options.watchers > 0 ? try await WatchLoad.open(count: options.watchers, options: options, group: group) : nil
        let workload = Workload(options: options, value: value, phase: .timed)
        let start = ContinuousClock.now
        let stop = NIODeadline.now() + .nanoseconds(Int64(options.duration.components.seconds) * 1_000_000_000
            + Int64(options.duration.components.attoseconds / 1_000_000_000))
        let reporter = progress.map { reportProgress(of: workload, since: start, to: $0) }
        var result = try await drive(workload, group: group, until: stop)
        result.elapsed = ContinuousClock.now - start
        result.preload = preloaded.map { (keys: $0.writes.ok, elapsed: $0.elapsed) }
        reporter?.cancel()
        if let watches {
            result.watchEvents = watches.events.load(ordering: .relaxed)
            result.watchersEnded = watches.ended.load(ordering: .relaxed)
            await watches.close()
        }
        return result
    }

    private static func reportProgress(of workload: Workload, since start: ContinuousClock.Instant,
                                       to report: @escaping @Sendable (Progress) -> Void) -> Task<Void, Never> {
        Task {
            var last: UInt64 = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let done = workload.counters.completed.load(ordering: .relaxed)
                let total = workload.phase == .preload ? UInt64(workload.options.keys - workload.options.preloadFrom) : nil
                report(Progress(phase: workload.phase == .preload ? .preload : .timed, elapsed: ContinuousClock.now - start,
                                requests: done, lastSecond: done - last, total: total,
                                errors: workload.counters.errors.load(ordering: .relaxed)))
                last = done
            }
        }
    }

    public struct Progress: Sendable {
        public enum Phase: Sendable { case preload, timed }
        public var phase: Phase
        public var elapsed: Duration
        public var requests: UInt64
        public var lastSecond: UInt64
        /// The preload's number of keys (nil for the timed run, which runs for a time).
        public var total: UInt64?
        public var errors: UInt64
    }

    public static func describe(_ statuses: [Int: UInt64]) -> String {
        statuses.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: ", ")
    }

    /// Runs every connection until `stop`, reconnecting after failures, and merges what they saw.
    private static func drive(_ workload: Workload, group: MultiThreadedEventLoopGroup, until stop: NIODeadline) async throws -> BenchResult {
        try await withThrowingTaskGroup(of: ConnectionReport.self) { tasks in
            for connection in 0..<workload.options.connections {
                tasks.addTask {
                    var total = ConnectionReport()
                    var attempt = 0
                    // At least one attempt, however late this task starts on a busy machine.
                    repeat {
                        let report = await runConnection(connection, attempt: attempt, workload: workload, group: group, until: stop)
                        total.merge(report)
                        if report.finished { break }
                        attempt += 1
                        // A refused or broken connection: back off a little so a dead node is not hammered.
                        try await Task.sleep(for: .milliseconds(100))
                    } while NIODeadline.now() < stop
                    return total
                }
            }
            var result = BenchResult(options: workload.options)
            for try await report in tasks {
                result.reads.merge(report.reads)
                result.writes.merge(report.writes)
                result.connectionErrors += report.connectionErrors
            }
            return result
        }
    }

    private static func runConnection(_ number: Int, attempt: Int, workload: Workload, group: MultiThreadedEventLoopGroup,
                                      until stop: NIODeadline) async -> ConnectionReport {
        let endpoint = workload.options.endpoints[number % workload.options.endpoints.count]
        let loop = group.next()
        let promise = loop.makePromise(of: ConnectionReport.self)
        do {
            _ = try await ClientBootstrap(group: loop)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(5))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            LoadHandler(workload: workload, connection: number, attempt: attempt,
                                        host: "\(endpoint.host):\(endpoint.port)", stop: stop, promise: promise))
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port)
                .get()
        } catch {
            workload.counters.errors.add(1, ordering: .relaxed)
            var report = ConnectionReport()
            report.connectionErrors = 1
            promise.succeed(report)
        }
        return (try? await promise.futureResult.get()) ?? ConnectionReport()
    }
}

public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// What every connection of a run shares: the options, the value bytes, the progress counters.
final class Workload: Sendable {
    enum Phase { case preload, timed }

    let options: BenchOptions
    let value: ByteBuffer
    let phase: Phase
    let counters = Counters()
    let readPath: String

    init(options: BenchOptions, value: ByteBuffer, phase: Phase) {
        self.options = options
        self.value = value
        self.phase = phase
        self.readPath = options.consistency == .stale ? "?consistency=stale" : ""
    }

    final class Counters: Sendable {
        let completed = Atomic<UInt64>(0)
        let errors = Atomic<UInt64>(0)
    }
}

struct ConnectionReport: Sendable {
    var reads = OperationStats()
    var writes = OperationStats()
    var connectionErrors: UInt64 = 0
    /// The connection ran to its end (deadline, or its share of the preload) rather than failing.
    var finished = false

    mutating func merge(_ other: ConnectionReport) {
        reads.merge(other.reads)
        writes.merge(other.writes)
        connectionErrors += other.connectionErrors
        finished = other.finished
    }
}

/// Drives one kept-alive connection from its event loop: send, wait for the answer's end,
/// record, send the next. Completes `promise` once, when it stops or the connection ends.
final class LoadHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let workload: Workload
    private let host: String
    private let stop: NIODeadline
    private let promise: EventLoopPromise<ConnectionReport>
    private var random: UInt64
    private var report = ConnectionReport()
    private var completed = false
    /// The request in flight: when it was sent and whether it is a read.
    private var sentAt: NIODeadline?
    private var sentRead = false
    private var status = 0
    private var timeout: Scheduled<Void>?
    /// Preload: the next key of this connection's share (connection, connection + n, …).
    private var nextPreloadKey: Int
    private var writesSent: UInt64 = 0

    init(workload: Workload, connection: Int, attempt: Int, host: String, stop: NIODeadline,
         promise: EventLoopPromise<ConnectionReport>) {
        self.workload = workload
        self.host = host
        self.stop = stop
        self.promise = promise
        self.random = workload.options.seed &+ UInt64(connection) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(attempt)
        self.nextPreloadKey = workload.options.preloadFrom + connection
    }

    func channelActive(context: ChannelHandlerContext) {
        sendNext(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body:
            break
        case .end:
            guard let sentAt else { return }
            timeout?.cancel()
            record(latency: NIODeadline.now() - sentAt)
            self.sentAt = nil
            if NIODeadline.now() < stop { sendNext(context: context) } else { finish(context: context) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if sentAt != nil { failed() }
        complete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if sentAt != nil {
            failed()
            sentAt = nil
        }
        context.close(promise: nil)
    }

    private func failed() {
        report.connectionErrors += 1
        workload.counters.errors.add(1, ordering: .relaxed)
    }

    private func record(latency: TimeAmount) {
        let nanoseconds = UInt64(Swift.max(0, latency.nanoseconds))
        let expected = (200..<300).contains(status) || (sentRead && status == 404)
        if sentRead {
            if status == 404 { report.reads.notFound += 1 }
            report.reads.latency.record(nanoseconds: nanoseconds)
            if expected { report.reads.ok += 1 } else { report.reads.unexpected[status, default: 0] += 1 }
        } else {
            report.writes.latency.record(nanoseconds: nanoseconds)
            if expected { report.writes.ok += 1 } else { report.writes.unexpected[status, default: 0] += 1 }
        }
        workload.counters.completed.add(1, ordering: .relaxed)
        if !expected { workload.counters.errors.add(1, ordering: .relaxed) }
    }

    private func finish(context: ChannelHandlerContext) {
        report.finished = true
        complete()
        context.close(promise: nil)
    }

    private func complete() {
        guard !completed else { return }
        completed = true
        timeout?.cancel()
        promise.succeed(report)
    }

    /// The value of the next write: the shared bytes with their start overwritten by a number
    /// that changes every write. A store may skip rewriting a value identical to the one it
    /// holds (a B-tree leaves such a page clean), which no real workload would let it do.
    private func nextValue() -> ByteBuffer {
        var value = workload.value
        writesSent &+= 1
        let stamp = nextRandom() ^ writesSent
        let width = Swift.min(16, value.readableBytes)
        for position in 0..<width {
            let digit = UInt8((stamp >> (4 * UInt64(position))) & 0xF)
            value.setInteger(digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10, at: value.readerIndex + position)
        }
        return value
    }

    private func nextRandom() -> UInt64 {
        // SplitMix64: cheap and good enough to pick keys and operations.
        random &+= 0x9E37_79B9_7F4A_7C15
        var z = random
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private func sendNext(context: ChannelHandlerContext) {
        let options = workload.options
        let key: Int
        let read: Bool
        switch workload.phase {
        case .preload:
            guard nextPreloadKey < options.keys else { return finish(context: context) }
            key = nextPreloadKey
            nextPreloadKey += options.connections
            read = false
        case .timed:
            key = Int(nextRandom() % UInt64(options.keys))
            read = Double(nextRandom() >> 11) / Double(1 << 53) < options.readRatio
        }
        let path = "/v1/keys/" + options.prefix + String(key)
        var head = HTTPRequestHead(version: .http1_1, method: read ? .GET : .PUT, uri: read ? path + workload.readPath : path)
        head.headers.add(name: "Host", value: host)
        if !read { head.headers.add(name: "Content-Length", value: String(workload.value.readableBytes)) }
        sentRead = read
        status = 0
        sentAt = NIODeadline.now()
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !read { context.write(wrapOutboundOut(.body(.byteBuffer(nextValue()))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        timeout?.cancel()
        let channel = context.channel
        timeout = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(options.requestTimeout.components.seconds) * 1_000_000_000)) {
            channel.close(promise: nil)
        }
    }
}
