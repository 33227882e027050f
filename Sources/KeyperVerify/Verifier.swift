import FoundationEssentials
import KeyperBase
import KeyperClient
import KeyperHistory
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The faults the nemesis can inflict on a local cluster.
public enum Fault: String, CaseIterable, Sendable {
    /// `kill -9` a node (the leader half the time), then restart it.
    case kill
    /// SIGSTOP a node (the leader half the time) for longer than an election timeout, then SIGCONT.
    case pause
    /// Cut the network between nodes while clients still reach every node: one node (the leader
    /// half the time) isolated both ways, one way only (it can send but not hear, or hear but
    /// not send), or a random minority (with the leader half the time) split from the majority.
    case partition
    /// Move leadership to another node (`POST /v1/leader/transfer`).
    case transfer
    /// Remove a member (`DELETE /v1/members/{id}`) and add it back (`POST /v1/join`).
    case membership
}

/// What `keyper verify` runs.
public struct VerifyOptions: Sendable {
    /// HTTP URLs of the nodes to test; empty with ``localCluster``.
    public var endpoints: [String] = []
    /// Start this many nodes of `binary` in a temporary directory and break them.
    public var localCluster: Int?
    /// Run the local cluster's nodes as this unprivileged account (`user` or `user:group`).
    public var runAs: LocalCluster.Account?
    public var binary: String = "/proc/self/exe"
    public var duration: Duration = .seconds(30)
    public var clients = 6
    public var keys = 4
    /// Registers written only by compare-and-set (conditional PUTs and transactions, each
    /// with an idempotency key and retried with it when unanswered); 0: none.
    public var registers = 2
    /// Follow the prefix with a watch stream per node, and check what they saw (every key,
    /// with a local cluster or lock holders: their lock keys are outside the prefix).
    public var watches = true
    /// Holders of the lock check (``LockWorkload``); 0: none.
    public var lockers = 0
    /// Every key the workload touches starts with this; nothing else is read or written.
    public var prefix = "keyper-verify/"
    public var faults: Set<Fault> = Set(Fault.allCases)
    public var historyPath: String?
    public var seed: UInt64 = UInt64.random(in: 0...UInt64.max)

    public init() {}
}

/// What a run found.
public struct VerifySummary: Sendable, CustomStringConvertible {
    public var operations = 0
    public var ok = 0
    public var failed = 0
    public var indeterminate = 0
    public var faults: [Fault: Int] = [:]
    public var linearizable = true
    public var failingKey: String?
    public var lostWrites: [String] = []
    /// Compare-and-set operations: answered set or refused, and left unanswered after retries.
    public var casSet = 0
    public var casRefused = 0
    public var casUnanswered = 0
    /// Retries sent with an idempotency key, and how many the cluster answered as a replay.
    public var casRetries = 0
    public var casReplays = 0
    /// Answers that break the idempotency contract (a retry refused as another request).
    public var idempotencyErrors: [String] = []
    /// Watch streams: events recorded, reconnections (with Last-Event-ID), what they saw wrong.
    public var watchStreams = 0
    public var watchEvents = 0
    public var watchReconnects = 0
    public var watchGaps = 0
    public var watchViolations: [String] = []
    /// The lock check: acquisitions (and those abandoned holding), fenced increments
    /// acknowledged, refused by the fence, unanswered; what it found broken.
    public var lockAcquisitions = 0
    public var lockAbandoned = 0
    public var lockIncrements = 0
    public var lockFenced = 0
    public var lockUnanswered = 0
    public var lockViolations: [String] = []
    public var lockers = 0
    public var historyPath: String?
    public var seed: UInt64 = 0
    /// Why the nemesis gave up: the cluster did not recover from a fault within its timeout.
    public var nemesisFailure: String?

    public var passed: Bool {
        linearizable && lostWrites.isEmpty && idempotencyErrors.isEmpty && watchViolations.isEmpty && lockViolations.isEmpty
            && nemesisFailure == nil
    }

