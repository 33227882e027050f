import KeyperBase
import KeyperHistory
import KeyperRaft
import KeyperReplica
import KeyperStorage

extension ClusterSimulation {
    // MARK: Faults

    func nemesis() {
        guard faultsActive else { return }
        events.push(.nemesis, at: now + milliseconds(Int64(50 + random.next(below: 400))))
        let roll = random.next(below: 100)
        if roll < 25 && options.crashes {
            let up = nodes.filter(\.isUp)
            guard let victim = up.randomElement(using: &random) else { return }
            crash(victim)
            events.push(.restart(node: victim.index), at: now + milliseconds(Int64(20 + random.next(below: 1_500))))
        } else if roll < 45 && options.partitions {
            // Cut one node off, or one direction of one link.
            let isolated = random.next(below: nodes.count)
            var cut: [Int] = []
            if random.chance(2, in: 3) {
                for other in nodes.indices where other != isolated {
                    cut += [linkKey(isolated, other), linkKey(other, isolated)]
                }
            } else {
                let other = (isolated + 1 + random.next(below: nodes.count - 1)) % nodes.count
                cut = [linkKey(isolated, other)]
            }
            for key in cut where blocked.insert(key).inserted { resetLink(key: key) }
            report.partitions += 1
            events.push(.heal(links: cut), at: now + milliseconds(Int64(100 + random.next(below: 2_000))))
        } else if roll < 55 && options.transfers, let leader {
            report.transfers += 1
            leader.input.admin.append(.transfer(target: nil, waiter: waiter(for: leader, what: "transfer") { _, _ in }))
            scheduleRun(leader)
        } else if roll < 58 && wipesDisks && everyNodeListsAllVoters {
            let victim = nodes[random.next(below: nodes.count)]
            wipe(victim)
            events.push(.restart(node: victim.index), at: now + milliseconds(Int64(20 + random.next(below: 1_000))))
        } else if roll < 64 && options.fullDisks, let victim = nodes.filter(\.isUp).randomElement(using: &random) {
            // The Raft log's disk fills up (writes fail with ENOSPC after what fits) for a while.
            let disk = victim.disk.fileSystem
            disk.capacityBytes = disk.usedBytes + random.next(below: 4_096)
            report.fullDisks += 1
            events.push(.diskSpaceReturns(node: victim.index), at: now + milliseconds(Int64(50 + random.next(below: 1_500))))
        } else if roll < 74 && removesMembers && everyNodeListsAllVoters {
            remove(nodes[random.next(below: nodes.count)], attemptsLeft: 5)
        }
    }

    func stopFaults() {
        faultsActive = false
        blocked = []
        for node in nodes { node.disk.fileSystem.capacityBytes = nil }
        for node in nodes where !node.isUp { start(node) }
    }

    // MARK: Membership

    /// Joins every node but the first, as an operator would with `POST /v1/join` against the
    /// leader, until each is a voter.
    func operatorStep() {
        events.push(.operatorStep, at: now + milliseconds(100))
        guard let leader, let configuration = leader.replica?.status.configuration else { return }
        for node in nodes where node.isUp && now >= node.joinPendingUntil
                && (!configuration.voters.contains(node.id) || configuration.incarnations[node.id] != node.incarnation) {
            node.joinPendingUntil = now + milliseconds(Int64(options.requestTimeoutMilliseconds + 500))
            let addresses = MemberAddresses(raft: node.address, http: "\(node.id):8080")
            let index = node.index
            let waiter = waiter(for: leader, what: "join of \(node.id)") { simulation, result in
                simulation.joinAnswered(index, result)
            }
            leader.input.admin.append(.join(node: node.id, addresses: addresses, waiter: waiter))
            scheduleRun(leader)
        }
    }

    /// `DELETE /v1/members/{id}` against the leader, retried when the leader is the one removed
    /// and hands over first, as the README tells an operator to. The operator joins the node
    /// back, with its data, a while after the removal is committed.
    func remove(_ node: Node, attemptsLeft: Int) {
        guard faultsActive, attemptsLeft > 0, let leader else { return }
        node.joinPendingUntil = now + milliseconds(Int64(options.requestTimeoutMilliseconds + 500))
        let index = node.index
        let waiter = waiter(for: leader, what: "removal of \(node.id)") { simulation, result in
            let node = simulation.nodes[index]
            switch result {
            case .success:
                simulation.report.removals += 1
                node.joinPendingUntil = simulation.now + simulation.milliseconds(Int64(simulation.random.next(below: 1_500)))
            case .failure(let error) where error.kind == .leaderTransfer:
                simulation.events.push(.removeMember(node: index, attemptsLeft: attemptsLeft - 1),
                                       at: simulation.now + simulation.milliseconds(200))
            case .failure:
                node.joinPendingUntil = 0
            }
        }
        leader.input.admin.append(.remove(node: node.id, waiter: waiter))
        scheduleRun(leader)
    }

    func joinAnswered(_ index: Int, _ result: Result<WaitOutcome, ReplicaError>) {
        nodes[index].joinPendingUntil = 0
        if case .success = result { report.joins += 1 }
    }

    var membersJoined: Bool {
        guard let configuration = leader?.replica?.status.configuration else { return false }
        return nodes.allSatisfy { configuration.voters.contains($0.id) && configuration.incarnations[$0.id] == $0.incarnation }
    }

    /// Whether losing any one node's disk leaves a quorum that can go on: every node is up and
    /// its own configuration (as appended, the one it acts on) lists every node as a voter under
    /// its current incarnation. A promotion appended only on the node wiped would otherwise
    /// leave a two-voter configuration missing a voter for good (what the two-voter warning is
    /// about; an operator would have to force a new cluster).
    var everyNodeListsAllVoters: Bool {
        nodes.allSatisfy { node in
            guard let configuration = node.replica?.status.configuration else { return false }
            return nodes.allSatisfy { configuration.voters.contains($0.id) && configuration.incarnations[$0.id] == $0.incarnation }
        }
    }

    /// The node's disk is replaced by an empty one (its data is lost, as when a machine's disk
    /// dies): it comes back as a new incarnation, and the operator joins it again.
    func wipe(_ node: Node) {
        crash(node)
        FileIO.removeTree(node.path)
        node.disk = SimulatedDisk()
        node.incarnation = 0
        report.wipes += 1
    }
}
