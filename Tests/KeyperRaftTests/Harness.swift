@testable import KeyperRaft

func ids(_ names: String...) -> Set<NodeID> { Set(names.map { NodeID($0) }) }

let n1 = NodeID("n1")
let n2 = NodeID("n2")
let n3 = NodeID("n3")
let n4 = NodeID("n4")

func testConfig(_ id: NodeID, _ adjust: (inout Config) -> Void = { _ in }) -> Config {
    var config = Config(id: id, randomSeed: UInt64(id.rawValue.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }))
    config.electionTicks = 10
    config.heartbeatTicks = 1
    adjust(&config)
    return config
}

/// One node and its disk, handled the way a shell handles them.
struct TestNode {
    var raft: RawNode
    let storage: MemoryStorage
    var applied: [Entry] = []
    var readStates: [ReadState] = []
    var droppedReads: [[UInt8]] = []

    init(_ id: NodeID, storage: MemoryStorage, _ adjust: (inout Config) -> Void = { _ in }) {
        self.storage = storage
        raft = try! RawNode(config: testConfig(id, adjust), storage: storage)
    }

    /// Persists, applies and advances one Ready; returns its messages (both kinds, in order).
    mutating func handleReady() -> [Message] {
        guard raft.hasReady else { return [] }
        let ready = raft.ready()
        if let snapshot = ready.snapshot { try! storage.applySnapshot(snapshot, data: []) }
        storage.append(ready.entries)
        if let hardState = ready.hardState { storage.setHardState(hardState) }
        applied += ready.committedEntries
        readStates += ready.readStates
        droppedReads += ready.droppedReads
        raft.advance(ready)
        return ready.messages + ready.messagesAfterPersist
    }
}

/// A cluster on a perfect network that the test controls message by message.
struct Cluster {
    var nodes: [NodeID: TestNode] = [:]
    var inFlight: [Message] = []
    /// Nodes whose messages, in and out, are dropped.
    var isolated: Set<NodeID> = []
    /// Every message delivered, in order.
    var delivered: [Message] = []

    init(voters: Set<NodeID>, learners: Set<NodeID> = [], _ adjust: (inout Config) -> Void = { _ in }) {
        for id in voters.union(learners) {
            let storage = MemoryStorage(bootstrapping: Configuration(voters: voters, learners: learners))
            nodes[id] = TestNode(id, storage: storage, adjust)
        }
    }

    subscript(id: NodeID) -> RawNode {
        get { nodes[id]!.raft }
        set { nodes[id]!.raft = newValue }
    }

    mutating func collect(_ id: NodeID) {
        while nodes[id]!.raft.hasReady { inFlight += nodes[id]!.handleReady() }
    }

    /// Delivers messages until none are left; returns how many were delivered.
    @discardableResult
    mutating func stabilize(roundsMax: Int = 10_000) -> Int {
        var delivered = 0
        for _ in 0..<roundsMax {
            for id in nodes.keys.sorted() { collect(id) }
            if inFlight.isEmpty { return delivered }
            let batch = inFlight
            inFlight = []
            for message in batch where !isolated.contains(message.from) && !isolated.contains(message.to) {
                guard nodes[message.to] != nil else { continue }
                try! nodes[message.to]!.raft.step(message)
                self.delivered.append(message)
                delivered += 1
            }
        }
        preconditionFailure("cluster did not stabilize")
    }

    /// One round: collects every node's messages and delivers them, except those `drop` selects.
    /// Returns how many were dropped.
    @discardableResult
    mutating func deliverOnce(dropping drop: (Message) -> Bool) -> Int {
        for id in nodes.keys.sorted() { collect(id) }
        let batch = inFlight
        inFlight = []
        var dropped = 0
        for message in batch where !isolated.contains(message.from) && !isolated.contains(message.to) {
            if drop(message) {
                dropped += 1
                continue
            }
            try! nodes[message.to]!.raft.step(message)
            delivered.append(message)
        }
        return dropped
    }

    mutating func tick(_ id: NodeID, times: Int = 1) {
        for _ in 0..<times { nodes[id]!.raft.tick() }
    }

    mutating func tickAll(times: Int = 1) {
        for _ in 0..<times {
            for id in nodes.keys.sorted() { nodes[id]!.raft.tick() }
            stabilize()
        }
    }

    /// Makes `id` time out and win an election.
    mutating func elect(_ id: NodeID) {
        let electionTicks = 10
        for _ in 0..<(2 * electionTicks) where nodes[id]!.raft.role != .preCandidate && nodes[id]!.raft.role != .candidate {
            tick(id)
        }
        stabilize()
        precondition(nodes[id]!.raft.role == .leader, "\(id) did not win: \(nodes[id]!.raft.role)")
    }

    var leaders: [NodeID] { nodes.keys.filter { nodes[$0]!.raft.role == .leader }.sorted() }

    /// Proposes on `id` and delivers everything.
    @discardableResult
    mutating func propose(_ data: [UInt8], on id: NodeID) throws(RaftError) -> EntryPosition {
        let position = try nodes[id]!.raft.propose(data)
        stabilize()
        return position
    }

    func appliedData(_ id: NodeID) -> [[UInt8]] {
        nodes[id]!.applied.filter { $0.kind == .normal && !$0.data.isEmpty }.map(\.data)
    }
}

/// A lone node for message-level tests, with its disk; messages it sends are returned.
struct Solo {
    var node: TestNode
    init(_ id: NodeID = n1, voters: Set<NodeID> = ids("n1", "n2", "n3"), _ adjust: (inout Config) -> Void = { _ in }) {
        node = TestNode(id, storage: MemoryStorage(bootstrapping: Configuration(voters: voters)), adjust)
    }
    var raft: RawNode {
        get { node.raft }
        set { node.raft = newValue }
    }
    mutating func step(_ message: Message) -> [Message] {
        try! node.raft.step(message)
        var out: [Message] = []
        while node.raft.hasReady { out += node.handleReady() }
        return out
    }
    mutating func drain() -> [Message] {
        var out: [Message] = []
        while node.raft.hasReady { out += node.handleReady() }
        return out
    }
}

func entry(_ index: UInt64, _ term: UInt64, _ data: [UInt8] = [7]) -> Entry {
    Entry(term: Term(term), index: LogIndex(index), data: data)
}