    public var description: String {
        let casLine: String = "compare-and-set: \(casSet) set, \(casRefused) refused, \(casUnanswered) unanswered; "
            + "\(casRetries) retries with an idempotency key, \(casReplays) answered as replays"
        let lostLine: String = lostWrites.isEmpty ? "none" : lostWrites.prefix(5).joined(separator: "; ")
        let watchLine: String = "watches: \(watchStreams) streams, \(watchEvents) events, \(watchReconnects) reconnections, "
            + "\(watchGaps) restarts from the present; " + (watchViolations.isEmpty ? "in order, none missed, none twice"
                : "BROKEN: " + watchViolations.prefix(3).joined(separator: "; "))
        var lines: [String] = [
            "operations: \(operations) (ok \(ok), failed \(failed), indeterminate \(indeterminate))",
            "faults: " + (faults.isEmpty ? "none" : Fault.allCases.compactMap { fault in
                faults[fault].map { "\(fault.rawValue) \($0)" }
            }.joined(separator: ", ")),
            "linearizable: " + (linearizable ? "yes" : "NO (key \(failingKey ?? "?"))"),
            "lost acknowledged writes: " + lostLine,
            casLine,
            watchLine,
        ]
        if lockers > 0 {
            lines.append("locks: \(lockAcquisitions) acquisitions by \(lockers) holders (\(lockAbandoned) abandoned holding), "
                + "\(lockIncrements) fenced increments acknowledged, \(lockFenced) refused by the fence, \(lockUnanswered) unanswered; "
                + (lockViolations.isEmpty ? "one holder at a time" : "BROKEN: " + lockViolations.prefix(3).joined(separator: "; ")))
        }
        lines += [
            "seed: \(seed)",
        ]
        if !idempotencyErrors.isEmpty {
            lines.insert("idempotency: BROKEN (" + idempotencyErrors.prefix(3).joined(separator: "; ") + ")", at: lines.count - 1)
        }
        if let nemesisFailure { lines.append("liveness: FAILED (\(nemesisFailure))") }
        if let historyPath { lines.append("history: \(historyPath)") }
        lines.append("verdict: " + (passed ? "PASS" : "FAIL"))
        return lines.joined(separator: "\n")
    }
}

/// Records every client operation: a workload of reads, writes of unique values and deletes
/// on a few keys, sent to random nodes; a nemesis breaking a local cluster meanwhile; then a
/// linearizability check per key (Wing & Gong, as in the simulator) and a lost-write check.
public final class Verifier: Sendable {
    let options: VerifyOptions
    private let started = ContinuousClock.now
    private let history = Mutex<[ClientOperation]>([])
    private let nemesisFailure = Mutex<String?>(nil)
    private let casCounts = Mutex(CASCounts())

    private struct CASCounts {
        var retries = 0
        var replays = 0
        var errors: [String] = []
    }
    private let log: @Sendable (String) -> Void

    public init(options: VerifyOptions, log: @escaping @Sendable (String) -> Void = { print($0) }) {
        self.options = options
        self.log = log
    }

    var now: UInt64 { UInt64((ContinuousClock.now - started).nanoseconds) }

