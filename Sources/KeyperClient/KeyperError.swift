/// An error answered by the cluster (its JSON `code`), or met on the way to it.
public struct KeyperError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The `code` of the JSON error body: stable, meant for programs.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let keyNotFound = Code(rawValue: "key_not_found")
        public static let revisionMismatch = Code(rawValue: "revision_mismatch")
        public static let leaseNotFound = Code(rawValue: "lease_not_found")
        public static let lockHeld = Code(rawValue: "lock_held")
        public static let memberNotFound = Code(rawValue: "member_not_found")
        public static let noLeader = Code(rawValue: "no_leader")
        public static let timeout = Code(rawValue: "timeout")
        public static let idempotencyKeyReused = Code(rawValue: "idempotency_key_reused")
        /// A request that changes something got no answer: it may or may not have been applied.
        public static let outcomeUnknown = Code(rawValue: "outcome_unknown")
                /// No node could be reached (or none answered in time).
        public static let unreachable = Code(rawValue: "unreachable")
        /// An endpoint that is not an `http://host:port` URL.
        public static let invalidEndpoint = Code(rawValue: "invalid_endpoint")
        /// A node answered something this client does not understand.
        public static let invalidAnswer = Code(rawValue: "invalid_answer")
    }

    /// The HTTP status (0 when no node answered).
    public var status: Int
    public var code: Code
    /// For people; may change between releases.
    public var message: String
    /// For a write the cluster could not finish: `not_applied` (safe to retry as is) or
    /// `unknown` (it may still be applied).
    public var outcome: String?
    /// The node that answered.
    public var endpoint: String?

    public init(status: Int, code: Code, message: String, outcome: String? = nil, endpoint: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.outcome = outcome
        self.endpoint = endpoint
    }

    public var description: String {
        (status > 0 ? "\(status) " : "") + "\(code): \(message)"
    }

    /// Whether it says the thing asked for does not exist.
    public var isNotFound: Bool { status == 404 }
    /// Whether a condition did not hold (`412`, a compare-and-swap that lost).
    public var isPreconditionFailed: Bool { status == 412 }
}
