import KeyperRaft
import KeyperWire

/// The log state rebuilt by replaying records in order. Pure: no I/O, so its rules are the
/// same whether records come from disk (recovery) or are being written (they are checked
/// before writing by ``WriteAheadLog`` itself).
///
/// Replay rules, which make the record stream alone the source of truth:
/// - a segment header restates first index, compaction point and hard state;
/// - an entry at index i discards entries >= i, then becomes the last entry;
/// - a hard state replaces the previous one;
/// - a snapshot record drops entries <= its index (retain mode) or all of them (discard mode).
/// Any record that breaks these rules, though its checksum is good, is corruption.
struct WALReplay {
    var table = WALEntryTable(firstIndex: LogIndex(1))
    var cache: WALEntryCache
    var hardState = HardState()
    var snapshot = SnapshotMetadata()
    var sequence: UInt64 = 0
    var started = false

    init(cacheBytesMax: Int) {
        cache = WALEntryCache(bytesMax: cacheBytesMax)
    }

    var lastIndex: LogIndex { table.lastIndex }

    /// Returns a reason if the header does not continue the state replayed so far.
    mutating func applyHeader(_ header: SegmentHeader) -> String? {
        guard header.firstIndex > header.snapshot.index else {
            return "segment header first index \(header.firstIndex.rawValue) is not after its snapshot index \(header.snapshot.index.rawValue)"
        }
        guard started else {
            // Replay starts here: everything before this segment was compacted away.
            started = true
            sequence = header.sequence
            table = WALEntryTable(firstIndex: header.firstIndex)
            snapshot = header.snapshot
            hardState = header.hardState
            return nil
        }
        guard header.sequence == sequence + 1 else { return "segment sequence \(header.sequence) follows \(sequence)" }
        guard header.firstIndex == lastIndex.next() else {
            return "segment starts at index \(header.firstIndex.rawValue) but the log before it ends at \(lastIndex.rawValue)"
        }
        guard header.snapshot == snapshot else { return "segment header restates a different snapshot" }
        guard header.hardState == hardState else { return "segment header restates a different hard state" }
        sequence = header.sequence
        return nil
    }

    mutating func applyEntry(_ entry: Entry, location: WALEntryLocation) -> String? {
        guard entry.index > snapshot.index else {
            return "entry \(entry.index.rawValue) is at or below the compaction point \(snapshot.index.rawValue)"
        }
        guard entry.index <= lastIndex.next() else {
            return "entry \(entry.index.rawValue) leaves a gap after \(lastIndex.rawValue)"
        }
        table.place(location, at: entry.index)
        cache.append(entry)
        return nil
    }

    mutating func applyHardState(_ state: HardState) {
        hardState = state
    }

    mutating func applySnapshot(_ record: SnapshotRecord) -> String? {
        let index = record.metadata.index
        guard index > snapshot.index else {
            return "snapshot index \(index.rawValue) is not after the previous one \(snapshot.index.rawValue)"
        }
        switch record.mode {
        case .retainLog:
            guard index <= lastIndex else {
                return "compaction at \(index.rawValue) is past the last index \(lastIndex.rawValue)"
            }
            if table.contains(index) && table[index].term != record.metadata.term {
                return "compaction at \(index.rawValue) names term \(record.metadata.term.rawValue), the log has \(table[index].term.rawValue)"
            }
            table.dropThrough(index)
            cache.dropThrough(index)
        case .discardLog:
            table.reset(after: index)
            cache.removeAll()
        }
        snapshot = record.metadata
        return nil
    }

    /// After the last record: the live entries must reach back to the compaction point.
    func checkComplete() -> String? {
        guard table.firstIndex == snapshot.index.next() else {
            return "entries \(snapshot.index.rawValue + 1)..<\(table.firstIndex.rawValue) are missing (a deleted or lost segment?)"
        }
        return nil
    }
}
