import HTTPTypes

/// Every route of the HTTP API, once: what registers the handlers, the `Allow` header of a
/// 405 and the route label of the request metrics all come from here.
enum Route: CaseIterable, Sendable {
    case keys
    case key
    case status
    case health
    case metrics
    case join
    case member
    case leaderTransfer
    case debugFaults

    /// The path, with `{name}` for a parameter (also the metric label: a fixed set, so keys
    /// and node ids never become label values).
    var pattern: String {
        switch self {
        case .keys: "/v1/keys"
        case .key: "/v1/keys/{key}"
        case .status: "/v1/status"
        case .health: "/v1/health"
        case .metrics: "/metrics"
        case .join: "/v1/join"
        case .member: "/v1/members/{id}"
        case .leaderTransfer: "/v1/leader/transfer"
        case .debugFaults: "/v1/debug/faults"
        }
    }

    /// The methods it answers (`HEAD` wherever `GET` is).
    var methods: [HTTPRequest.Method] {
        switch self {
        case .status, .health, .metrics: [.get, .head]
        case .keys: [.get, .head, .delete]
        case .key: [.get, .head, .put, .delete]
        case .join, .leaderTransfer: [.post]
        case .member: [.delete]
        case .debugFaults: [.post, .delete]
        }
    }

    /// The route a request path falls under; nil for an unknown path (404 rather than 405).
    /// Keys are everything after `/v1/keys/`, slashes included; a member id is one segment.
    init?(path: String) {
        if let route = Self.allCases.first(where: { !$0.pattern.contains("{") && $0.pattern == path }) {
            self = route
        } else if path.hasPrefix("/v1/keys/") {
            self = .key
        } else if path.hasPrefix("/v1/members/"), !path.dropFirst("/v1/members/".count).contains("/") {
            self = .member
        } else {
            return nil
        }
    }
}
