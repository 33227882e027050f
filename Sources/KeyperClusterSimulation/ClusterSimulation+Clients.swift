import KeyperBase
import KeyperRaft
import KeyperReplica
import KeyperHistory
import KeyperStorage

extension ClusterSimulation {
    /// A logical clock for the history: calls and returns in the order they happened.
    func tick() -> UInt64 {
        logicalTime += 1
        return logicalTime
    }

    /// A request's deadline on the replica's clock, as the HTTP layer sets it.
    var deadline: Moment { Moment(nanoseconds: now) + .milliseconds(options.requestTimeoutMilliseconds) }

    /// A client's next operation: a linearizable or stale read, a write or a delete of a random
    /// key, sent to a node that says it leads (usually) or to any node (forwarded by a follower).
    func clientStep(_ index: Int) {
        guard clientsIssue, clients[index].operation == nil else { return }
        let up = nodes.filter(\.isUp)
        guard !up.isEmpty else {
            events.push(.clientStep(client: index), at: now + milliseconds(20))
            return
        }
        var client = clients[index]
        let leaders = up.filter { $0.replica?.status.role == .leader }
        let node = !leaders.isEmpty && client.random.chance(7, in: 10)
            ? leaders[client.random.next(below: leaders.count)] : up[client.random.next(below: up.count)]
        let key = options.keys[client.random.next(below: options.keys.count)]
        let roll = client.random.next(below: 100)
        if roll < 10 && options.staleReads {
            clients[index] = client
            return staleRead(index, at: node, key: Array(key.utf8))
        }
        let operation = history.count
        let waiter = waiter(for: node, what: roll < 40 ? "read" : "write") { simulation, result in
            simulation.events.push(.answered(client: index, operation: operation, result: result), at: simulation.now)
        }
        if roll < 40 {
            history.append(ClientOperation(key: key, kind: .read, value: nil, callTime: tick(), returnTime: 0,
                                                        outcome: .indeterminate))
            node.input.reads.append(waiter)
        } else {
            let isDelete = roll >= 85
            let value = "v\(operation)"
            node.sequence += 1
            let request = RequestID(node: node.id, sequence: node.sequence)
            let command = Command(request: request, operation: isDelete ? .delete(key: Array(key.utf8))
                                                                        : .put(key: Array(key.utf8), value: Array(value.utf8)))
            history.append(ClientOperation(key: key, kind: isDelete ? .delete : .write, value: isDelete ? nil : value,
                                                        callTime: tick(), returnTime: 0, outcome: .indeterminate))
            node.input.proposals.append(PendingProposal(request: request, data: command.encoded(), waiter: waiter))
        }
        client.operation = operation
        client.node = node.index
        client.generation = node.generation
        clients[index] = client
        scheduleRun(node)
        // The client's own timeout: a node that crashed never answers.
        events.push(.clientGivesUp(client: index, operation: operation),
                    at: now + milliseconds(Int64(options.requestTimeoutMilliseconds + 500)))
    }

    func giveUp(_ index: Int, operation: Int) {
        guard clients[index].operation == operation else { return }
        // A write's fate is unknown; a read simply returned nothing.
        finish(index, outcome: history[operation].kind == .read ? .failed : .indeterminate)
    }

    func answered(_ index: Int, operation: Int, result: Result<WaitOutcome, ReplicaError>) {
        guard clients[index].operation == operation else { return }
        let client = clients[index]
        switch (history[operation].kind, result) {
        case (.read, .success):
            // The server reads its state machine once the read barrier returns; so does the client here.
            let node = nodes[client.node]
            guard node.generation == client.generation, let store = node.replica?.store else {
                return finish(index, outcome: .failed)
            }
            let read: KVStore.PendingRead
            do {
                read = try store.beginRead(Array(history[operation].key.utf8))
            } catch {
                return finish(index, outcome: .failed)
            }
            // The cache fill comes a moment later: applies may fall in between, as between threads.
            events.push(.readFinished(client: index, operation: operation, generation: client.generation, read: read),
                        at: now + Int64(clients[index].random.next(below: 5_000_000)))
        case (.read, .failure):
            finish(index, outcome: .failed)
        case (_, .success):
            finish(index, outcome: .ok)
        case (_, .failure(let error)):
            // The replica's promise: a `notApplied` write is checked as one that never happened, so
            // a broken promise shows up as a read of a value never written.
            finish(index, outcome: error.outcome == .notApplied ? .failed : .indeterminate)
        }
    }

