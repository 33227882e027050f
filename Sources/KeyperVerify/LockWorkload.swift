import KeyperBase
import KeyperClient
import NIOHTTP1
import Synchronization

/// The lock check of `keyper verify`: holders take one lock (`POST /v1/locks/{name}`) with
/// short leases and, while holding it, increment a counter by a read and then a write that is
/// fenced by the lock (a transaction that applies only while the holder's lock key exists).
/// Some holders "die" holding it (they stop keepalives, as a `kill -9`d process would), so the
/// lock changes hands by expiry too, under the same faults as the rest of the workload.
///
/// Mutual exclusion shows in the counter: two holders at once would both read some value `v`
/// and both write `v + 1`. Checked: every acknowledged increment wrote a different value; in
/// store-revision order the values rise and the fencing tokens never go back; the final
/// counter is at least the acknowledged increments and at most those plus the unanswered ones.
final class LockWorkload: Sendable {
    struct Increment: Sendable {
        var value: UInt64
        var revision: UInt64
        var token: UInt64
        var holder: Int
    }

    struct Summary: Sendable {
        var acquisitions = 0
        var increments: [Increment] = []
        /// Increments sent and not answered: each may or may not have applied.
        var unanswered = 0
        /// Holders that stopped keeping their lease alive while holding.
        var abandoned = 0
        /// Increments refused because the holder's key was gone (fencing at work).
        var fenced = 0
    }

    let endpoints: [String]
    let name: String
    let counterKey: String
    let seed: UInt64
    /// Short, so abandoned locks change hands within the run.
    let ttl = "2s"
    private let summary = Mutex(Summary())

    init(endpoints: [String], prefix: String, seed: UInt64) {
        self.endpoints = endpoints
        // A lock name is one path segment of letters, digits and . _ - :.
        let cleaned = prefix.map { $0.isLetter || $0.isNumber || ".-_:".contains($0) ? $0 : "-" }
        name = String(cleaned.isEmpty ? Array("keyper-verify") : cleaned).trimmingSuffix("-") + "-lock"
        counterKey = prefix + "lock/counter"
        self.seed = seed
    }

    var result: Summary { summary.withLock { $0 } }

    /// Runs `holders` holders until `deadline` (or until `stop` says so).
    func run(holders: Int, until deadline: ContinuousClock.Instant, stop: @escaping @Sendable () -> Bool) async {
        await withTaskGroup(of: Void.self) { group in
            for holder in 0..<holders {
                group.addTask { await self.holder(holder, until: deadline, stop: stop) }
            }
        }
    }

    private func send(_ method: HTTPMethod, _ path: String, body: String? = nil, random: inout SplitMix64,
                      timeout: Duration = .seconds(4)) async -> HTTPResult? {
        let endpoint = endpoints[random.next(below: endpoints.count)]
        return try? await HTTPRequester.send(method, endpoint + path, body: body.map { Array($0.utf8) },
                                             headers: body == nil ? [] : [("Content-Type", "application/json")], timeout: timeout)
    }

