import Synchronization

/// One change to a key, as a watcher sees it.
public struct KVEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case put
        case delete
    }

    public var kind: Kind
    public var key: [UInt8]
    /// The value written; empty for a delete.
    public var value: [UInt8]
    /// After a put, the key's revisions; for a delete, `mod` is the delete's revision and the
    /// others are 0.
    public var revisions: KeyRevisions
    /// Its place among the events of its revision (a transaction or a prefix delete makes
    /// several, in the order it applied them), and how many there are.
    public var index = 0
    public var count = 1
    /// The event as a watch stream sends it, made once for all watchers
    /// (``ChangeFeed/setEncoder(_:)``); nil when no watcher was following it then.
    public var encoded: [UInt8]?

    public var revision: UInt64 { revisions.mod }

    public init(kind: Kind, key: [UInt8], value: [UInt8], revisions: KeyRevisions) {
        self.kind = kind
        self.key = key
        self.value = value
        self.revisions = revisions
    }

    /// Bytes it holds, for the history's and a watcher's bounds.
    var bytes: Int { key.count + value.count + (encoded?.count ?? 0) + 64 }
}

/// Which keys a watch follows.
public enum WatchFilter: Sendable, Equatable {
    case key([UInt8])
    case prefix([UInt8])

    func matches(_ key: [UInt8]) -> Bool {
        switch self {
        case .key(let watched): key == watched
        case .prefix(let prefix): key.starts(with: prefix)
        }
    }
}

/// Where a watch starts: the events of `revision` and later, less the first `skip` of
/// `revision` (a resumed stream that had delivered part of a revision's events).
public struct WatchStart: Sendable, Equatable {
    public var revision: UInt64
    public var skip: Int

    public init(revision: UInt64, skip: Int = 0) {
        self.revision = revision
        self.skip = skip
    }
}

/// Why a watch cannot start, or stopped.
public enum WatchEnd: Error, Sendable, Equatable {
    /// The events it needs are no longer kept (older than the history, or the state was
    /// replaced by a snapshot): re-read, then watch from the revision read.
    case compacted(compactRevision: UInt64)
    /// It fell behind by more than a watcher may buffer.
    case lagging(events: Int)
    /// The watcher was cancelled, or the store closed.
    case cancelled
}

/// The store's recent changes, and the watchers following them.
///
/// Every applied batch's events are published in the store's write lock, in revision order,
/// after the batch is in the tables; a watcher is registered in the same lock as its first
/// events are taken from the history, so it sees each event once and none is missed. The
/// history is bounded by revisions and bytes; a watcher's buffer by events and bytes (one that
/// does not read is ended with ``WatchEnd/lagging(events:)``, never buffered without bound).
/// After a restart the history starts at the store's revision: older starts are compacted.
public final class ChangeFeed: Sendable {
    public struct Limits: Sendable {
        /// Revisions kept for watches that start in the past.
        public var historyRevisions: Int
        public var historyBytes: Int
        /// What a watcher may have delivered to it and not yet taken.
        public var watcherEvents: Int
        public var watcherBytes: Int

        public init(historyRevisions: Int = 1_000_000, historyBytes: Int = 64 << 20, watcherEvents: Int = 10_000,
                    watcherBytes: Int = 8 << 20) {
            self.historyRevisions = historyRevisions
            self.historyBytes = historyBytes
            self.watcherEvents = watcherEvents
            self.watcherBytes = watcherBytes
        }
    }

    struct State {
        /// Events in revision order, from `head` on.
        var history: [KVEvent] = []
        var head = 0
        var historyBytes = 0
        /// Events up to and including this revision are not kept.
        var compacted: UInt64
        /// The store revision the feed has published through.
        var revision: UInt64
        var watchers: [UInt64: Watcher] = [:]
        var byKey: [[UInt8]: Set<UInt64>] = [:]
        var byPrefix: [[UInt8]: Set<UInt64>] = [:]
        /// How many watched prefixes have each length, so an event's key is looked up only at
        /// the lengths some prefix has.
        var prefixLengths: [Int: Int] = [:]
        var nextID: UInt64 = 1
        var closed = false
    }

    public let limits: Limits
    private let state: Mutex<State>
    /// The encoder, boxed: a closure kept in a generic container and read back is wrapped in
    /// conversion thunks each time (perf showed chains of them taking most of a leader's CPU).
    private final class Encoder: Sendable {
        let encode: @Sendable (KVEvent) -> [UInt8]
        init(_ encode: @escaping @Sendable (KVEvent) -> [UInt8]) { self.encode = encode }
    }
    private let encoder = Mutex<Encoder?>(nil)

    /// How a watch stream sends an event: published events are encoded once, when some
    /// watcher follows them, instead of once per watcher.
    public func setEncoder(_ encode: @escaping @Sendable (KVEvent) -> [UInt8]) {
        let boxed = Encoder(encode)
        encoder.withLock { $0 = boxed }
    }

    init(revision: UInt64, limits: Limits) {
        self.limits = limits
        state = Mutex(State(compacted: revision, revision: revision))
    }

