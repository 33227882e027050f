import KeyperBase
import KeyperHistory
import KeyperRaft
import KeyperReplica
import KeyperStorage

extension ClusterSimulation {
    // MARK: Safety, after every event

    /// Election safety (Raft §5.2): at most one leader per term; leader completeness (§5.4.1):
    /// a new leader holds every entry committed in an earlier term; state machine safety
    /// (§5.4.3): every replica applies the same entry at each index. Checked after every step.
    func observe(_ index: Int) {
        guard let replica = nodes[index].replica else { return }
        checkApplied(nodes[index], replica)
        let status = replica.status
        guard status.role == .leader else { return }
        if let leader = leaderOfTerm[status.term] {
            if leader != status.id { violation = "two leaders in term \(status.term.rawValue): \(leader) and \(status.id)" }
        } else {
            leaderOfTerm[status.term] = status.id
            report.leadersElected += 1
            checkLeaderCompleteness(replica, status)
        }
        recordCommits(replica, status)
        // A leader whose commit just moved dies now and then: its own write may not have landed
        // yet (it counts followers' acknowledgements first; thesis §10.2.1).
        if status.commit > nodes[index].commitSeen {
            nodes[index].commitSeen = status.commit
            if faultsActive && options.crashes && random.chance(1, in: 150) {
                events.push(.crash(node: index, generation: nodes[index].generation), at: now)
            }
        }
    }

    /// A follower's read round is answered by the leader's ReadIndex response, which may reach
    /// the node after it restarted (the transport keeps frames for a peer that is down). So a
    /// process must never use a round number an earlier process of the node used: the late
    /// answer would release the new round's reads at an old index.
    func noteReadRound(_ round: UInt64, of node: Node) {
        if let last = node.readRounds.last, last.generation == node.generation {
            node.readRounds[node.readRounds.count - 1] = (last.generation, min(last.first, round), max(last.last, round))
        } else {
            node.readRounds.append((node.generation, round, round))
        }
        for earlier in node.readRounds.dropLast() where earlier.first...earlier.last ~= round {
            violation = "\(node.id) asked read round \(round), which an earlier process of it used "
                + "(\(earlier.first)...\(earlier.last)): a late answer to that one would release this one"
            return
        }
    }

    func checkLeaderCompleteness(_ replica: Replica, _ status: Status) {
        let low = max(Int(replica.log.firstIndex.rawValue), 1)
        guard low <= committedTerms.count else { return }
        for position in low...committedTerms.count {
            let record = committedTerms[position - 1]
            guard record.commitTerm < status.term, record.entryTerm != .zero else { continue }
            let held = try? replica.log.term(at: LogIndex(UInt64(position)))
            if held != record.entryTerm {
                violation = "\(status.id), leader of term \(status.term.rawValue), lacks index \(position) (term "
                    + "\(record.entryTerm.rawValue)) committed in term \(record.commitTerm.rawValue); it holds "
                    + (held.map { "term \($0.rawValue)" } ?? "nothing there")
                return
            }
        }
    }

    /// Notes the term in which each entry was first seen committed, by the leader that did it.
    func recordCommits(_ replica: Replica, _ status: Status) {
        let commit = Int(status.commit.rawValue)
        guard commit > committedTerms.count else { return }
        for position in (committedTerms.count + 1)...commit {
            // Inside the leader's snapshot: the term from what was applied, if seen (else not checked).
            let applied = position <= appliedLog.count ? appliedLog[position - 1] : nil
            let term = (try? replica.log.term(at: LogIndex(UInt64(position)))) ?? applied?.term
            committedTerms.append((term ?? .zero, status.term))
        }
    }

    /// Compares what `replica` applied since last looked, read back from its WAL, with what
    /// every other replica applied at the same indexes.
    func checkApplied(_ node: Node, _ replica: Replica) {
        let applied = replica.appliedIndex
        let from = max(node.checkedThrough.next(), replica.log.firstIndex)
        guard from <= applied else { return }
        let entries: [Entry]
        do {
            entries = try replica.log.entries(from: from, to: applied.next(), bytesMax: .max)
        } catch {
            return  // compacted meanwhile: another replica's copy covers it
        }
        for entry in entries {
            let slot = Int(entry.index.rawValue) - 1
            if slot >= appliedLog.count { appliedLog += Array(repeating: nil, count: slot - appliedLog.count + 1) }
            guard let known = appliedLog[slot] else {
                appliedLog[slot] = entry
                continue
            }
            if known.term != entry.term || known.data != entry.data {
                violation = "\(node.id) applied a different entry at index \(entry.index.rawValue) (term \(entry.term.rawValue)) "
                    + "than another replica did (term \(known.term.rawValue))"
                return
            }
        }
        node.checkedThrough = applied
    }

    // MARK: Waiters

