import HTTPTypes
import Hummingbird
import KeyperReplica
import NIOCore

/// An error answered to an HTTP client as `{"error": "...", "code": "..."}`.
///
/// `code` is stable and meant for programs; `message` is for people and may change.
public struct APIError: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    public var headers: HTTPFields
    /// For a failure of the replica: `"not_applied"` (safe to retry as is) or `"unknown"` (a
    /// write or membership change was proposed and may still be applied).
    public var outcome: String?
    /// Further numeric fields of the body, in order (`current_revision` of a failed condition).
    public var numbers: [(name: String, value: UInt64)] = []

    public init(_ status: HTTPResponse.Status, code: String, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = self.headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// `{"error": …, "code": …}`, with `"outcome"` when the replica said what may still happen.
    var body: String {
        #"{"error":"# + JSONText.quoted(message) + #","code":"# + JSONText.quoted(code)
            + (outcome.map { #","outcome":"# + JSONText.quoted($0) } ?? "")
            + numbers.map { "," + JSONText.quoted($0.name) + ":\($0.value)" }.joined() + "}\n"
    }
}

extension APIError {
    static func badRequest(_ code: String, _ message: String) -> APIError { APIError(.badRequest, code: code, message) }
    static func emptyKey() -> APIError { .badRequest("empty_key", "the key is empty: use /v1/keys/{key}") }
    static func notFound(_ message: String) -> APIError { APIError(.notFound, code: "not_found", message) }
    static func keyNotFound() -> APIError { APIError(.notFound, code: "key_not_found", "key not found") }
    static func methodNotAllowed(_ method: HTTPRequest.Method, allowed: [HTTPRequest.Method]) -> APIError {
        let allow = allowed.map(\.rawValue).joined(separator: ", ")
        var headers = HTTPFields()
        headers[.allow] = allow
        return APIError(.methodNotAllowed, code: "method_not_allowed",
                        "method \(method.rawValue) is not allowed here (allowed: \(allow))", headers: headers)
    }
    static func internalError(_ message: String) -> APIError { APIError(.internalServerError, code: "internal", message) }
}

/// Minimal JSON string escaping (RFC 8259 §7), for the few hand-built bodies on hot or error paths.
package enum JSONText {
    package static func quoted(_ text: String) -> String {
        // Most text needs no escape: then it is copied whole (a scalar-by-scalar copy was most
        // of a watch stream's CPU).
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            return "\"" + text + "\""
        }
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let s where s.value < 0x20:
                let hex = String(s.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension APIError {
    /// The status and code a client is answered with when the replica refused or failed its
    /// request: the one place a domain failure becomes HTTP.
    init(_ error: ReplicaError) {
        let (status, code): (HTTPResponse.Status, String) = switch error.kind {
        case .noLeader: (.serviceUnavailable, "no_leader")
        case .notLeader: (.serviceUnavailable, "not_leader")
        case .timeout: (.serviceUnavailable, "timeout")
        case .leaderChanged: (.serviceUnavailable, "leader_changed")
        case .overloaded: (.serviceUnavailable, "overloaded")
        case .diskFull: (.insufficientStorage, "disk_full")
        case .shuttingDown: (.serviceUnavailable, "shutting_down")
        case .joiningCluster: (.serviceUnavailable, "joining_cluster")
        case .proposalDropped: (.serviceUnavailable, "proposal_dropped")
        case .entryTooLarge: (.contentTooLarge, "value_too_large")
        case .leaderTransfer: (.serviceUnavailable, "leader_transfer")
        case .membershipChangeInProgress: (.conflict, "membership_change_in_progress")
        case .invalidMembershipChange: (.conflict, "invalid_membership_change")
        case .notAVoter: (.badRequest, "not_a_voter")
        case .memberExists: (.conflict, "member_exists")
        case .addressInUse: (.conflict, "address_in_use")
        case .joinRefused: (.conflict, "join_refused")
        case .joinUnreachable: (.gatewayTimeout, "join_unreachable")
        case .joinInProgress: (.serviceUnavailable, "join_in_progress")
        case .memberIsPromoting: (.conflict, "member_is_promoting")
        case .memberIsLearner: (.conflict, "member_is_learner")
        case .memberNotFound: (.notFound, "member_not_found")
        case .noTransferTarget: (.conflict, "no_transfer_target")
        case .invalidForward: (.badRequest, "invalid_forward")
        case .internal: (.internalServerError, "internal")
        }
        self.init(status, code: code, error.message)
        outcome = switch error.outcome {
        case .notApplied: "not_applied"
        case .unknown: "unknown"
        }
    }
}
