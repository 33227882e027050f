import KeyperBase
import KeyperRaft

/// Linearizable reads (ReadIndex, thesis §6.4) as plain state: the reads waiting for a round,
/// the one round in flight, and the confirmed reads waiting for the state machine to reach
/// their index. The replica asks the core; this decides who is released and when.
///
/// One round at a time, as etcd does: every read arriving while a round is out joins the next
/// one, so under load one heartbeat round confirms many reads and followers answer far fewer
/// heartbeats. Rounds are numbered from a random start on every process start (as request
/// sequences are): an answer to a round of this node's previous run, or a late duplicate,
/// releases nothing.
package struct ReadBarrier {
    struct Round {
        let number: UInt64
        var readers: [Waiter]
        /// Ticks since the round was last asked.
        var age = 0
    }

    /// Reads not yet in a round.
    private(set) var waiting: [Waiter] = []
    /// The round asked and not answered yet.
    private(set) var inFlight: Round?
    /// Reads whose round was confirmed at `index`, until the state machine applies it.
    private(set) var confirmed: [(index: LogIndex, readers: [Waiter])] = []
    /// The number the next round is asked under.
    private(set) var nextRound: UInt64

    init(firstRound: UInt64) {
        nextRound = firstRound
    }

    /// A round may be asked for now: reads wait and none is in flight.
    var canStartRound: Bool { inFlight == nil && !waiting.isEmpty }
    var hasConfirmedReads: Bool { !confirmed.isEmpty }

    mutating func add(_ readers: [Waiter]) {
        waiting += readers
    }

    /// The core took the round ``nextRound``: the waiting reads ride it.
    mutating func roundStarted() {
        precondition(inFlight == nil, "a read round is already in flight")
        inFlight = Round(number: nextRound, readers: waiting)
        waiting = []
        nextRound += 1
    }

    /// The waiting reads, taken out (the core refused to start a round for them).
    mutating func takeWaiting() -> [Waiter] {
        defer { waiting = [] }
        return waiting
    }

    /// The core confirmed `round` at `index`: its readers, to be answered now if the state
    /// machine has `applied` that far; otherwise they wait for it (and nothing is returned).
    /// An answer to any other round (an earlier run's, or one already answered) releases nothing.
    mutating func confirm(round: UInt64, at index: LogIndex, applied: LogIndex) -> [Waiter] {
        guard let current = inFlight, current.number == round else { return [] }
        inFlight = nil
        if applied >= index { return current.readers }
        confirmed.append((index, current.readers))
        return []
    }

    /// The core dropped `round` (leadership moved before it finished): its readers ask again.
    mutating func drop(round: UInt64) {
        guard let current = inFlight, current.number == round else { return }
        inFlight = nil
        waiting = current.readers + waiting
    }

    /// The leader changed: a round sent to the old one may never be answered, so its readers
    /// ask the new one.
    mutating func leaderChanged() {
        guard let current = inFlight else { return }
        inFlight = nil
        waiting = current.readers + waiting
    }

    /// One tick. A round unanswered for more than `ticksMax` ticks (a message lost on the way
    /// to or from the leader) is to be asked again under the same number: whichever answer
    /// comes first releases its reads (all of which arrived before either request, so either
    /// index serves them). Returns that round's number.
    mutating func tick(ticksMax: Int) -> UInt64? {
        guard var current = inFlight else { return nil }
        current.age += 1
        defer { inFlight = current }
        guard current.age > ticksMax else { return nil }
        current.age = 0
        return current.number
    }

    /// The state machine reached `applied`: the confirmed readers it covers, taken out.
    mutating func applied(through applied: LogIndex) -> [Waiter] {
        guard !confirmed.isEmpty else { return [] }
        let (due, later) = confirmed.partitioned { $0.index <= applied }
        confirmed = later
        return due.flatMap(\.readers)
    }

    /// The readers whose deadline passed by `now`, taken out.
    mutating func expire(now: Moment) -> [Waiter] {
        var expired: [Waiter] = []
        func split(_ readers: [Waiter]) -> [Waiter] {
            let (late, live) = readers.partitioned { $0.deadline <= now }
            expired += late
            return live
        }
        waiting = split(waiting)
        if var current = inFlight {
            current.readers = split(current.readers)
            // An empty round stays in flight: its answer must still find it, or the next round
            // would start while the core still has this one pending.
            inFlight = current
        }
        confirmed = confirmed.compactMap { pending in
            let live = split(pending.readers)
            return live.isEmpty ? nil : (pending.index, live)
        }
        return expired
    }

    /// Every reader, taken out (the replica closes or gives up its history).
    mutating func takeAll() -> [Waiter] {
        defer {
            waiting = []
            inFlight = nil
            confirmed = []
        }
        return waiting + (inFlight?.readers ?? []) + confirmed.flatMap(\.readers)
    }

    static func context(round: UInt64) -> [UInt8] {
        withUnsafeBytes(of: round.littleEndian) { Array($0) }
    }

    /// The round a ReadIndex context names (the simulator reads it off the wire).
    package static func round(from context: [UInt8]) -> UInt64? {
        guard context.count == 8 else { return nil }
        return context.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }
}
