import KeyperRaft
import KeyperStorage
import KeyperWire
import Logging

extension Replica {
    // MARK: Peer records

    func handle(_ record: PeerRecord, from peer: FrameOrigin) {
        if peer.incarnation != 0 { announcedIncarnations[NodeID(peer.nodeID)] = peer.incarnation }
        if !peer.raftAddress.isEmpty, peer.clusterID == identity.clusterID, !identity.clusterID.isEmpty {
            announcedAddresses[NodeID(peer.nodeID)] = peer.raftAddress
        }
        switch record {
        case .raft(let message):
            // Raft traffic only within one cluster: a node that was part of another (or was
            // wiped and bootstrapped anew) must not mix its log with ours.
            guard peer.clusterID == identity.clusterID, message.from.rawValue == peer.nodeID, message.to == id,
                  !identity.clusterID.isEmpty else {
                logger.debug("dropping a message from outside this cluster or misaddressed", metadata: [
                    "peer": "\(peer.nodeID)", "peer_cluster": "\(peer.clusterID)", "cluster": "\(identity.clusterID)",
                ])
                return
            }
            guard incarnationsMatch(peer, counted: message.kind.isResponse) else { return }
            if case .snapshot(let metadata) = message.kind, !admitSnapshot(message, metadata) { return }
            do {
                try raw.step(message)
            } catch {
                logger.debug("message refused by the core", metadata: ["from": "\(message.from)", "error": "\(error)"])
            }
        case .forward(let request, let data):
            guard peer.clusterID == identity.clusterID, request.node.rawValue == peer.nodeID, incarnationsMatch(peer, counted: true) else { return }
            forwarded(request: request, data: data)
        case .forwardRefused(let request, let failure):
            guard request.node == id, let waiter = clients.writes.removeValue(forKey: request.sequence) else { return }
            waiter.fail(failure)
        case .adoptRequest(let request):
            adopt(request, from: peer)
        case .adoptResponse(let response):
            adopted(response, from: peer)
        case .snapshotChunk(let chunk):
            guard peer.clusterID == identity.clusterID, !identity.clusterID.isEmpty, incarnationsMatch(peer, counted: false) else { return }
            receive(chunk)
        }
    }

    /// Whether a peer's traffic is meant for this node as it is. The peer must address this
    /// incarnation: a leader that still lists the incarnation this node had before it lost its
    /// disk would otherwise treat it as that member (its progress, its commit index: an empty
    /// log cannot hold them). And what gets `counted` (answers: acknowledgements and votes;
    /// forwarded writes) must come from the incarnation the configuration lists for the peer,
    /// if any: a member that lost its disk is a new member until it is added again. A leader's
    /// messages are taken from any incarnation: a follower whose configuration still lists a
    /// replaced member must catch up from it when it leads (terms and log matching govern
    /// those). (Senders send requests only to the incarnation they list, and answers to the
    /// incarnation that asked: see ``Replica/addressed(_:to:)``.)
    func incarnationsMatch(_ peer: FrameOrigin, counted: Bool) -> Bool {
        let recorded = raw.incarnation(of: NodeID(peer.nodeID))
        let addressed = peer.peerIncarnation == identity.incarnation
        guard addressed, !counted || recorded.map({ $0 == peer.incarnation }) ?? true else {
            logger.debug("dropping traffic between other incarnations", metadata: [
                "peer": "\(peer.nodeID)", "peer_incarnation": "\(NodeIdentity.describe(peer.incarnation))",
                "listed_for_peer": "\(recorded.map(NodeIdentity.describe) ?? "none")",
                "addressed_to": "\(NodeIdentity.describe(peer.peerIncarnation))",
                "incarnation": "\(NodeIdentity.describe(identity.incarnation))",
            ])
            return false
        }
        return true
    }

    /// A follower's client write, proposed here as if it were ours; the follower answers
    /// its client once it applies the entry, or when we refuse.
    private func forwarded(request: RequestID, data: [UInt8]) {
        // Only well-formed commands of members, carrying the id they were forwarded under: a
        // committed entry that does not decode would stop every replica at apply.
        guard raw.status.configuration.members.contains(request.node),
              let command = try? Command(decoding: data), command.request == request else {
            logger.warning("refusing a malformed or foreign forwarded write", metadata: ["from": "\(request.node)"])
            return send(.forwardRefused(request: request, failure: ReplicaError(
                .invalidForward, "the leader refused a malformed forwarded write")), to: request.node)
        }
        do {
            guard raw.role == .leader else { throw RaftError.notLeader(leader: raw.leader) }
            guard !diskFull else {
                return send(.forwardRefused(request: request, failure: ReplicaError(
                    .diskFull, "the leader's disk is full; the write was not applied")), to: request.node)
            }
            try raw.propose(data)
            metrics.proposals.increment()
        } catch {
            send(.forwardRefused(request: request, failure: ReplicaError(error as? RaftError ?? .notLeader(leader: nil))), to: request.node)
        }
    }

