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
        if roll < 40 {
            let waiter = waiter(for: node, what: "read") { simulation, result in
                simulation.events.push(.answered(client: index, operation: operation, result: result), at: simulation.now)
            }
            history.append(ClientOperation(key: key, kind: .read, value: nil, callTime: tick(), returnTime: 0,
                                                        outcome: .indeterminate))
            node.input.reads.append(waiter)
            clients[index] = client
            return sent(operation, for: index, to: node)
        }
        let value = "v\(operation)"
        let write: KVWrite
        if options.compareAndSet && roll >= 70 && roll < 85 {
            // Compare-and-set on the mod revision this client last read of the key (0: it expects
            // the key absent), with an idempotency key it keeps across retries.
            let last = client.lastRead[key] ?? (value: nil, mod: 0)
            let token = IdempotencyToken(key: Array("cas-\(operation)".utf8), time: UInt64(now / 1_000_000))
            write = KVWrite(.put(key: Array(key.utf8), value: Array(value.utf8)), condition: .modRevision(last.mod), idempotency: token)
            history.append(ClientOperation(key: key, kind: .cas, value: value, callTime: tick(), returnTime: 0, outcome: .indeterminate,
                                           expected: last.value))
            client.compareAndSet = PendingCompareAndSet(write: write)
        } else {
            let isDelete = roll >= 85
            write = KVWrite(isDelete ? .delete(key: Array(key.utf8)) : .put(key: Array(key.utf8), value: Array(value.utf8)))
            history.append(ClientOperation(key: key, kind: isDelete ? .delete : .write, value: isDelete ? nil : value,
                                                        callTime: tick(), returnTime: 0, outcome: .indeterminate))
            client.compareAndSet = nil
        }
        clients[index] = client
        propose(write, for: index, operation: operation, at: node)
    }

    /// Sends a client's write to `node`, and the client's timeout for it.
    func propose(_ write: KVWrite, for index: Int, operation: Int, at node: Node) {
        let waiter = waiter(for: node, what: "write") { simulation, result in
            simulation.events.push(.answered(client: index, operation: operation, result: result), at: simulation.now)
        }
        node.sequence += 1
        let request = RequestID(node: node.id, sequence: node.sequence)
        node.input.proposals.append(PendingProposal(request: request, data: Command(request: request, write: write).encoded(), waiter: waiter))
        sent(operation, for: index, to: node)
    }

    /// Notes where a client's operation went, runs the node, and sets the client's own
    /// timeout (a node that crashed never answers).
    private func sent(_ operation: Int, for index: Int, to node: Node) {
        clients[index].operation = operation
        clients[index].node = node.index
        clients[index].generation = node.generation
        scheduleRun(node)
        events.push(.clientGivesUp(client: index, operation: operation),
                    at: now + milliseconds(Int64(options.requestTimeoutMilliseconds + 500)))
    }

    /// A compare-and-set left unanswered is sent again, with its idempotency key (restamped
    /// by the node that takes it, as the HTTP layer does), to a node that is up; after a few
    /// tries it stays unknown.
    func retryCompareAndSet(_ index: Int, operation: Int) -> Bool {
        guard var pending = clients[index].compareAndSet, pending.attempts < 4 else { return false }
        let up = nodes.filter(\.isUp)
        guard !up.isEmpty else { return false }
        pending.attempts += 1
        pending.unknown = true
        pending.write.idempotency?.time = UInt64(now / 1_000_000)
        clients[index].compareAndSet = pending
        report.compareAndSetRetries += 1
        let node = up[clients[index].random.next(below: up.count)]
        propose(pending.write, for: index, operation: operation, at: node)
        return true
    }

    func giveUp(_ index: Int, operation: Int) {
        guard clients[index].operation == operation else { return }
        if history[operation].kind == .cas, retryCompareAndSet(index, operation: operation) { return }
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
        case (.cas, .success(.written(let result))):
            var answer = result
            if case .replayed(let first) = result {
                report.compareAndSetReplays += 1
                answer = first
            }
            switch answer {
            case .applied:
                history[operation].succeeded = true
                report.compareAndSetsSet += 1
            case .conditionFailed:
                report.compareAndSetsRefused += 1
            default:
                violation = "a compare-and-set of \(history[operation].key) retried with its idempotency key was answered \(result)"
                return
            }
            finish(index, outcome: .ok)
        case (.cas, .failure(let error)):
            // Refused before it was proposed means nothing only for a first attempt.
            if error.outcome == .notApplied && clients[index].compareAndSet?.unknown == false { return finish(index, outcome: .failed) }
            if retryCompareAndSet(index, operation: operation) { return }
            finish(index, outcome: .indeterminate)
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
        // The value as of `from`: the last write of `key` at or before it (and, past a
        // conditional one that may not have applied, what came before it too).
        var slot = Int(from.rawValue) - 1
        walk: while slot >= 0 {
            guard let entry = appliedLog[slot] else { return nil }
            switch Self.effect(on: key, of: entry) {
            case .none: break
            case .sets(let value):
                allowed.insert(value)
                break walk
            case .maySet(let value): allowed.insert(value)
            }
            slot -= 1
        }
        if slot < 0 { allowed.insert(nil) }
        for slot in Int(from.rawValue)..<Int(through.rawValue) {
            guard let entry = appliedLog[slot] else { return nil }
            switch Self.effect(on: key, of: entry) {
            case .none: break
            case .sets(let value), .maySet(let value): allowed.insert(value)
            }
        }
        return allowed
    }

    /// What `entry` does to `key`.
    enum Effect {
        case none
        /// Sets it to this value (nil: deletes it).
        case sets([UInt8]?)
        /// Sets it to this value if its condition held (a compare-and-set, or a retry of one
        /// the store may answer from memory): what it did depends on the state before it.
        case maySet([UInt8]?)
    }

    static func effect(on key: [UInt8], of entry: Entry) -> Effect {
        guard entry.kind == .normal, !entry.data.isEmpty, let command = try? Command(decoding: entry.data) else { return .none }
        let conditional = command.write.condition != nil || command.write.idempotency != nil
        let effect: [UInt8]??
        switch command.write.change {
        case let .one(.put(written, value)) where written == key: effect = .some(value)
        case let .one(.delete(written)) where written == key: effect = .some(nil)
        case let .deletePrefix(prefix) where key.starts(with: prefix): effect = .some(nil)
        case .transaction: preconditionFailure("the simulation issues no transactions")
        default: effect = nil
        }
        guard let effect else { return .none }
        return conditional ? .maySet(effect) : .sets(effect)
    }

    func readFinished(_ index: Int, operation: Int, generation: Int, read: KVStore.PendingRead) {
        guard clients[index].operation == operation else { return }
        let node = nodes[clients[index].node]
        guard node.generation == generation, let store = node.replica?.store else { return finish(index, outcome: .failed) }
        let value = store.finishRead(read)
        history[operation].value = value.map { String(decoding: $0, as: UTF8.self) }
        clients[index].lastRead[history[operation].key] = (history[operation].value, read.found.value?.revisions.mod ?? 0)
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