    private func holder(_ number: Int, until deadline: ContinuousClock.Instant, stop: @escaping @Sendable () -> Bool) async {
        var random = SplitMix64(seed: seed &+ 0x10C4 &+ UInt64(number) &* 0x9E37_79B9)
        while ContinuousClock.now < deadline && !stop() {
            guard let granted = await send(.POST, "/v1/leases", body: #"{"ttl":"\#(ttl)"}"#, random: &random), granted.status == 201,
                  let lease = granted.jsonNumber("id") else {
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            let keeper = keepAlive(lease, seed: random.next())
            defer { keeper.cancel() }
            // Wait in line (a few seconds at a time) until it is ours or the lease is gone.
            var held: (token: UInt64, key: String)?
            while held == nil && ContinuousClock.now < deadline && !stop() {
                guard let answer = await send(.POST, "/v1/locks/\(name)?lease=\(lease)&wait=3s", random: &random, timeout: .seconds(8)) else { continue }
                if answer.status == 200, let token = answer.jsonNumber("revision"), let key = answer.jsonString("key") {
                    held = (token, key)
                } else if answer.errorCode == "lock_lost" || answer.errorCode == "lease_not_found" {
                    break
                } else if answer.status >= 500 {
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            guard let (token, key) = held else { continue }
            summary.withLock { $0.acquisitions += 1 }
            for _ in 0..<(1 + random.next(below: 3)) {
                guard await increment(token: token, key: key, holder: number, random: &random) else { break }
            }
            if random.next(below: 4) == 0 {
                // Dies holding the lock: the lease expires, and the next in line takes over.
                keeper.cancel()
                summary.withLock { $0.abandoned += 1 }
                continue
            }
            keeper.cancel()
            _ = await send(.DELETE, "/v1/leases/\(lease)", random: &random)
        }
    }

    /// A keepalive every half second through random nodes, until cancelled.
    private func keepAlive(_ lease: UInt64, seed: UInt64) -> Task<Void, Never> {
        Task {
            var random = SplitMix64(seed: seed)
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                guard !Task.isCancelled else { return }
                if let answer = await send(.POST, "/v1/leases/\(lease)/keepalive", random: &random, timeout: .seconds(1)),
                   answer.errorCode == "lease_not_found" { return }
            }
        }
    }

    /// Reads the counter, then writes it plus one, fenced by the holder's lock key. False when
    /// the holding is over (the key is gone) or uncertain (no answer).
    private func increment(token: UInt64, key: String, holder: Int, random: inout SplitMix64) async -> Bool {
        guard let read = await send(.GET, "/v1/keys/" + KeyPath.encode(Array(counterKey.utf8)), random: &random),
              read.status == 200 || read.status == 404 else { return false }
        let current = read.status == 200 ? UInt64(read.text) ?? 0 : 0
        let next = current + 1
        let body = #"{"compare":[{"key":"\#(key)","target":"exists","op":"==","value":true}],"#
            + #""success":[{"op":"put","key":"\#(counterKey)","value":"\#(next)"}]}"#
        guard let answer = await send(.POST, "/v1/txn", body: body, random: &random) else {
            summary.withLock { $0.unanswered += 1 }
            return false
        }
        guard answer.status == 200 else {
            if answer.status >= 500 { summary.withLock { $0.unanswered += 1 } }
            return false
        }
        guard answer.text.hasPrefix(#"{"succeeded":true"#), let revision = answer.jsonNumber("revision") else {
            summary.withLock { $0.fenced += 1 }
            return false
        }
        summary.withLock { $0.increments.append(Increment(value: next, revision: revision, token: token, holder: holder)) }
        return true
    }

    /// What the run broke, given the counter's final value (nil: absent).
    func violations(finalCounter: UInt64?) -> [String] {
        Self.violations(of: result, finalCounter: finalCounter)
    }

    static func violations(of summary: Summary, finalCounter: UInt64?) -> [String] {
        var problems: [String] = []
        let increments = summary.increments.sorted { $0.revision < $1.revision }
        for (earlier, later) in zip(increments, increments.dropFirst()) {
            if later.value <= earlier.value {
                problems.append("two holders at once: holder \(later.holder) (token \(later.token)) wrote \(later.value) at revision "
                    + "\(later.revision) after holder \(earlier.holder) (token \(earlier.token)) wrote \(earlier.value) at revision \(earlier.revision)")
            }
            if later.token < earlier.token {
                problems.append("a fencing token went back: \(later.token) at revision \(later.revision) after \(earlier.token) at revision \(earlier.revision)")
            }
        }
        let final = finalCounter ?? 0
        let acknowledged = UInt64(increments.count)
        if final < acknowledged || final > acknowledged + UInt64(summary.unanswered) {
            problems.append("the counter is \(final) after \(acknowledged) acknowledged increments and \(summary.unanswered) unanswered ones")
        }
        return Array(problems.prefix(10))
    }
}

extension String {
    fileprivate func trimmingSuffix(_ character: Character) -> String {
        var text = Substring(self)
        while text.last == character { text = text.dropLast() }
        return String(text)
    }
}