    /// The revision the feed has published through, and the oldest it can start from.
    public var revisions: (current: UInt64, compacted: UInt64) {
        state.withLock { ($0.revision, $0.compacted) }
    }

    public var watcherCount: Int { state.withLock { $0.watchers.count } }

    /// A watcher of `filter`'s keys from `start` (nil: from the next change on). Throws
    /// ``WatchEnd/compacted(compactRevision:)`` when events it needs are no longer kept.
    public func watch(_ filter: WatchFilter, from start: WatchStart?) throws(WatchEnd) -> Watcher {
        try state.withLock { (state: inout State) throws(WatchEnd) -> Watcher in
            guard !state.closed else { throw WatchEnd.cancelled }
            let start = start ?? WatchStart(revision: state.revision + 1)
            guard start.revision > state.compacted else { throw WatchEnd.compacted(compactRevision: state.compacted) }
            let id = state.nextID
            state.nextID += 1
            let watcher = Watcher(id: id, filter: filter, start: start, feed: self, limits: limits)
            var backlog: [KVEvent] = []
            if start.revision <= state.revision {
                // The history holds every event after `compacted`: find the first at `start`.
                var low = state.head, high = state.history.count
                while low < high {
                    let middle = (low + high) / 2
                    if state.history[middle].revision < start.revision { low = middle + 1 } else { high = middle }
                }
                for event in state.history[low...] where filter.matches(event.key) {
                    if event.revision == start.revision && event.index < start.skip { continue }
                    backlog.append(event)
                }
            }
            _ = watcher.deliver(backlog)
            // One whose backlog is past its bounds has ended already.
            guard !watcher.hasEnded else { return watcher }
            state.watchers[id] = watcher
            switch filter {
            case .key(let key): state.byKey[key, default: []].insert(id)
            case .prefix(let prefix):
                state.byPrefix[prefix, default: []].insert(id)
                state.prefixLengths[prefix.count, default: 0] += 1
            }
            return watcher
        }
    }

    /// Ends and forgets a watcher.
    func remove(_ id: UInt64) {
        state.withLock { Self.forget(id, in: &$0) }
    }

    private static func forget(_ id: UInt64, in state: inout State) {
        guard let watcher = state.watchers.removeValue(forKey: id) else { return }
        switch watcher.filter {
        case .key(let key):
            state.byKey[key]?.remove(id)
            if state.byKey[key]?.isEmpty == true { state.byKey[key] = nil }
        case .prefix(let prefix):
            state.byPrefix[prefix]?.remove(id)
            if state.byPrefix[prefix]?.isEmpty == true { state.byPrefix[prefix] = nil }
            state.prefixLengths[prefix.count, default: 1] -= 1
            if state.prefixLengths[prefix.count] == 0 { state.prefixLengths[prefix.count] = nil }
        }
    }

    /// A batch's events (in revision order) and the store revision after it.
    func publish(_ events: [KVEvent], revision: UInt64) {
        var events = events
        if let encoder = encoder.withLock({ $0 }), watcherCount > 0 {
            for position in events.indices { events[position].encoded = encoder.encode(events[position]) }
        }
        let wake = state.withLock { (state: inout State) -> [Watcher] in
            state.revision = revision
            guard !events.isEmpty else { return [] }
            for event in events {
                state.history.append(event)
                state.historyBytes += event.bytes
            }
            trim(&state)
            guard !state.watchers.isEmpty else { return [] }
            // Each watcher's share of the batch, in order.
            var shares: [UInt64: [KVEvent]] = [:]
            for event in events {
                for id in state.byKey[event.key] ?? [] { shares[id, default: []].append(event) }
                for length in state.prefixLengths.keys where length <= event.key.count {
                    for id in state.byPrefix[Array(event.key[..<length])] ?? [] { shares[id, default: []].append(event) }
                }
            }
            var wake: [Watcher] = []
            for (id, share) in shares {
                guard let watcher = state.watchers[id] else { continue }
                if watcher.deliver(share) { wake.append(watcher) }
                if watcher.hasEnded { Self.forget(id, in: &state) }
            }
            return wake
        }
        for watcher in wake { watcher.wake() }
    }

    /// Drops the oldest revisions beyond the bounds (whole revisions: a start never falls
    /// inside a revision the history holds only part of).
    private func trim(_ state: inout State) {
        while state.head < state.history.count {
            let oldest = state.history[state.head].revision
            let newest = state.history[state.history.count - 1].revision
            guard newest - oldest >= UInt64(limits.historyRevisions) || state.historyBytes > limits.historyBytes else { break }
            while state.head < state.history.count, state.history[state.head].revision == oldest {
                state.historyBytes -= state.history[state.head].bytes
                state.head += 1
            }
            state.compacted = oldest
        }
        if state.head > 4_096 && state.head * 2 > state.history.count {
            state.history.removeFirst(state.head)
            state.head = 0
        }
    }