    /// A waiter for a request to `node`, accounted for: `answer` runs as a separate event (as
    /// a server's continuation resumes on another thread).
    func waiter(for node: Node, what: String, answer: @escaping @Sendable (ClusterSimulation, Result<WaitOutcome, ReplicaError>) -> Void) -> Waiter {
        let id = waiterNext
        waiterNext += 1
        let deadline = self.deadline
        openWaiters[id] = OpenWaiter(node: node.index, generation: node.generation, deadline: deadline.nanoseconds, what: what)
        let link = self.link
        return Waiter(deadline: deadline) { result in
            guard let simulation = link.simulation else { return }
            simulation.waiterAnswered(id, result)
            answer(simulation, result)
        }
    }

    func waiterAnswered(_ id: Int, _ result: Result<WaitOutcome, ReplicaError>) {
        guard openWaiters.removeValue(forKey: id) != nil else {
            violation = "a waiter was answered twice (a server would resume its continuation twice): \(result)"
            return
        }
    }

    /// Every waiter of a live replica is answered by its deadline, give or take two ticks.
    func checkWaiters() {
        events.push(.checkWaiters, at: now + milliseconds(50))
        let grace = milliseconds(Int64(2 * options.tickMilliseconds))
        for id in openWaiters.keys.sorted() {
            let open = openWaiters[id]!
            guard nodes[open.node].generation == open.generation, open.deadline + grace < now else { continue }
            violation = "\(nodes[open.node].id) left a waiter (\(open.what)) unanswered past its deadline"
            return
        }
    }

    /// Requests of every kind sent to every replica, which then closes at once (a shutdown under
    /// load): each one must be answered.
    func closeUnderLoad() throws(ClusterSimulationViolation) {
        for node in nodes {
            guard let replica = node.replica else { continue }
            let key = Array(options.keys[0].utf8)
            node.sequence += 1
            let request = RequestID(node: node.id, sequence: node.sequence)
            let command = Command(request: request, operation: .put(key: key, value: Array("closing".utf8)))
            var input = ReplicaInput()
            input.proposals.append(PendingProposal(request: request, data: command.encoded(),
                                                   waiter: waiter(for: node, what: "write at close") { _, _ in }))
            input.reads.append(waiter(for: node, what: "read at close") { _, _ in })
            replica.run(input)
            var more = ReplicaInput()
            more.reads.append(waiter(for: node, what: "read at close") { _, _ in })
            replica.run(more)
            replica.close()
            for id in openWaiters.keys.sorted() where openWaiters[id]!.node == node.index {
                throw failure("\(node.id) closed leaving a waiter (\(openWaiters[id]!.what)) unanswered")
            }
        }
    }

    // MARK: Final checks

    var clientsIdle: Bool { clients.allSatisfy { $0.operation == nil } }

    /// Every node is up, has applied the leader's commit index, and agrees with the others.
    var converged: Bool {
        guard let commit = leader?.replica?.status.commit else { return false }
        return nodes.allSatisfy { node in
            guard let replica = node.replica else { return false }
            return replica.appliedIndex == commit && replica.status.commit == commit
        }
    }

    /// State machine safety: replicas that applied the same log hold the same data.
    func compareStateMachines() throws(ClusterSimulationViolation) {
        var first: (NodeID, [[UInt8]: [UInt8]])?
        for node in nodes {
            guard let store = node.replica?.store else { continue }
            var contents: [[UInt8]: [UInt8]] = [:]
            do {
                for key in try store.list(prefix: [], after: nil, limit: 100_000).keys { contents[key] = try store.get(key) }
            } catch {
                throw failure("cannot read \(node.id)'s state machine: \(error)")
            }
            if let (id, expected) = first {
                guard expected == contents else { throw failure("\(node.id)'s state machine differs from \(id)'s at the same applied index") }
            } else {
                first = (node.id, contents)
            }
        }
    }

    /// One last read of every key on the leader's state machine, after everything applied: a
    /// write acknowledged and then lost shows up here if no client read it.
    func finalReads() throws(ClusterSimulationViolation) {
        guard let store = leader?.replica?.store else { throw failure("no leader at the end") }
        for key in options.keys {
            let call = tick()
            let value: String?
            do {
                value = try store.get(Array(key.utf8)).map { String(decoding: $0, as: UTF8.self) }
            } catch {
                throw failure("cannot read the leader's state machine: \(error)")
            }
            history.append(ClientOperation(key: key, kind: .read, value: value, callTime: call, returnTime: tick(),
                                                        outcome: .ok))
        }
    }

    public func historyDescription() -> String {
        history.map { operation in
            "\(operation.callTime)-\(operation.returnTime) \(operation.kind) \(operation.key)"
                + (operation.value.map { "=\($0)" } ?? "") + " \(operation.outcome)"
        }.joined(separator: "\n")
    }
}