    public func run() async throws -> VerifySummary {
        var summary = VerifySummary()
        summary.seed = options.seed
        var cluster: LocalCluster?
        var endpoints = options.endpoints
        var temporary: String?
        if let size = options.localCluster {
            let directory = try Self.makeTemporaryDirectory()
            temporary = directory
            let local = LocalCluster(binary: options.binary, directory: directory, size: size, account: options.runAs)
            cluster = local
            log("starting a local cluster of \(size) in \(directory)" + (options.runAs.map { " as \($0.user):\($0.group)" } ?? ""))
            do {
                try await startCluster(local)
            } catch {
                local.stopAll()
                throw error
            }
            endpoints = local.endpoints
        }
        guard !endpoints.isEmpty else { throw VerifyError("no endpoints: give --endpoints or --local-cluster") }
        defer { cluster?.stopAll() }

        let watched = cluster != nil || options.lockers > 0 ? "" : options.prefix
        let recorders = options.watches
            ? endpoints.indices.map { WatchRecorder(name: "watch@node\($0 + 1)", endpoints: endpoints, home: $0, prefix: watched) } : []
        let locks = options.lockers > 0 ? LockWorkload(endpoints: endpoints, prefix: options.prefix, seed: options.seed) : nil
        for recorder in recorders { recorder.start() }
        let deadline = ContinuousClock.now + options.duration
        let endpointsFixed = endpoints
        await withTaskGroup(of: [Fault: Int].self) { group in
            for client in 0..<options.clients {
                group.addTask { await self.client(client, endpoints: endpointsFixed, until: deadline); return [:] }
            }
            if let locks {
                group.addTask {
                    await locks.run(holders: self.options.lockers, until: deadline) { self.nemesisFailure.withLock { $0 != nil } }
                    return [:]
                }
            }
            if let cluster, !options.faults.isEmpty {
                group.addTask {
                    var counts: [Fault: Int] = [:]
                    do {
                        try await self.nemesis(cluster, until: deadline, counts: &counts)
                    } catch {
                        // The cluster did not recover in time: a liveness failure. Stop the
                        // workload, but still check what was recorded.
                        self.log("nemesis: \(error); stopping the workload")
                        self.nemesisFailure.withLock { $0 = "\(error)" }
                    }
                    return counts
                }
            }
            for await counts in group { summary.faults.merge(counts, uniquingKeysWith: +) }
        }
        summary.nemesisFailure = nemesisFailure.withLock { $0 }
        if let cluster { try await heal(cluster) }
        var finalRevision = try await finalReads(endpoints: endpoints)
        if let locks {
            let (counter, revision) = try await finalRead(locks.counterKey, endpoints: endpoints)
            finalRevision = max(finalRevision, revision)
            let result = locks.result
            summary.lockers = options.lockers
            summary.lockAcquisitions = result.acquisitions
            summary.lockAbandoned = result.abandoned
            summary.lockIncrements = result.increments.count
            summary.lockFenced = result.fenced
            summary.lockUnanswered = result.unanswered
            summary.lockViolations = locks.violations(finalCounter: counter.flatMap { UInt64($0) })
        }
        for recorder in recorders { await recorder.stop(after: finalRevision, timeout: .seconds(30)) }
        let streams = recorders.map { recorder in
            let summary = recorder.summary
            return (name: recorder.name, events: summary.events, gaps: summary.gaps, reconnects: summary.reconnects, problem: summary.problem)
        }

        let operations = history.withLock { $0 }
        summary.operations = operations.count
        summary.ok = operations.filter { $0.outcome == .ok }.count
        summary.failed = operations.filter { $0.outcome == .failed }.count
        summary.indeterminate = operations.filter { $0.outcome == .indeterminate }.count
        log("checking \(operations.count) operations")
        let result = LinearizabilityChecker.check(operations)
        summary.linearizable = result.isLinearizable
        summary.failingKey = result.failingKey
        summary.lostWrites = Self.lostWrites(operations)
        let cas = operations.filter { $0.kind == .cas }
        summary.casSet = cas.filter { $0.outcome == .ok && $0.succeeded }.count
        summary.casRefused = cas.filter { $0.outcome == .ok && !$0.succeeded }.count
        summary.casUnanswered = cas.filter { $0.outcome == .indeterminate }.count
        (summary.casRetries, summary.casReplays, summary.idempotencyErrors) = casCounts.withLock { ($0.retries, $0.replays, $0.errors) }
        if !streams.isEmpty {
            summary.watchStreams = streams.count
            summary.watchEvents = streams.reduce(0) { $0 + $1.events.count }
            summary.watchReconnects = streams.reduce(0) { $0 + $1.reconnects }
            summary.watchGaps = streams.reduce(0) { $0 + $1.gaps.count }
            summary.watchViolations = streams.compactMap(\.problem)
                + Self.watchViolations(streams.map { ($0.name, $0.events, $0.gaps) }, history: operations)
            for stream in streams where (stream.events.last?.revision ?? 0) < finalRevision {
                summary.watchViolations.append("\(stream.name) did not reach revision \(finalRevision) (it saw \(stream.events.last?.revision ?? 0))")
            }
        }
        let path = options.historyPath
            ?? (temporary.map { $0 + "/history.jsonl" } ?? "/tmp/keyper-verify-history-\(options.seed).jsonl")
        try Self.write(operations, to: path)
        summary.historyPath = path
        return summary
    }