    // MARK: Admin requests

    func handle(_ request: AdminRequest) {
        switch request {
        case let .join(node, addresses, waiter): join(node, addresses, waiter)
        case let .remove(node, waiter): remove(node, waiter)
        case let .transfer(target, waiter): transfer(to: target, waiter)
        }
    }

    private func requireLeader(_ waiter: Waiter) -> Bool {
        guard raw.role == .leader else {
            let hint = raw.leader.flatMap { addressBook[$0]?.http }.map { " (the leader is at http://\($0))" } ?? ""
            waiter.fail(raw.leader == nil ? ReplicaError(.noLeader, "no leader is known") :
                ReplicaError(.notLeader, "this node is not the leader\(hint)"))
            return false
        }
        return true
    }

    private func join(_ node: NodeID, _ addresses: MemberAddresses, _ waiter: Waiter) {
        guard requireLeader(waiter) else { return }
        let configuration = raw.status.configuration
        if configuration.members.contains(node) {
            guard let known = addressBook[node], known.raft == addresses.raft, addresses.http.isEmpty || known.http == addresses.http else {
                return waiter.fail(ReplicaError(.memberExists,
                                                "\(node) is already a member at \(addressBook[node]?.raft ?? "an unknown address"); remove it first to change its addresses"))
            }
            // This leader itself is a member by definition; asking itself over the peer
            // transport would never be answered.
            if node == id { return waiter.succeed() }
            // The same node joining again: still ask it, so that success means it really is
            // part of this cluster (it may have lost its data and bootstrapped alone).
        }
        if let (other, _) = addressBook.first(where: {
            $0.key != node && $0.value.raft == addresses.raft && configuration.members.contains($0.key)
        }) {
            return waiter.fail(ReplicaError(.addressInUse, "\(addresses.raft) is already the Raft address of \(other)"))
        }
        // Ask the node first: it may hold data of its own that must not be thrown away.
        let token = adoptionTokenNext
        adoptionTokenNext += 1
        clients.adoptions[token] = Adoption(node: node, addresses: addresses, waiter: waiter)
        let request = AdoptRequest(clusterID: identity.clusterID, leader: id, leaderRaftAddress: settings.advertisedRaftAddress,
                                   token: token)
        outbox.add(.adoptRequest(request), to: node, at: addresses.raft)
    }

    private func adopted(_ response: AdoptResponse, from peer: FrameOrigin) {
        guard let adoption = clients.adoptions.removeValue(forKey: response.token), adoption.node.rawValue == peer.nodeID else { return }
        guard response.accepted else {
            forgetUnlessMember(adoption.node)
            return adoption.waiter.fail(ReplicaError(.joinRefused, "\(adoption.node) refused to join: \(response.reason)"))
        }
        guard requireLeader(adoption.waiter) else { return forgetUnlessMember(adoption.node) }
        guard peer.incarnation != 0 else {
            return adoption.waiter.fail(ReplicaError(.joinRefused, "\(adoption.node) did not say its incarnation"))
        }
        guard clients.joins[adoption.node] == nil else {
            return adoption.waiter.fail(ReplicaError(.joinInProgress,
                                                     "a join of \(adoption.node) is already in progress; retry"))
        }
        var addresses = adoption.addresses
        if addresses.http.isEmpty { addresses.http = response.httpAddress }
        let node = adoption.node
        var join = JoinInProgress(token: response.token, addresses: addresses, incarnation: peer.incarnation, stage: .addingLearner,
                                  waiter: adoption.waiter)
        let configuration = raw.status.configuration
        if configuration.members.contains(node) {
            if configuration.incarnations[node] == peer.incarnation {
                // The member itself, joining again.
                if configuration.voters.contains(node) { return adoption.waiter.succeed() }
                if !addresses.promote {
                    // Asked as a learner that stays one; this one is being promoted.
                    guard addressBook[node]?.promote == false else {
                        return adoption.waiter.fail(ReplicaError(.memberIsPromoting,
                            "\(node) is a learner being promoted to voter; remove it and join it with \"learner\": true to keep it a learner"))
                    }
                    return adoption.waiter.succeed()
                }
                guard addressBook[node]?.promote != false else {
                    return adoption.waiter.fail(ReplicaError(.memberIsLearner,
                        "\(node) joined as a learner on request; remove it and join it again to make it a voter"))
                }
                join.stage = .promoting
                clients.joins[node] = join
                return
            }
            // The same name with another data directory: a new member. The old incarnation's
            // log is gone; it must neither count as a replica nor vote. Remove it, then add the
            // new one as a learner (one change at a time).
            logger.notice("a member came back with a new data directory; replacing it", metadata: [
                "node": "\(node)", "old_incarnation": "\(configuration.incarnations[node].map(NodeIdentity.describe) ?? "none")",
                "new_incarnation": "\(NodeIdentity.describe(peer.incarnation))",
            ])
            join.stage = .removingOldIncarnation
            clients.joins[node] = join
            return proposeMemberChange(ConfChange(kind: .removeNode, node: node), owner: .join(node, token: join.token))
        }
        clients.joins[node] = join
        addLearner(node, join)
    }

