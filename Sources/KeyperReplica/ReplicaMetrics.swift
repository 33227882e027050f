import Metrics

/// What the replica counts, made by whatever metrics factory the process uses (the server's
/// Prometheus registry; a no-op one in the simulator).
package final class ReplicaMetrics: Sendable {
    /// One `fdatasync` of the WAL per `Ready` that must sync.
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
    /// Snapshot transfers started over because their connection was made anew mid-way.
    let snapshotRestarts: Metrics.Counter

    package init(factory: any MetricsFactory) {
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
        snapshotRestarts = Metrics.Counter(label: "keyper_snapshot_transfer_restarts_total", factory: factory)
    }

    /// Counts nothing: for simulations and tests.
    package static func discarding() -> ReplicaMetrics { ReplicaMetrics(factory: NOOPMetricsHandler.instance) }
}
