import KeyperBase
import NIOHTTP1
import Synchronization

/// Requests to a cluster through any of its nodes (every node serves every route; followers
/// forward what needs the leader). A request goes to the endpoint that last answered; when it
/// cannot be reached, or answers 503 (no leader yet, shutting down), the next one is tried,
/// each once per request.
public final class ClusterEndpoints: Sendable {
    /// `http://host:port` of each node.
    public let urls: [String]
    private let current = Mutex(0)

    /// `text`: comma-separated URLs (`http://127.0.0.1:8080,http://127.0.0.1:8081`).
    public init(parsing text: String) throws {
        let urls = text.split(separator: ",").map { String($0).trimmingCharacters(in: " ") }.filter { !$0.isEmpty }
        guard !urls.isEmpty else { throw HTTPRequestError("no endpoints given") }
        for url in urls where HostPort.parseURL(url + "/") == nil {
            throw HTTPRequestError("not an http://host:port endpoint: \(url)")
        }
        self.urls = urls.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    /// `KEYPER_ENDPOINTS` when set, else a node on this machine's default port.
    public static let defaultText = "http://127.0.0.1:8080"

    /// Sends `method path` (`path` starts with `/`), failing over as described above. Throws
    /// the last endpoint's error when none answered.
    public func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, timeout: Duration = .seconds(10)) async throws -> HTTPResult {
        let start = current.withLock { $0 }
        var lastError: any Error = HTTPRequestError("no endpoint answered")
        var unavailable: HTTPResult?
        for step in 0..<urls.count {
            let index = (start + step) % urls.count
            do {
                let result = try await HTTPRequester.send(method, urls[index] + path, body: body,
                                                          headers: body == nil ? [] : [("Content-Type", "application/json")], timeout: timeout)
                if result.status == 503 {
                    unavailable = result
                    continue
                }
                current.withLock { $0 = index }
                return result
            } catch {
                lastError = error
            }
        }
        if let unavailable { return unavailable }
        throw lastError
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}

extension HTTPResult {
    /// The `code` of a JSON error body, if it has one.
    public var errorCode: String? { jsonString("code") }

    /// The string after `"name":` in a flat JSON body.
    public func jsonString(_ name: String) -> String? {
        after(#""\#(name)":""#).map { String(decoding: $0.prefix { $0 != UInt8(ascii: "\"") }, as: UTF8.self) }
    }

    /// The number after `"name":` in a flat JSON body.
    public func jsonNumber(_ name: String) -> UInt64? {
        after(#""\#(name)":"#).flatMap { UInt64(String(decoding: $0.prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }, as: UTF8.self)) }
    }

    /// The body after the first occurrence of `needle`.
    private func after(_ needle: String) -> ArraySlice<UInt8>? {
        let pattern = Array(needle.utf8)
        guard body.count >= pattern.count else { return nil }
        for start in 0...(body.count - pattern.count) where body[start..<(start + pattern.count)].elementsEqual(pattern) {
            return body[(start + pattern.count)...]
        }
        return nil
    }
}