    // MARK: Workload

    private func client(_ number: Int, endpoints: [String], until deadline: ContinuousClock.Instant) async {
        var random = SplitMix64(seed: options.seed &+ UInt64(number) &* 0x9E37_79B9)
        var sequence = 0
        while ContinuousClock.now < deadline, nemesisFailure.withLock({ $0 == nil }) {
            let key = options.prefix + "k\(random.next(below: options.keys))"
            let endpoint = endpoints[random.next(below: endpoints.count)]
            let roll = random.next(below: 10)
            if options.registers > 0 && random.next(below: 10) < 3 {
                sequence += 1
                let register = options.prefix + "cas/r\(random.next(below: options.registers))"
                await compareAndSet(register, value: "c\(number)-\(sequence)", endpoints: endpoints, random: &random)
            } else if roll < 5 {
                await read(key, at: endpoint)
            } else if roll < 9 {
                sequence += 1
                await mutate(key, value: "c\(number)-\(sequence)", at: endpoint)
            } else {
                await mutate(key, value: nil, at: endpoint)
            }
        }
    }

    private func url(_ endpoint: String, _ key: String) -> String {
        endpoint + "/v1/keys/" + KeyPath.encode(Array(key.utf8))
    }

    private func read(_ key: String, at endpoint: String) async {
        let call = now
        var operation = ClientOperation(key: key, kind: .read, value: nil, callTime: call, returnTime: 0, outcome: .indeterminate)
        if let result = try? await HTTPRequester.send(.GET, url(endpoint, key), timeout: .seconds(4)) {
            if result.status == 200 {
                operation.outcome = .ok
                operation.value = result.text
            } else if result.status == 404 {
                operation.outcome = .ok
            }
        }
        operation.returnTime = now
        record(operation)
    }

    private func mutate(_ key: String, value: String?, at endpoint: String) async {
        let call = now
        var operation = ClientOperation(key: key, kind: value == nil ? .delete : .write, value: value, callTime: call,
                                    returnTime: 0, outcome: .indeterminate)
        do {
            let result = try await HTTPRequester.send(value == nil ? .DELETE : .PUT, url(endpoint, key),
                                                      body: value.map { Array($0.utf8) }, timeout: .seconds(4))
            // 2xx: applied. 4xx: refused before it was proposed. 5xx: unknown.
            if (200..<300).contains(result.status) { operation.outcome = .ok }
            else if (400..<500).contains(result.status) { operation.outcome = .failed }
        } catch {
            // No answer: unknown, the write may have been applied.
        }
        operation.returnTime = now
        record(operation)
    }

