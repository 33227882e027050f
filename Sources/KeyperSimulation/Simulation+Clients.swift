import KeyperRaft

extension Simulation {
    func nextTime() -> UInt64 {
        clock += 1
        return clock
    }

    func runClients(issue: Bool) {
        for client in pending.indices {
            if let operation = pending[client], operation.deadlineTick <= tick {
                // The client gives up: the outcome of a write is unknown, a read is simply lost.
                if operation.readContext != nil {
                    abandonRead(client: client)
                } else {
                    if let position = operation.position {
                        nodes[operation.node].writeWaiters[position.index] = nil
                    }
                    finishWrite(client: client, outcome: .indeterminate)
                }
            }
            if issue && pending[client] == nil && random.chance(1, in: 3) { issueOperation(client) }
        }
    }

    func chooseNode() -> Int? {
        let live = nodes.indices.filter { nodes[$0].cell != nil && !nodes[$0].retired }
        // Clients talk to any node that says it leads, deposed or not: stale leaders get traffic.
        let leaders = live.filter { nodes[$0].cell!.node.role == .leader }
        if random.chance(7, in: 10), let leader = leaders.randomElement(using: &random) { return leader }
        return live.randomElement(using: &random)
    }

    func issueOperation(_ client: Int) {
        guard let node = chooseNode() else { return }
        nextOperationID += 1
        let key = options.keys[random.next(below: options.keys.count)]
        let roll = random.next(below: 100)
        let call = nextTime()
        let deadline = tick + 100
        if roll < 40 {
            var context: [UInt8] = []
            for shift in stride(from: 56, through: 0, by: -8) { context.append(UInt8(truncatingIfNeeded: nextOperationID >> UInt64(shift))) }
            do {
                try nodes[node].cell!.node.readIndex(context: context)
            } catch {
                return
            }
            history.append(KVOperation(key: key, kind: .read, value: nil, callTime: call, returnTime: 0, outcome: .indeterminate))
            pending[client] = PendingOperation(historyIndex: history.count - 1, node: node, deadlineTick: deadline, readContext: context)
            readWaiters[context] = client
        } else {
            let isDelete = roll >= 85
            let value = "v\(nextOperationID)"
            let command: KVCommand = isDelete ? .delete(key: key) : .put(key: key, value: value)
            let operation = KVOperation(key: key, kind: isDelete ? .delete : .write, value: isDelete ? nil : value,
                                        callTime: call, returnTime: 0, outcome: .indeterminate)
            do {
                let position = try nodes[node].cell!.node.propose(command.encoded())
                history.append(operation)
                pending[client] = PendingOperation(historyIndex: history.count - 1, node: node, deadlineTick: deadline,
                                                   readContext: nil, position: position)
                nodes[node].writeWaiters[position.index] = (client, position.term)
            } catch {
                // Refused: it definitely did not happen.
                var failed = operation
                failed.outcome = .failed
                failed.returnTime = nextTime()
                history.append(failed)
                report.writesFailed += 1
            }
            observe(node)
        }
    }

    func finishWrite(client: Int, outcome: KVOperation.Outcome) {
        guard let operation = pending[client], operation.readContext == nil else { return }
        history[operation.historyIndex].outcome = outcome
        history[operation.historyIndex].returnTime = nextTime()
        switch outcome {
        case .ok:
            report.writesAcknowledged += 1
            if let position = operation.position { acknowledgedWrites.append(position) }
        case .failed: report.writesFailed += 1
        case .indeterminate: break
        }
        pending[client] = nil
    }

    func abandonRead(client: Int) {
        guard let operation = pending[client], let context = operation.readContext else { return }
        history[operation.historyIndex].outcome = .failed
        readWaiters[context] = nil
        pending[client] = nil
    }

    /// Serves reads whose index the node has applied (thesis §6.4 step 4).
    func releaseReads(_ index: Int) {
        guard !nodes[index].readStates.isEmpty else { return }
        let applied = nodes[index].applied
        var waiting: [ReadState] = []
        for state in nodes[index].readStates {
            guard state.index <= applied else {
                waiting.append(state)
                continue
            }
            guard let client = readWaiters[state.context], let operation = pending[client],
                  operation.node == index else { continue }
            let key = history[operation.historyIndex].key
            history[operation.historyIndex].value = nodes[index].store[key]
            history[operation.historyIndex].outcome = .ok
            history[operation.historyIndex].returnTime = nextTime()
            readWaiters[state.context] = nil
            pending[client] = nil
            report.readsAcknowledged += 1
        }
        nodes[index].readStates = waiting
    }

    /// A write whose commit shows the cluster is live again.
    func proposeProbe() -> (node: Int, position: EntryPosition)? {
        guard let leader = leaderIndex() else { return nil }
        let command = KVCommand.put(key: "__probe", value: "p\(tick)")
        guard let position = try? nodes[leader].cell!.node.propose(command.encoded()) else { return nil }
        observe(leader)
        return (leader, position)
    }
}