    /// `GET ?consistency=stale` as the server serves it: the applied index (the response's
    /// header), then the state machine, with the cache fill a moment later. It is not in the
    /// linearizable history; ``staleReadFinished`` checks it against the applied log instead.
    func staleRead(_ index: Int, at node: Node, key: [UInt8]) {
        guard let replica = node.replica else {
            return events.push(.clientStep(client: index), at: now + milliseconds(20))
        }
        let from = replica.appliedIndex
        let read: KVStore.PendingRead
        do {
            read = try replica.store.beginRead(key)
        } catch {
            violation = "\(node.id) could not read its state machine: \(error)"
            return
        }
        events.push(.staleReadFinished(client: index, node: node.index, generation: node.generation, key: key, from: from, read: read),
                    at: now + Int64(clients[index].random.next(below: 5_000_000)))
    }

    /// A stale read returns the value as of some index from the one its header names up to what
    /// the replica has applied when it returns: never a value older, newer, or never written.
    func staleReadFinished(_ index: Int, node: Int, generation: Int, key: [UInt8], from: LogIndex, read: KVStore.PendingRead) {
        events.push(.clientStep(client: index), at: now + milliseconds(Int64(clients[index].random.next(below: 20))))
        guard nodes[node].generation == generation, let replica = nodes[node].replica else { return }
        let value = replica.store.finishRead(read)
        report.staleReads += 1
        guard let allowed = valuesAllowed(key, from: from, through: replica.appliedIndex) else {
            report.staleReadsUnchecked += 1
            return
        }
        if !allowed.contains(value) {
            func show(_ value: [UInt8]?) -> String { value.map { String(decoding: $0, as: UTF8.self) } ?? "(none)" }
            violation = "a stale read of \(show(key)) on \(nodes[node].id) returned \(show(value)); as of applied index "
                + "\(from.rawValue) through \(replica.appliedIndex.rawValue) it could be \(allowed.map(show).sorted())"
        }
    }

    /// The values a read of `key` may return from a state machine that had applied at least
    /// `from` and at most `through`; nil when an entry in that range was never seen applied, or
    /// when the state machine was reset in between (a node adopted by another cluster).
    func valuesAllowed(_ key: [UInt8], from: LogIndex, through: LogIndex) -> Set<[UInt8]?>? {
        guard from <= through, Int(through.rawValue) <= appliedLog.count else { return nil }
        var allowed: Set<[UInt8]?> = []
        // The value as of `from`: the last write of `key` at or before it.
        var slot = Int(from.rawValue) - 1
        while slot >= 0 {
            guard let entry = appliedLog[slot] else { return nil }
            if let value = Self.written(key, by: entry) {
                allowed.insert(value)
                break
            }
            slot -= 1
        }
        if slot < 0 { allowed.insert(nil) }
        for slot in Int(from.rawValue)..<Int(through.rawValue) {
            guard let entry = appliedLog[slot] else { return nil }
            if let value = Self.written(key, by: entry) { allowed.insert(value) }
        }
        return allowed
    }

    /// What `entry` sets `key` to (`.some(nil)`: deletes it); nil when it leaves `key` alone.
    static func written(_ key: [UInt8], by entry: Entry) -> [UInt8]?? {
        guard entry.kind == .normal, !entry.data.isEmpty, let command = try? Command(decoding: entry.data) else { return nil }
        // The simulation's clients write unconditionally: what an entry does follows from it alone.
        precondition(command.write.condition == nil, "the simulation issues no conditional writes")
        switch command.write.change {
        case let .one(.put(written, value)) where written == key: return .some(value)
        case let .one(.delete(written)) where written == key: return .some(nil)
        case let .deletePrefix(prefix) where key.starts(with: prefix): return .some(nil)
        case .transaction: preconditionFailure("the simulation issues no transactions")
        default: return nil
        }
    }

    func readFinished(_ index: Int, operation: Int, generation: Int, read: KVStore.PendingRead) {
        guard clients[index].operation == operation else { return }
        let node = nodes[clients[index].node]
        guard node.generation == generation, let store = node.replica?.store else { return finish(index, outcome: .failed) }
        let value = store.finishRead(read)
        history[operation].value = value.map { String(decoding: $0, as: UTF8.self) }
        finish(index, outcome: .ok)
    }

    func finish(_ index: Int, outcome: ClientOperation.Outcome) {
        guard let operation = clients[index].operation else { return }
        history[operation].outcome = outcome
        history[operation].returnTime = tick()
        let isRead = history[operation].kind == .read
        switch (isRead, outcome) {
        case (true, .ok): report.readsAcknowledged += 1
        case (true, _): report.readsFailed += 1
        case (false, .ok):
            report.writesAcknowledged += 1
            if !faultsActive { writeAcknowledgedSinceFaultsStopped = true }
        case (false, .failed): report.writesFailed += 1
        case (false, .indeterminate): report.writesIndeterminate += 1
        }
        clients[index].operation = nil
        events.push(.clientStep(client: index), at: now + milliseconds(Int64(clients[index].random.next(below: 20))))
    }
}