    /// New members start as learners and are promoted once caught up, so a slow newcomer
    /// never counts towards (and stalls) the quorum (thesis §4.2.1).
    private func addLearner(_ node: NodeID, _ join: JoinInProgress) {
        addressBook[node] = join.addresses
        logger.notice("adding member as a learner", metadata: [
            "node": "\(node)", "raft": "\(join.addresses.raft)", "incarnation": "\(NodeIdentity.describe(join.incarnation))",
            "promote": "\(join.addresses.promote)",
        ])
        proposeMemberChange(ConfChange(kind: .addLearner, node: node, incarnation: join.incarnation, context: join.addresses.encoded()),
                            owner: .join(node, token: join.token))
    }

    /// A membership change this leader proposed committed.
    func succeed(_ owner: ChangeOwner) {
        switch owner {
        case .client(let waiter):
            waiter.succeed()
        case .join(let node, let token):
            // A step of an earlier join of the same node (one that timed out) moves nothing.
            guard var join = clients.joins[node], join.token == token else { return }
            switch join.stage {
            case .removingOldIncarnation:
                join.stage = .addingLearner
                clients.joins[node] = join
                addLearner(node, join)
            case .addingLearner where !join.addresses.promote:
                clients.joins.removeValue(forKey: node)
                join.waiter.succeed()
            case .addingLearner:
                join.stage = .promoting
                clients.joins[node] = join
            case .promoting:
                break
            }
        }
    }

    func fail(_ owner: ChangeOwner, _ error: ReplicaError) {
        switch owner {
        case .client(let waiter):
            waiter.fail(error)
        case .join(let node, let token):
            guard clients.joins[node]?.token == token else { return }
            clients.joins.removeValue(forKey: node)?.waiter.fail(error)
        }
    }

    /// A promotion of `node` committed: its join, if one waits, is done.
    func joinPromoted(_ node: NodeID) {
        guard let join = clients.joins[node], join.stage == .promoting else { return }
        clients.joins.removeValue(forKey: node)
        join.waiter.succeed()
    }

    private func remove(_ node: NodeID, _ waiter: Waiter) {
        guard requireLeader(waiter) else { return }
        guard raw.status.configuration.members.contains(node) else {
            return waiter.fail(ReplicaError(.memberNotFound, "\(node) is not a member"))
        }
        if node == id && raw.status.configuration.voters.count > 1 {
            // Hand leadership over first (thesis §3.10); the client retries against the new leader.
            if let target = raw.status.configuration.voters.filter({ $0 != id }).sorted().max(by: {
                (raw.status.followers[$0]?.match ?? .zero) < (raw.status.followers[$1]?.match ?? .zero)
            }) {
                try? raw.transferLeadership(to: target)
            }
            return waiter.fail(ReplicaError(.leaderTransfer,
                                            "this node is the leader; leadership is being transferred first, retry the removal on the new leader"))
        }
        proposeMemberChange(ConfChange(kind: .removeNode, node: node), owner: .client(waiter))
    }

    private func transfer(to target: NodeID?, _ waiter: Waiter) {
        guard requireLeader(waiter) else { return }
        let status = raw.status
        guard let target = target ?? status.configuration.voters.filter({ $0 != id }).sorted().max(by: {
            (status.followers[$0]?.match ?? .zero) < (status.followers[$1]?.match ?? .zero)
        }) else {
            return waiter.fail(ReplicaError(.noTransferTarget, "there is no other voter to transfer leadership to"))
        }
        do {
            try raw.transferLeadership(to: target)
            // The HTTP side polls the published state for the outcome.
            waiter.succeed()
        } catch {
            waiter.fail(ReplicaError(error))
        }
    }

