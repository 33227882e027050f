import KeyperBase
import KeyperReplica
import Metrics
import Prometheus
import Synchronization

/// A node's metrics, exported at `GET /metrics` in Prometheus text format.
///
/// Each node has its own registry rather than the process-wide `MetricsSystem`, so several
/// nodes in one test process keep separate numbers.
public final class NodeMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    /// Time to commit one group of writes to disk (one appended batch plus fsync).
    let commitDuration: Metrics.Timer
    /// Writes per group commit: how well batching works.
    let commitBatchWrites: Recorder
    let writesCommitted: Metrics.Counter
    let writesFailed: Metrics.Counter
    /// Retries with an idempotency key answered from the store's memory of the first attempt,
    /// and those refused because the key was used for another request.
    let idempotentReplays: Metrics.Counter
    let idempotencyKeysReused: Metrics.Counter
    /// Watch streams open.
    let watchers: Metrics.Gauge
    /// Leases in the state machine; those this node revoked as leader because their TTL
    /// passed; keepalives it answered as leader.
    let leases: Metrics.Gauge
    let leasesExpired: Metrics.Counter
    let leaseKeepAlives: Metrics.Counter
    /// The Raft replica's own metrics (Raft mode).
    let replica: ReplicaMetrics

    private struct RequestKey: Hashable {
        var route: String
        var method: String
        var status: Int
    }
    private let requestMetrics = Mutex<[RequestKey: (Metrics.Counter, Metrics.Timer)]>([:])
    /// Key reads and writes answered, and the time they took in all: what the status page
    /// turns into rates and mean latencies (``RequestTotals``).
    private let totals = Mutex(RequestTotals())

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        factory.defaultValueHistogramBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        self.factory = factory
        commitDuration = Metrics.Timer(label: "keyper_commit_duration_seconds", factory: factory)
        commitBatchWrites = Recorder(label: "keyper_commit_batch_writes", aggregate: true, factory: factory)
        writesCommitted = Metrics.Counter(label: "keyper_writes_committed_total", factory: factory)
        writesFailed = Metrics.Counter(label: "keyper_writes_failed_total", factory: factory)
        idempotentReplays = Metrics.Counter(label: "keyper_idempotent_replays_total", factory: factory)
        idempotencyKeysReused = Metrics.Counter(label: "keyper_idempotency_key_reused_total", factory: factory)
        watchers = Metrics.Gauge(label: "keyper_watchers", factory: factory)
        leases = Metrics.Gauge(label: "keyper_leases", factory: factory)
        leasesExpired = Metrics.Counter(label: "keyper_leases_expired_total", factory: factory)
        leaseKeepAlives = Metrics.Counter(label: "keyper_lease_keepalives_total", factory: factory)
        replica = ReplicaMetrics(factory: factory)
    }

    /// Counts a request and its latency under a bounded set of route names.
    func recordRequest(route: String, method: String, status: Int, duration: Duration) {
        let key = RequestKey(route: route, method: method, status: status)
        let (counter, timer) = requestMetrics.withLock { metrics in
            if let existing = metrics[key] { return existing }
            let dimensions = [("route", route), ("method", method), ("status", String(status))]
            let created = (
                Metrics.Counter(label: "keyper_http_requests_total", dimensions: dimensions, factory: factory),
                Metrics.Timer(label: "keyper_http_request_duration_seconds", dimensions: dimensions, factory: factory)
            )
            metrics[key] = created
            return created
        }
        counter.increment()
        timer.recordNanoseconds(duration.nanoseconds)
        let isKeys = route == Route.key.pattern || route == Route.keys.pattern || route == Route.transaction.pattern
        guard isKeys, status < 500 else { return }
        let nanoseconds = UInt64(max(0, duration.nanoseconds))
        totals.withLock { totals in
            if method == "GET" || method == "HEAD" {
                totals.reads += 1
                totals.readNanoseconds += nanoseconds
            } else {
                totals.writes += 1
                totals.writeNanoseconds += nanoseconds
            }
        }
    }

    /// The key reads and writes answered so far (not 5xx), and their total time.
    public var requestTotals: RequestTotals { totals.withLock { $0 } }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }
}

/// Key requests answered since the node started: reads (`GET`/`HEAD` of keys) and writes
/// (`PUT`, `DELETE`, transactions), and the time each kind took in all.
public struct RequestTotals: Codable, Sendable, Equatable {
    public var reads: UInt64 = 0
    public var writes: UInt64 = 0
    public var readNanoseconds: UInt64 = 0
    public var writeNanoseconds: UInt64 = 0

    enum CodingKeys: String, CodingKey {
        case reads, writes, readNanoseconds = "read_ns", writeNanoseconds = "write_ns"
    }
}
