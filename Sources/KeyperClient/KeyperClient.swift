import AsyncHTTPClient
import FoundationEssentials
import KeyperBase
import NIOCore
import NIOPosix
import NIOHTTP1
import Synchronization

/// A client of a Keyper cluster, for Swift programs (and the `keyper` command line).
///
/// Give it the HTTP URLs of some or all of the cluster's nodes. Every node serves every
/// request (a follower forwards what needs the leader), so a request goes to the node that last
/// answered; when that node cannot be reached or answers `503` (no leader yet, shutting down),
/// the next one is tried, each once per request. Connections are pooled and kept alive
/// (AsyncHTTPClient).
///
/// ```swift
/// let client = try KeyperClient(endpoints: ["http://10.0.0.1:8080", "http://10.0.0.2:8080"])
/// try await client.put("app/config", value: Array("on".utf8))
/// if let entry = try await client.get("app/config") {
///     print(entry.text ?? "", entry.modRevision)
/// }
/// ```
///
/// Errors the cluster answered are ``KeyperError``s carrying the JSON `code`; a key that does
/// not exist is `nil`, not an error.
public final class KeyperClient: Sendable {
    /// `http://host:port` of each node.
    public let endpoints: [String]
    /// How long one request may take on one node before the next node is tried.
    public let requestTimeout: Duration
    private let http: HTTPClient
    private let current = Mutex(0)

    /// - Parameters:
    ///   - endpoints: URLs such as `http://127.0.0.1:8080`.
    ///   - requestTimeout: per request and node (a write waits up to the cluster's own
    ///     `--request-timeout` for a quorum; keep this longer).
    public init(endpoints: [String], requestTimeout: Duration = .seconds(10)) throws(KeyperError) {
        let cleaned = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }.filter { !$0.isEmpty }
        guard !cleaned.isEmpty else { throw KeyperError(status: 0, code: .invalidEndpoint, message: "no endpoints given") }
        for url in cleaned where HostPort.parseURL(url + "/") == nil {
            throw KeyperError(status: 0, code: .invalidEndpoint, message: "not an http://host:port endpoint: \(url)")
        }
        self.endpoints = cleaned
        self.requestTimeout = requestTimeout
        http = HTTPClient.shared
    }

    /// `text`: comma-separated URLs (`http://127.0.0.1:8080,http://127.0.0.1:8081`).
    public convenience init(endpoints text: String, requestTimeout: Duration = .seconds(10)) throws(KeyperError) {
        try self.init(endpoints: text.split(separator: ",").map { String($0).trimmedASCII }, requestTimeout: requestTimeout)
    }

    /// The endpoint requests go to first (the last one that answered).
    public var preferredEndpoint: String { endpoints[current.withLock { $0 }] }

    // MARK: Transport

    /// One answer: status, headers and body.
    public struct Answer: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: [UInt8]
        /// The node that answered.
        public var endpoint: String

        public var text: String { String(decoding: body, as: UTF8.self) }

        /// The answer as an error, when it is one (`4xx`, `5xx`).
        var error: KeyperError? {
            guard status >= 400 else { return nil }
            let parsed = try? JSONDecoder().decode(ErrorBody.self, from: Data(body))
            return KeyperError(status: status, code: KeyperError.Code(rawValue: parsed?.code ?? "http_\(status)"),
                               message: parsed?.error ?? text, outcome: parsed?.outcome, endpoint: endpoint)
        }
    }

    private struct ErrorBody: Decodable {
        var error: String
        var code: String
        var outcome: String?
    }

    /// Sends a request to the cluster, failing over as described above; the answer whatever
    /// its status (`503` only when every node answered so). `endpoint`: only this node.
    ///
    /// A request that changes something and has no `Idempotency-Key` is sent to a second node
    /// only when the first surely did not act on it: the connection never opened, or a `503`
    /// said `"outcome": "not_applied"`. Otherwise its answer (or an `outcome_unknown` error)
    /// comes back, so a write is never applied twice behind the caller's back.
    public func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = [],
                     timeout: Duration? = nil, endpoint: String? = nil) async throws(KeyperError) -> Answer {
        let order: [String]
        if let endpoint {
            order = [endpoint]
        } else {
            let start = current.withLock { $0 }
            order = endpoints.indices.map { endpoints[(start + $0) % endpoints.count] }
        }
        var unavailable: Answer?
        var failures: [String] = []
        let repeatable = method == .GET || method == .HEAD || headers.contains { $0.0.lowercased() == "idempotency-key" }
        for url in order {
            var request = HTTPClientRequest(url: url + path)
            request.method = method
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let body {
                request.body = .bytes(ByteBuffer(bytes: body))
                if !headers.contains(where: { $0.0.lowercased() == "content-type" }) {
                    request.headers.add(name: "Content-Type", value: "application/json")
                }
            }
            do {
                let response = try await http.execute(request, timeout: .nanoseconds(Int64((timeout ?? requestTimeout).nanoseconds)))
                let bytes = try await response.body.collect(upTo: 1 << 30)
                let answer = Answer(status: Int(response.status.code), headers: response.headers, body: Array(buffer: bytes), endpoint: url)
                if answer.status == 503 && endpoint == nil && (repeatable || answer.error?.outcome == "not_applied") {
                    unavailable = answer
                    continue
                }
                if endpoint == nil, let index = endpoints.firstIndex(of: url) { current.withLock { $0 = index } }
                return answer
            } catch {
                guard repeatable || Self.neverConnected(error) else {
                    throw KeyperError(status: 0, code: .outcomeUnknown, message: "\(url) did not answer (\(error)); the request may have been applied",
                                      outcome: "unknown", endpoint: url)
                }
                failures.append("\(url): \(error)")
            }
        }
        if let unavailable { return unavailable }
        throw KeyperError(status: 0, code: .unreachable, message: "no node answered: " + failures.joined(separator: "; "))
    }

    /// Whether the request surely never reached the node: the connection was not made.
    private static func neverConnected(_ error: any Error) -> Bool {
        if error is NIOConnectionError { return true }
        if let client = error as? HTTPClientError, client == .connectTimeout { return true }
        let text = "\(error)"
        return text.contains("Connection refused") || text.contains("connectTimeout") || text.contains("connect timeout")
    }

    /// ``send(_:_:body:headers:timeout:endpoint:)``, throwing the answer's error if it is one.
    func request(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = [],
                 timeout: Duration? = nil) async throws(KeyperError) -> Answer {
        let answer = try await send(method, path, body: body, headers: headers, timeout: timeout)
        if let error = answer.error { throw error }
        return answer
    }

    func decode<T: Decodable>(_ type: T.Type, from answer: Answer) throws(KeyperError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(answer.body))
        } catch {
            throw KeyperError(status: answer.status, code: .invalidAnswer, message: "\(answer.endpoint) answered what is not a \(type): \(error)",
                              endpoint: answer.endpoint)
        }
    }

    /// `/v1/keys/` and the key, percent-encoded.
    static func keyPath(_ key: String) -> String {
        "/v1/keys/" + KeyPath.encode(Array(key.utf8))
    }

    /// A query component, percent-encoded (`/` may stay: it means nothing there).
    static func query(_ text: String) -> String {
        KeyPath.encode(Array(text.utf8))
    }
}

extension String {
    var trimmedASCII: String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
