import KeyperClient
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

    /// Time to commit one group of writes to disk (SQLite transaction plus fsync).
    let commitDuration: Metrics.Timer
    /// Writes per group commit: how well batching works.
    let commitBatchWrites: Recorder
    let writesCommitted: Metrics.Counter
    /// Raft mode: one `fdatasync` of the WAL per `Ready`.
    let walSyncDuration: Metrics.Timer
    let proposals: Metrics.Counter
    let entriesApplied: Metrics.Counter
    let leaderChanges: Metrics.Counter
    let term: Metrics.Gauge
    let commitIndex: Metrics.Gauge
    let appliedIndex: Metrics.Gauge
    let snapshots: Metrics.Counter
    let snapshotDuration: Metrics.Timer
    let snapshotsInstalled: Metrics.Counter
    let writesFailed: Metrics.Counter

    private struct RequestKey: Hashable {
        var route: String
        var method: String
        var status: Int
    }
    private let requestMetrics = Mutex<[RequestKey: (Metrics.Counter, Metrics.Timer)]>([:])

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
        walSyncDuration = Metrics.Timer(label: "keyper_wal_sync_duration_seconds", factory: factory)
        proposals = Metrics.Counter(label: "keyper_raft_proposals_total", factory: factory)
        entriesApplied = Metrics.Counter(label: "keyper_raft_entries_applied_total", factory: factory)
        leaderChanges = Metrics.Counter(label: "keyper_raft_leader_changes_total", factory: factory)
        term = Metrics.Gauge(label: "keyper_raft_term", factory: factory)
        commitIndex = Metrics.Gauge(label: "keyper_raft_commit_index", factory: factory)
        appliedIndex = Metrics.Gauge(label: "keyper_raft_applied_index", factory: factory)
        snapshots = Metrics.Counter(label: "keyper_snapshots_total", factory: factory)
        snapshotDuration = Metrics.Timer(label: "keyper_snapshot_duration_seconds", factory: factory)
        snapshotsInstalled = Metrics.Counter(label: "keyper_snapshots_installed_total", factory: factory)
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
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }
}