    /// The state was replaced (a snapshot installed, a reset) at `revision`: the history is
    /// gone, and every watcher ends, for its events up to the replacement are not known.
    func replaced(revision: UInt64) {
        let ended = state.withLock { (state: inout State) -> [Watcher] in
            let watchers = Array(state.watchers.values)
            state = State(compacted: revision, revision: revision, nextID: state.nextID, closed: state.closed)
            return watchers
        }
        for watcher in ended { watcher.end(.compacted(compactRevision: revision)) }
    }

    /// Ends every watcher; later watches are refused (a server shutting down, a store closed).
    public func close() {
        state.withLock { $0.closed = true }
        endWatchers()
    }

    /// Ends every current watcher (a server shutting down: its streams must end for it to
    /// drain); later watches are still taken.
    public func endWatchers() {
        let ended = state.withLock { (state: inout State) -> [Watcher] in
            defer { state.watchers = [:]; state.byKey = [:]; state.byPrefix = [:]; state.prefixLengths = [:] }
            return Array(state.watchers.values)
        }
        for watcher in ended { watcher.end(.cancelled) }
    }

    /// Wakes every watcher waiting with nothing to deliver, so its stream can say it is
    /// current (a progress notice) and notice a client that went away.
    public func wakeIdle() {
        for watcher in state.withLock({ Array($0.watchers.values) }) { watcher.wakeIdle() }
    }
}

extension ChangeFeed.State {
    init(compacted: UInt64, revision: UInt64, nextID: UInt64, closed: Bool) {
        self.init(compacted: compacted, revision: revision)
        self.nextID = nextID
        self.closed = closed
    }
}

/// One watch: the events delivered to it and not yet taken, and the task waiting for them.
public final class Watcher: Sendable {
    /// What ``next()`` answers.
    public enum Delivery: Sendable, Equatable {
        case events([KVEvent])
        /// Nothing new: the feed has published through this revision.
        case idle(revision: UInt64)
        case ended(WatchEnd)
    }

    private struct State {
        var queue: [KVEvent] = []
        var bytes = 0
        var ended: WatchEnd?
        var idle = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    let id: UInt64
    public let filter: WatchFilter
    /// Events before it are not delivered (a watch may start beyond the current revision).
    let start: WatchStart
    private let feed: ChangeFeed
    private let limits: ChangeFeed.Limits
    private let state = Mutex(State())

    init(id: UInt64, filter: WatchFilter, start: WatchStart, feed: ChangeFeed, limits: ChangeFeed.Limits) {
        self.id = id
        self.filter = filter
        self.start = start
        self.feed = feed
        self.limits = limits
    }

    var hasEnded: Bool { state.withLock { $0.ended != nil } }

    /// Queues `events`; past the bounds the watcher ends instead, unless it had taken
    /// everything before (a resumed watch's backlog, or one revision larger than the bounds,
    /// goes out whole: ending it would only make the client ask for the same again). Whether
    /// a waiter should be woken.
    func deliver(_ events: [KVEvent]) -> Bool {
        let events = events.filter { $0.revision > start.revision || ($0.revision == start.revision && $0.index >= start.skip) }
        guard !events.isEmpty else { return false }
        return state.withLock { state in
            guard state.ended == nil else { return false }
            let caughtUp = state.queue.isEmpty
            state.queue += events
            state.bytes += events.reduce(0) { $0 + $1.bytes }
            if !caughtUp, state.queue.count > limits.watcherEvents || state.bytes > limits.watcherBytes {
                state.ended = .lagging(events: state.queue.count)
                state.queue = []
                state.bytes = 0
            }
            return state.waiter != nil
        }
    }

    func end(_ reason: WatchEnd) {
        state.withLock { state in
            if state.ended == nil { state.ended = reason }
        }
        wake()
    }

    func wakeIdle() {
        state.withLock { $0.idle = true }
        wake()
    }

    func wake() {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The events delivered since the last call (waiting for some), or a progress notice when
    /// ``ChangeFeed/wakeIdle()`` found it idle, or why it ended (after the events before it).
    /// Cancelling the calling task cancels the watcher.
    public func next() async -> Delivery {
        while true {
            // Read before looking at the queue: every event up to this revision is queued by
            // now (publishing queues a revision's events before it releases the feed), so an
            // idle answer never claims a revision whose events are still to come.
            let published = feed.revisions.current
            let ready = state.withLock { state -> Delivery? in
                if !state.queue.isEmpty {
                    defer {
                        state.queue = []
                        state.bytes = 0
                        state.idle = false
                    }
                    return .events(state.queue)
                }
                if let ended = state.ended { return .ended(ended) }
                if state.idle {
                    state.idle = false
                    return .idle(revision: 0)
                }
                return nil
            }
            switch ready {
            case .idle?: return .idle(revision: published)
            case let ready?: return ready
            case nil: break
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let now = state.withLock { state -> Bool in
                        if !state.queue.isEmpty || state.ended != nil || state.idle { return true }
                        state.waiter = continuation
                        return false
                    }
                    if now { continuation.resume() }
                }
            } onCancel: {
                cancel()
            }
        }
    }

    /// Stops the watch: it is forgotten by the feed, and a waiting ``next()`` returns.
    public func cancel() {
        feed.remove(id)
        end(.cancelled)
    }
}