    /// Reads the register, then sets it to `value` if it still holds what was read: by a PUT
    /// with `If-Match` (or `If-None-Match: *`), or by a transaction comparing the value. The
    /// write carries an idempotency key; while unanswered (no answer, a 5xx) it is sent again,
    /// as it is, to a random node. A retry may only answer as the first attempt did: a second
    /// application would answer "refused" for a value that is set, which the checker catches.
    private func compareAndSet(_ key: String, value: String, endpoints: [String], random: inout SplitMix64) async {
        let readCall = now
        guard let read = try? await HTTPRequester.send(.GET, url(endpoints[random.next(below: endpoints.count)], key), timeout: .seconds(4)),
              read.status == 200 || read.status == 404 else { return }
        let expected = read.status == 200 ? read.text : nil
        record(ClientOperation(key: key, kind: .read, value: expected, callTime: readCall, returnTime: now, outcome: .ok))
        let idempotencyKey = "verify-\(options.seed)-\(value)"
        let (method, path, body, headers): (HTTPMethod, String, [UInt8], [(String, String)])
        if random.next(below: 2) == 0 {
            let condition = read.header("ETag").map { ("If-Match", $0) } ?? ("If-None-Match", "*")
            (method, path, body, headers) = (.PUT, "/v1/keys/" + KeyPath.encode(Array(key.utf8)), Array(value.utf8),
                                             [condition, ("Idempotency-Key", idempotencyKey)])
        } else {
            let compare = expected.map { #"{"key":"\#(key)","target":"value","op":"==","value":"\#($0)"}"# }
                ?? #"{"key":"\#(key)","target":"exists","op":"==","value":false}"#
            let text = #"{"compare":[\#(compare)],"success":[{"op":"put","key":"\#(key)","value":"\#(value)"}]}"#
            (method, path, body, headers) = (.POST, "/v1/txn", Array(text.utf8),
                                             [("Content-Type", "application/json"), ("Idempotency-Key", idempotencyKey)])
        }
        var operation = ClientOperation(key: key, kind: .cas, value: value, callTime: now, returnTime: 0, outcome: .indeterminate,
                                        expected: expected)
        attempts: for attempt in 0..<6 {
            if attempt > 0 {
                casCounts.withLock { $0.retries += 1 }
                try? await Task.sleep(for: .milliseconds(200 * attempt))
            }
            guard let result = try? await HTTPRequester.send(method, endpoints[random.next(below: endpoints.count)] + path, body: body,
                                                             headers: headers, timeout: .seconds(4)) else { continue }
            if result.header("Idempotent-Replayed") == "true" { casCounts.withLock { $0.replays += 1 } }
            switch result.status {
            case 204:
                (operation.outcome, operation.succeeded) = (.ok, true)
            case 200 where method == .POST:
                (operation.outcome, operation.succeeded) = (.ok, result.text.hasPrefix(#"{"succeeded":true"#))
            case 412:
                (operation.outcome, operation.succeeded) = (.ok, false)
            case 422:
                casCounts.withLock { $0.errors.append("\(key): a retry of \(value) was refused as another request: \(result.text)") }
                operation.outcome = .indeterminate
            case 400..<500:
                operation.outcome = attempt == 0 ? .failed : .indeterminate
            default:
                continue attempts  // 5xx: unknown, retry
            }
            break attempts
        }
        operation.returnTime = now
        record(operation)
    }

    private func record(_ operation: ClientOperation) {
        history.withLock { $0.append(operation) }
    }

    /// After the faults: every key read once more, linearizably, so a lost write shows.
    /// Returns the highest store revision those reads saw.
    private func finalReads(endpoints: [String]) async throws -> UInt64 {
        var revision: UInt64 = 0
        let keys = (0..<options.keys).map { options.prefix + "k\($0)" } + (0..<options.registers).map { options.prefix + "cas/r\($0)" }
        for key in keys {
            var done = false
            for attempt in 0..<40 where !done {
                let endpoint = endpoints[attempt % endpoints.count]
                let call = now
                if let result = try? await HTTPRequester.send(.GET, url(endpoint, key), timeout: .seconds(4)),
                   result.status == 200 || result.status == 404 {
                    record(ClientOperation(key: key, kind: .read, value: result.status == 200 ? result.text : nil,
                                       callTime: call, returnTime: now, outcome: .ok))
                    revision = max(revision, result.header("X-Keyper-Revision").flatMap { UInt64($0) } ?? 0)
                    done = true
                } else {
                    try await Task.sleep(for: .milliseconds(250))
                }
            }
            guard done else { throw VerifyError("no node answered a final read of \(key)") }
        }
        return revision
    }

    /// A linearizable read of `key` through any node, and the store revision it saw; not
    /// part of the checked history.
    private func finalRead(_ key: String, endpoints: [String]) async throws -> (value: String?, revision: UInt64) {
        for attempt in 0..<40 {
            if let result = try? await HTTPRequester.send(.GET, url(endpoints[attempt % endpoints.count], key), timeout: .seconds(4)),
               result.status == 200 || result.status == 404 {
                return (result.status == 200 ? result.text : nil, result.header("X-Keyper-Revision").flatMap { UInt64($0) } ?? 0)
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw VerifyError("no node answered a final read of \(key)")
    }

    // MARK: Nemesis

    private func startCluster(_ cluster: LocalCluster) async throws {
        try cluster.start(0)
        try await waitFor("node1 to lead") { await self.leader(of: cluster) == 0 }
        for index in 1..<cluster.nodes.count {
            try cluster.start(index)
            try await waitFor("node\(index + 1) to join") { await self.voters(of: cluster) == index + 1 }
        }
        log("cluster up: \(cluster.endpoints.joined(separator: " "))")
    }

    private func nemesis(_ cluster: LocalCluster, until deadline: ContinuousClock.Instant, counts: inout [Fault: Int]) async throws {
        var random = SplitMix64(seed: options.seed ^ 0xFA17)
        let faults = Fault.allCases.filter { options.faults.contains($0) }
        while ContinuousClock.now + .seconds(4) < deadline {
            try await Task.sleep(for: .milliseconds(500 + random.next(below: 1_500)))
            let leader = await self.leader(of: cluster)
            let victim = (random.next(below: 2) == 0 ? leader : nil) ?? random.next(below: cluster.nodes.count)
            let fault = faults[random.next(below: faults.count)]
            log("nemesis: \(fault.rawValue) \(cluster.nodes[victim].id)\(victim == leader ? " (leader)" : "")")
            switch fault {
            case .kill:
                cluster.kill(victim)
                try await Task.sleep(for: .milliseconds(500 + random.next(below: 1_500)))
                try cluster.start(victim)
            case .pause:
                cluster.pause(victim)
                // Longer than an election timeout (500 ms): a paused leader is replaced, and
                // when it wakes it must not serve a stale read.
                try await Task.sleep(for: .milliseconds(1_200 + random.next(below: 1_000)))
                cluster.resume(victim)
            case .partition:
                try await partition(around: victim, leader: leader, in: cluster, random: &random)
                try await Task.sleep(for: .milliseconds(1_500 + random.next(below: 1_500)))
                try await healNetwork(cluster)
            case .transfer:
                if let leader {
                    _ = try? await HTTPRequester.send(.POST, cluster.endpoints[leader] + "/v1/leader/transfer", timeout: .seconds(5))
                }
            case .membership:
                try await removeAndReadd(victim, in: cluster)
            }
            counts[fault, default: 0] += 1
            try await waitFor("a leader after \(fault.rawValue)") { await self.leader(of: cluster) != nil }
        }
    }

    /// Removes a member through any node (followers forward to the leader), waits, and joins
    /// it back with the same addresses; the node keeps running throughout.
    private func removeAndReadd(_ victim: Int, in cluster: LocalCluster) async throws {
        let node = cluster.nodes[victim]
        let via = cluster.endpoints[(victim + 1) % cluster.nodes.count]
        // As an operator would: removing the leader first moves leadership (503 leader_transfer),
        // so retry until the member is gone.
        try await waitFor("\(node.id) to be removed") {
            guard let result = try? await HTTPRequester.send(.DELETE, via + "/v1/members/\(node.id)", timeout: .seconds(5))
            else { return false }
            return result.status == 204 || result.status == 404
        }
        try await Task.sleep(for: .milliseconds(500))
        let body = Array(#"{"node_id":"\#(node.id)","raft_addr":"127.0.0.1:\#(node.raftPort)","http_addr":"127.0.0.1:\#(node.httpPort)"}"#.utf8)
        try await waitFor("\(node.id) to be added back") {
            guard let result = try? await HTTPRequester.send(.POST, via + "/v1/join", body: body,
                                                             headers: [("Content-Type", "application/json")], timeout: .seconds(5))
            else { return false }
            return result.status == 204
        }
    }

    /// One of four partitions around `victim`, chosen at random; clients still reach every node.
    private func partition(around victim: Int, leader: Int?, in cluster: LocalCluster,
                           random: inout SplitMix64) async throws {
        let ids = cluster.nodes.map(\.id)
        let others = ids.indices.filter { $0 != victim }
        switch random.next(below: 4) {
        case 0:
            log("nemesis: \(ids[victim]) isolated both ways")
            try await setFaults(cluster, victim, dropTo: others.map { ids[$0] }, dropFrom: others.map { ids[$0] })
            for index in others { try await setFaults(cluster, index, dropTo: [ids[victim]], dropFrom: [ids[victim]]) }
        case 1:
            // It hears everyone, nobody hears it: a leader keeps believing it leads until
            // check-quorum; a follower keeps campaigning into the void.
            log("nemesis: \(ids[victim]) can receive but not send")
            try await setFaults(cluster, victim, dropTo: others.map { ids[$0] }, dropFrom: [])
        case 2:
            log("nemesis: \(ids[victim]) can send but not receive")
            try await setFaults(cluster, victim, dropTo: [], dropFrom: others.map { ids[$0] })
        default:
            // A minority (at most (n-1)/2 nodes, the leader among them half the time) split from the rest.
            var minority: Set<Int> = [victim]
            var candidates = others
            if let leader, leader != victim, random.next(below: 2) == 0, minority.count < (ids.count - 1) / 2 {
                minority.insert(leader)
            }
            while minority.count < max(1, (ids.count - 1) / 2), !candidates.isEmpty {
                minority.insert(candidates.remove(at: random.next(below: candidates.count)))
            }
            let majority = ids.indices.filter { !minority.contains($0) }
            log("nemesis: split \(minority.sorted().map { ids[$0] }) | \(majority.map { ids[$0] })")
            for index in ids.indices {
                let far = (minority.contains(index) ? majority : minority.sorted()).map { ids[$0] }
                try await setFaults(cluster, index, dropTo: far, dropFrom: far)
            }
        }
    }

    private func setFaults(_ cluster: LocalCluster, _ index: Int, dropTo: [String], dropFrom: [String]) async throws {
        func list(_ ids: [String]) -> String { ids.map { "\"\($0)\"" }.joined(separator: ",") }
        let body = Array(#"{"drop_to":[\#(list(dropTo))],"drop_from":[\#(list(dropFrom))]}"#.utf8)
        try await waitFor("node \(cluster.nodes[index].id) to take the fault") {
            guard let result = try? await HTTPRequester.send(.POST, cluster.endpoints[index] + "/v1/debug/faults", body: body,
                                                             headers: [("Content-Type", "application/json")], timeout: .seconds(2))
            else { return cluster.nodes[index].pid == 0 }
            return result.status == 204 || result.status == 200
        }
    }

    private func healNetwork(_ cluster: LocalCluster) async throws {
        for endpoint in cluster.endpoints {
            _ = try? await HTTPRequester.send(.DELETE, endpoint + "/v1/debug/faults", timeout: .seconds(2))
        }
    }

    /// Ends every fault: processes running and resumed, the network whole, a leader elected.
    private func heal(_ cluster: LocalCluster) async throws {
        for index in cluster.nodes.indices {
            if cluster.nodes[index].pid == 0 { try cluster.start(index) }
            if cluster.nodes[index].paused { cluster.resume(index) }
        }
        try await healNetwork(cluster)
        try await waitFor("a leader once healed") { await self.leader(of: cluster) != nil }
    }

    private struct StatusBody: Decodable {
        var is_leader: Bool?
        var leader_id: String?
        var members: [Member]?
        struct Member: Decodable { var role: String }
    }

    private func status(_ endpoint: String) async -> StatusBody? {
        guard let result = try? await HTTPRequester.send(.GET, endpoint + "/v1/status", timeout: .seconds(1)),
              result.status == 200 else { return nil }
        return try? JSONDecoder().decode(StatusBody.self, from: Data(result.body))
    }

    /// The index of the node that says it leads (and that a follower agrees with), if any.
    private func leader(of cluster: LocalCluster) async -> Int? {
        for (index, node) in cluster.nodes.enumerated() where node.pid > 0 && !node.paused {
            if await status(cluster.endpoints[index])?.is_leader == true { return index }
        }
        return nil
    }

    private func voters(of cluster: LocalCluster) async -> Int {
        guard let leader = await leader(of: cluster), let status = await status(cluster.endpoints[leader]) else { return 0 }
        return status.members?.filter { $0.role == "voter" }.count ?? 0
    }

    /// Polls `condition` until it holds; gives up after a generous timeout that only bounds a failure.
    private func waitFor(_ what: String, timeout: Duration = .seconds(60), _ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw VerifyError("timed out waiting for \(what)")
    }

    // MARK: Checks

    /// Acknowledged writes that nothing could have overwritten, yet the final read does not show:
    /// the write was the last change to its key, so the final value must be its value.
    static func lostWrites(_ operations: [ClientOperation]) -> [String] {
        var lost: [String] = []
        let byKey = Dictionary(grouping: operations, by: \.key)
        for (key, operations) in byKey {
            guard let final = operations.filter({ $0.kind == .read && $0.outcome == .ok }).max(by: { $0.callTime < $1.callTime })
            else { continue }
            let mutations = operations.filter { $0.kind != .read && $0.outcome != .failed }
            for write in mutations where write.kind == .write && write.outcome == .ok && write.returnTime < final.callTime {
                // Could anything else be ordered after it? Only a mutation that had not returned
                // before this write was called (an indeterminate one may land any time later).
                let overwritable = mutations.contains { other in
                    other.callTime != write.callTime && (other.outcome == .indeterminate || other.returnTime > write.callTime)
                        && !(other.kind == write.kind && other.value == write.value)
                }
                if !overwritable && final.value != write.value {
                    lost.append("\(key)=\(write.value ?? "") (final read: \(final.value ?? "absent"))")
                }
            }
        }
        return lost
    }

    static func write(_ operations: [ClientOperation], to path: String) throws {
        var text = ""
        for operation in operations.sorted(by: { $0.callTime < $1.callTime }) {
            let value = operation.value.map { "\"\($0)\"" } ?? "null"
            let cas = operation.kind != .cas ? ""
                : #","expected":\#(operation.expected.map { "\"\($0)\"" } ?? "null"),"succeeded":\#(operation.succeeded)"#
            text += #"{"key":"\#(operation.key)","kind":"\#(operation.kind)","value":\#(value)\#(cas),"call_ns":\#(operation.callTime),"return_ns":\#(operation.returnTime),"outcome":"\#(operation.outcome)"}"# + "\n"
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw VerifyError("cannot write the history to \(path)") }
        defer { close(fd) }
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
    }

    static func makeTemporaryDirectory() throws -> String {
        var template = Array("/tmp/keyper-verify-XXXXXX".utf8CString)
        return try template.withUnsafeMutableBufferPointer { buffer in
            guard let result = mkdtemp(buffer.baseAddress!) else { throw VerifyError("cannot create a temporary directory") }
            return String(cString: result)
        }
    }
}
