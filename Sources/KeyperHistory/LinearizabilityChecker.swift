/// One client operation on a key-value store, as observed by the client.
public struct ClientOperation: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case read, write, delete
        /// Compare-and-set: `value` if the key holds `expected` (nil: absent), else nothing.
        case cas
    }
    public enum Outcome: Hashable, Sendable {
        /// Returned successfully; for reads `value` is what was observed.
        case ok
        /// Definitely did not take effect (refused, or a different entry took its place).
        case failed
        /// Unknown: a write may or may not have taken effect, at any time after its call.
        case indeterminate
    }

    public var key: String
    public var kind: Kind
    /// Written value for writes; observed value for reads (nil = absent). Unused for deletes.
    public var value: String?
    public var callTime: UInt64
    /// Required for `.ok`; ignored otherwise.
    public var returnTime: UInt64
    public var outcome: Outcome
    /// A compare-and-set's expected value (nil: the key must be absent).
    public var expected: String?
    /// Whether an `.ok` compare-and-set answered that it set the value (false: the key did
    /// not hold `expected`, and nothing changed).
    public var succeeded: Bool

    public init(key: String, kind: Kind, value: String?, callTime: UInt64, returnTime: UInt64, outcome: Outcome,
                expected: String? = nil, succeeded: Bool = false) {
        self.key = key
        self.kind = kind
        self.value = value
        self.callTime = callTime
        self.returnTime = returnTime
        self.outcome = outcome
        self.expected = expected
        self.succeeded = succeeded
    }
}

public struct LinearizabilityResult: Hashable, Sendable {
    public var isLinearizable: Bool
    /// The first key whose history has no linearization.
    public var failingKey: String?
    /// Operations checked (failed ones and indeterminate reads are left out).
    public var operationsChecked: Int
}

/// Checks a key-value history for linearizability (Herlihy & Wing 1990), key by key since keys
/// are independent registers. Search: Wing & Gong's algorithm with Lowe's memoisation of
/// (linearized set, state), as in Porcupine.
public enum LinearizabilityChecker {
    public static func check(_ history: [ClientOperation]) -> LinearizabilityResult {
        var byKey: [String: [ClientOperation]] = [:]
        for operation in history { byKey[operation.key, default: []].append(operation) }
        var checked = 0
        for key in byKey.keys.sorted() {
            let operations = byKey[key]!.filter(isChecked)
            checked += operations.count
            if !checkRegister(operations) {
                return LinearizabilityResult(isLinearizable: false, failingKey: key, operationsChecked: checked)
            }
        }
        return LinearizabilityResult(isLinearizable: true, failingKey: nil, operationsChecked: checked)
    }

    private static func isChecked(_ operation: ClientOperation) -> Bool {
        switch operation.outcome {
        case .ok: true
        case .failed: false
        // An unanswered read constrains nothing; an unanswered write may have happened.
        case .indeterminate: operation.kind != .read
        }
    }

    private struct CacheKey: Hashable {
        var linearized: [UInt64]
        var state: Int
    }

    /// One register (a key) starting absent.
    static func checkRegister(_ operations: [ClientOperation]) -> Bool {
        let count = operations.count
        if count == 0 { return true }
        // Values as small integers; 0 is "absent".
        var valueIDs: [String: Int] = [:]
        func valueID(_ value: String?) -> Int {
            guard let value else { return 0 }
            if let id = valueIDs[value] { return id }
            let id = valueIDs.count + 1
            valueIDs[value] = id
            return id
        }
        let values = operations.map { $0.kind == .delete ? 0 : valueID($0.value) }
        let expected = operations.map { $0.kind == .cas ? valueID($0.expected) : 0 }
        // Events: 2k is the call of operation k, 2k+1 its return. Indeterminate writes return at
        // infinity: linearizing them last is the same as their never having happened.
        func time(_ event: Int) -> UInt64 {
            let operation = operations[event / 2]
            if event % 2 == 0 { return operation.callTime }
            return operation.outcome == .ok ? operation.returnTime : UInt64.max
        }
        let events = (0..<(2 * count)).sorted { a, b in
            let (ta, tb) = (time(a), time(b))
            if ta != tb { return ta < tb }
            return a % 2 == 0 && b % 2 == 1   // calls before returns at the same instant
        }
        // Doubly linked list over events with a sentinel head at index 2*count.
        let head = 2 * count
        var next = [Int](repeating: -1, count: 2 * count + 1)
        var prev = [Int](repeating: -1, count: 2 * count + 1)
        var last = head
        for event in events {
            next[last] = event
            prev[event] = last
            last = event
        }
        func unlink(_ event: Int) {
            next[prev[event]] = next[event]
            if next[event] >= 0 { prev[next[event]] = prev[event] }
        }
        func relink(_ event: Int) {
            next[prev[event]] = event
            if next[event] >= 0 { prev[next[event]] = event }
        }
        var linearized = [UInt64](repeating: 0, count: (count + 63) / 64)
        var cache: Set<CacheKey> = []
        var stack: [(operation: Int, state: Int)] = []
        var state = 0
        var entry = next[head]
        while next[head] >= 0 {
            precondition(entry >= 0, "fell off the event list")
            let operation = entry / 2
            if entry % 2 == 0 {
                var newState = state
                let allowed: Bool
                switch operations[operation].kind {
                case .read: allowed = values[operation] == state
                case .write, .delete:
                    allowed = true
                    newState = values[operation]
                case .cas:
                    let holds = expected[operation] == state
                    // An answered one must have found what it says; an unanswered one did
                    // whatever the state makes it do.
                    allowed = operations[operation].outcome != .ok || operations[operation].succeeded == holds
                    if holds { newState = values[operation] }
                }
                if allowed {
                    var candidate = linearized
                    candidate[operation / 64] |= 1 << UInt64(operation % 64)
                    if cache.insert(CacheKey(linearized: candidate, state: newState)).inserted {
                        stack.append((operation, state))
                        state = newState
                        linearized = candidate
                        unlink(2 * operation)
                        unlink(2 * operation + 1)
                        entry = next[head]
                        continue
                    }
                }
                entry = next[entry]
            } else {
                // A return reached before its operation was linearized: backtrack.
                guard let top = stack.popLast() else { return false }
                relink(2 * top.operation + 1)
                relink(2 * top.operation)
                linearized[top.operation / 64] &= ~(1 << UInt64(top.operation % 64))
                state = top.state
                entry = next[2 * top.operation]
            }
        }
        return true
    }
}
