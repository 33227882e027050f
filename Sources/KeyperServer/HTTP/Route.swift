import HTTPTypes

/// Every route of the HTTP API, once: what registers the handlers, the `Allow` header of a
/// 405 and the route label of the request metrics all come from here.
enum Route: CaseIterable, Sendable {
    case keys
    case key
    case status
    case health
    case live
    case ready
    case metrics
    case join
    case member
    case leaderTransfer
    case transaction
    case watch
    case leases
    case lease
    case leaseKeepAlive
    case lock
    case election
    case snapshot
    case statusPage
    case cluster
    case debugFaults

    /// The path, with `{name}` for a parameter (also the metric label: a fixed set, so keys
    /// and node ids never become label values).
    var pattern: String {
        switch self {
        case .keys: "/v1/keys"
        case .key: "/v1/keys/{key}"
        case .status: "/v1/status"
        case .health: "/v1/health"
        case .live: "/livez"
        case .ready: "/readyz"
        case .metrics: "/metrics"
        case .join: "/v1/join"
        case .member: "/v1/members/{id}"
        case .leaderTransfer: "/v1/leader/transfer"
        case .transaction: "/v1/txn"
        case .watch: "/v1/watch"
        case .leases: "/v1/leases"
        case .lease: "/v1/leases/{id}"
        case .leaseKeepAlive: "/v1/leases/{id}/keepalive"
        case .lock: "/v1/locks/{name}"
        case .election: "/v1/elections/{name}"
        case .snapshot: "/v1/snapshot"
        case .statusPage: "/"
        case .cluster: "/v1/cluster"
        case .debugFaults: "/v1/debug/faults"
        }
    }

    /// The methods it answers (`HEAD` wherever `GET` is).
    var methods: [HTTPRequest.Method] {
        switch self {
        case .status, .health, .metrics, .live, .ready: [.get, .head]
        case .watch, .snapshot, .statusPage, .cluster: [.get, .head]
        case .keys: [.get, .head, .delete]
        case .key: [.get, .head, .put, .delete]
        case .join, .leaderTransfer, .transaction: [.post]
        case .member: [.delete]
        case .leases: [.get, .head, .post]
        case .lease: [.get, .head, .delete]
        case .leaseKeepAlive: [.post]
        case .lock: [.get, .head, .post, .delete]
        case .election: [.get, .head, .post, .put, .delete]
        case .debugFaults: [.post, .delete]
        }
    }

    /// The route a request path falls under; nil for an unknown path (404 rather than 405).
    /// Keys are everything after `/v1/keys/`, slashes included; a member or lease id is one
    /// segment.
    /// Runs twice per request, so it compares bytes: a character-wise scan of every pattern
    /// was 2–3% of a leader's CPU under reads.
    init?(path: String) {
        let bytes = path.utf8
        if bytes.starts(with: "/v1/keys/".utf8) {
            self = .key
        } else if let route = Self.fixed[path] {
            self = route
        } else if bytes.starts(with: "/v1/members/".utf8), !bytes.dropFirst("/v1/members/".utf8.count).contains(UInt8(ascii: "/")) {
            self = .member
        } else if let (route, rest) = Self.named.first(where: { bytes.starts(with: $0.prefix.utf8) }).map({ ($0.route, bytes.dropFirst($0.prefix.utf8.count)) }),
                  !rest.isEmpty, !rest.contains(UInt8(ascii: "/")) {
            self = route
        } else if bytes.starts(with: "/v1/leases/".utf8) {
            let rest = bytes.dropFirst("/v1/leases/".utf8.count)
            let segments = rest.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            switch segments.count {
            case 1 where !rest.isEmpty: self = .lease
            case 2 where !segments[0].isEmpty && segments[1].elementsEqual("keepalive".utf8): self = .leaseKeepAlive
            default: return nil
            }
        } else {
            return nil
        }
    }

    /// Routes whose last segment is a name.
    private static let named: [(prefix: String, route: Route)] = [("/v1/locks/", .lock), ("/v1/elections/", .election)]

    /// The routes without a parameter, by path.
    private static let fixed: [String: Route] = Dictionary(
        uniqueKeysWithValues: allCases.filter { !$0.pattern.utf8.contains(UInt8(ascii: "{")) }.map { ($0.pattern, $0) })
}
