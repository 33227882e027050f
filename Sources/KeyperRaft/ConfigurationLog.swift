/// The configurations held in the log, so the latest one is in force as soon as it is appended
/// (thesis §4.1) and the previous one comes back if a new leader overwrites it.
struct ConfigurationLog: Sendable {
    /// The configuration of the snapshot the log starts from.
    private(set) var base: Configuration
    private(set) var baseIndex: LogIndex
    /// Changes in log order. Invariant: indexes strictly increasing and > baseIndex.
    private(set) var changes: [(index: LogIndex, configuration: Configuration)] = []

    init(snapshot: SnapshotMetadata) {
        base = snapshot.configuration
        baseIndex = snapshot.index
    }

    var current: Configuration { changes.last?.configuration ?? base }
    /// Index of the last configuration entry in the log (baseIndex if none follows the snapshot).
    var currentIndex: LogIndex { changes.last?.index ?? baseIndex }

    func configuration(at index: LogIndex) -> Configuration {
        precondition(index >= baseIndex, "configuration at \(index) below base \(baseIndex)")
        return changes.last { $0.index <= index }?.configuration ?? base
    }

    /// Entries from `index` on are being replaced.
    mutating func truncate(from index: LogIndex) {
        while let last = changes.last, last.index >= index { changes.removeLast() }
    }

    mutating func record(_ entry: Entry) {
        precondition(entry.kind == .configChange, "not a config entry: \(entry.index)")
        precondition(entry.index > currentIndex, "config entry \(entry.index) after \(currentIndex)")
        guard let change = try? ConfChange(decoding: entry.data) else {
            preconditionFailure("undecodable configuration entry at \(entry.index)")
        }
        changes.append((entry.index, current.applying(change)))
    }

    mutating func reset(_ snapshot: SnapshotMetadata) {
        base = snapshot.configuration
        baseIndex = snapshot.index
        changes = []
    }
}
