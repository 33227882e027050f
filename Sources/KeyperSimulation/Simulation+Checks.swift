import KeyperRaft

extension Simulation {
    /// Checks made after every change to a node.
    func observe(_ index: Int) {
        guard let cell = nodes[index].cell else { return }
        if trace { traceStatus(cell.node.status) }
        guard cell.node.role == .leader else { return }
        let term = cell.node.term
        let id = cell.node.id
        // Election safety (Raft §5.2): at most one leader per term.
        if let other = leaderOfTerm[term] {
            if other != id { fail("two leaders in \(term): \(other) and \(id)") }
        } else {
            leaderOfTerm[term] = id
            report.leadersElected += 1
            checkLeaderCompleteness(index, cell.node.status)
        }
        if Int(cell.node.commitIndex.rawValue) > committedTerms.count { recordCommits(index, cell.node.status) }
        // Nemesis: a leader whose commit runs ahead of its own disk sometimes dies before the write
        // lands; only followers' copies may then carry the commit (thesis §10.2.1).
        if faultsActive, options.crashes, crashOdds <= 100, nodes[index].persisting != nil,
           nodes[index].crashArmed == 0, cell.node.commitIndex > nodes[index].storage.lastIndex,
           random.chance(1, in: 3) {
            nodes[index].crashArmed = 1
        }
    }

    func traceStatus(_ status: Status) {
        let followers = status.followers.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }
        let line = "\(status.role) \(status.term) vote=\(status.vote?.rawValue ?? "-") leader=\(status.leader?.rawValue ?? "-") "
            + "last=\(status.lastIndex) commit=\(status.commit) \(status.configuration) \(followers)"
        if lastTrace[status.id] != line {
            lastTrace[status.id] = line
            print("t=\(tick) \(status.id): \(line)")
        }
    }

    /// Leader completeness (Raft §5.4): a leader holds every entry committed in earlier terms.
    func checkLeaderCompleteness(_ index: Int, _ status: Status) {
        let raft = nodes[index].cell!.node
        guard !committedTerms.isEmpty else { return }
        let low = max(Int(status.firstIndex.rawValue), 1)
        guard low <= committedTerms.count else { return }
        for position in low...committedTerms.count {
            let record = committedTerms[position - 1]
            guard record.commitTerm < status.term else { continue }
            let held = raft.logTerm(at: LogIndex(UInt64(position)))
            if held != record.entryTerm {
                fail("leader \(status.id) of \(status.term) lacks committed i\(position)@\(record.entryTerm), holds \(held.map(\.description) ?? "nothing")")
                return
            }
        }
    }

    func recordCommits(_ index: Int, _ status: Status) {
        let commit = Int(status.commit.rawValue)
        guard commit > committedTerms.count else { return }
        let raft = nodes[index].cell!.node
        for position in (committedTerms.count + 1)...commit {
            guard let term = raft.logTerm(at: LogIndex(UInt64(position))) else {
                // Inside the leader's snapshot: take the term from what was applied.
                guard let entry = appliedEntry(at: LogIndex(UInt64(position))) else {
                    fail("leader \(status.id) committed i\(position) it cannot show")
                    return
                }
                committedTerms.append((entry.term, status.term))
                continue
            }
            committedTerms.append((term, status.term))
        }
    }

    /// Log matching (Raft §5.3): one (index, term) names one entry, whose predecessor has one term.
    func checkLogMatching(_ index: Int, _ entries: [Entry]) {
        let storage = nodes[index].storage
        for entry in entries {
            let previousTerm: Term? = entry.index.rawValue == 1 ? .zero : try? storage.term(at: entry.index.previous())
            let position = EntryPosition(index: entry.index, term: entry.term)
            if let known = positions[position] {
                if known.kind != entry.kind || known.data != entry.data {
                    fail("log matching: \(position) holds different data on \(nodes[index].id)")
                    return
                }
                if let previousTerm, let knownPrevious = known.previousTerm, previousTerm != knownPrevious {
                    fail("log matching: \(position) follows \(previousTerm) on \(nodes[index].id), \(knownPrevious) elsewhere")
                    return
                }
            } else {
                positions[position] = (entry.kind, entry.data, previousTerm)
            }
        }
    }

    /// State machine safety (Raft §5.4.3): every node applies the same entry at an index.
    func checkStateMachineSafety(_ index: Int, _ entry: Entry) {
        let position = Int(entry.index.rawValue)
        if position <= appliedEntries.count {
            let known = appliedEntries[position - 1]
            if known != entry {
                fail("state machine safety: \(nodes[index].id) applies \(entry.index)@\(entry.term), another applied \(known.index)@\(known.term)")
            }
        } else if position == appliedEntries.count + 1 {
            appliedEntries.append(entry)
            if entry.kind == .configChange { report.configChangesApplied += 1 }
        } else {
            fail("\(nodes[index].id) applies \(entry.index) but only \(appliedEntries.count) entries were ever applied")
        }
    }

    func appliedEntry(at index: LogIndex) -> Entry? {
        let position = Int(index.rawValue)
        guard position >= 1, position <= appliedEntries.count else { return nil }
        return appliedEntries[position - 1]
    }

    func finalChecks() throws(SimulationViolation) {
        // No acknowledged write lost: each sits where its client was told.
        // No acknowledged write lost: each is still in the final leader's log (or its snapshot).
        if let leader = leaderIndex() {
            let raft = nodes[leader].cell!.node
            let firstIndex = raft.status.firstIndex
            for position in acknowledgedWrites where position.index >= firstIndex {
                if raft.logTerm(at: position.index) != position.term {
                    throw fail("acknowledged write \(position) missing from leader \(nodes[leader].id)")
                }
            }
        }
        if options.checkLinearizability {
            let result = LinearizabilityChecker.check(history)
            report.operationsChecked = result.operationsChecked
            if !result.isLinearizable {
                throw fail("history of key \(result.failingKey ?? "?") is not linearizable")
            }
        }
    }
}