    // MARK: Being adopted

    /// Another cluster's leader asks this node to join it. Accept when this node already
    /// belongs to that cluster, or when its whole history is its own bootstrap (no client
    /// data): then it gives that history up. Refuse otherwise, saying why.
    private func adopt(_ request: AdoptRequest, from peer: FrameOrigin) {
        var response = AdoptResponse(token: request.token, accepted: true, reason: "", httpAddress: settings.advertisedHTTPAddress)
        if identity.clusterID != request.clusterID {
            if let reason = reasonToKeepHistory() {
                response.accepted = false
                response.reason = reason
            } else {
                do {
                    try resetForAdoption(clusterID: request.clusterID)
                } catch {
                    response.accepted = false
                    response.reason = "resetting its state failed: \(error)"
                }
            }
        }
        if response.accepted {
            addressBook[request.leader] = MemberAddresses(raft: request.leaderRaftAddress, http: addressBook[request.leader]?.http ?? "")
        }
        // Answer at the address given, without trusting it into the address book on refusal.
        outbox.add(.adoptResponse(response), to: request.leader, at: request.leaderRaftAddress)
        logger.notice(response.accepted ? "adopted by a cluster" : "refused to join a cluster", metadata: [
            "leader": "\(request.leader)", "cluster": "\(request.clusterID)", "reason": "\(response.reason)",
        ])
    }

    /// Nil when this node's history is only its own bootstrap: no client write was ever
    /// proposed here and no other node was ever added.
    private func reasonToKeepHistory() -> String? {
        let snapshot = log.snapshotMetadata
        guard snapshot.index == .zero else { return "it holds a snapshot at index \(snapshot.index.rawValue)" }
        let last = log.lastIndex
        if last.rawValue > 10_000 { return "its log holds \(last.rawValue) entries" }
        guard let entries = try? log.entries(from: log.firstIndex, to: last.next(), bytesMax: .max) else {
            return "its log cannot be read"
        }
        for entry in entries {
            switch entry.kind {
            case .normal where entry.data.isEmpty: continue
            case .normal: return "it holds client data (log index \(entry.index.rawValue)); wipe its data directory to join"
            case .configChange:
                guard let change = try? ConfChange(decoding: entry.data), change.node == id else {
                    return "it has had other members; remove it from its cluster and wipe its data directory to join"
                }
            }
        }
        if let keys = try? store.count(), keys > 0 { return "it holds \(keys) keys" }
        return nil
    }

    /// Throws away the bootstrap history and starts as an empty node of `clusterID`.
    ///
    /// Order for crashes: the state machine is emptied durably first (a crash then replays the
    /// bootstrap log into it: the node is still its pristine self); then the identity records
    /// no cluster (a node of no cluster keeps no log: a crash from here on restarts it empty,
    /// and it bootstraps anew or waits for its join); then the log is removed and re-created;
    /// then the identity records the new cluster. Once the log is closed there is no way back:
    /// a failure stops the process and the restart finishes from what is on disk.
    private func resetForAdoption(clusterID: String) throws {
        try store.reset()
        identity.clusterID = ""
        identity.adopted = false
        try directory.saveIdentity(identity)
        failAllWaiters(ReplicaError(.joiningCluster, "this node is joining another cluster; retry"))
        log.close()
        do {
            let fileSystem = walFileSystem()
            try Self.removeLog(at: directory.walPath, fileSystem: fileSystem)
            log = RaftLogStorage(wal: try WriteAheadLog(directory: directory.walPath, fileSystem: fileSystem))
            identity.clusterID = clusterID
            identity.adopted = true
            try directory.saveIdentity(identity)
        } catch {
            fatalError("resetting for adoption failed after the log was closed: \(error); restart the node")
        }
        peers.setIdentity(clusterID: clusterID, incarnation: identity.incarnation, raftAddress: settings.advertisedRaftAddress)
        var config = raftConfig
        config.applied = .zero
        raw = try RawNode(config: config, storage: log)
        addressBook = [id: MemberAddresses(raft: settings.advertisedRaftAddress, http: settings.advertisedHTTPAddress)]
        appliedIndex = .zero
        applyQueue.removeAll()
        stalledReady = nil
        lastLeader = nil
    }

    /// Removes every file of the Raft log at `path` (a node giving up its history), durably.
    package static func removeLog(at path: String, fileSystem: any WALFileSystem) throws {
        for name in try fileSystem.contentsOfDirectory(path) { try fileSystem.removeFile(path + "/" + name) }
        try fileSystem.syncDirectory(path)
    }
}
