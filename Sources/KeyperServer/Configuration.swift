import Logging

/// A host and port as given on the command line: `:8080` (all interfaces), `127.0.0.1:8080`,
/// `localhost:8080`, `[::1]:8080`.
public struct ListenAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses the prototype's `--http-addr` form. An empty host means every interface.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        guard let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else { return nil }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") {
            return nil  // an IPv6 address must be bracketed
        }
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Everything a node needs to start, validated once (``validate()``).
public struct NodeConfiguration: Sendable {
    public var nodeID: String = "node1"
    public var dataDirectory: String = "./keyper-data"
    public var httpAddress = ListenAddress(host: "0.0.0.0", port: 8080)
    public var keyBytesMax = 4 * 1024
    public var valueBytesMax = 1024 * 1024
    /// Most keys one listing returns, whatever `limit` asks.
    public var listLimitMax = 1_000
    /// Writes waiting for the next group commit beyond which new writes are refused (503).
    public var pendingWritesMax = 10_000
    public var logLevel: Logger.Level = .info

    public init() {}

    /// Rejects values that would make the node misbehave, with a message naming the flag.
    public func validate() throws(ConfigurationError) {
        guard !nodeID.isEmpty, nodeID.utf8.count <= 64,
              nodeID.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") }) else {
            throw ConfigurationError("--node-id must be 1-64 printable ASCII characters without spaces or '/' (got \"\(nodeID)\")")
        }
        guard !dataDirectory.isEmpty else { throw ConfigurationError("--data-dir must not be empty") }
        guard keyBytesMax >= 1 && keyBytesMax <= 64 * 1024 else {
            throw ConfigurationError("--max-key-bytes must be between 1 and 65536 (got \(keyBytesMax))")
        }
        guard valueBytesMax >= 0 && valueBytesMax <= 64 * 1024 * 1024 else {
            throw ConfigurationError("--max-value-bytes must be between 0 and 67108864 (got \(valueBytesMax))")
        }
        guard listLimitMax >= 1, pendingWritesMax >= 1 else { throw ConfigurationError("limits must be positive") }
    }
}

public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
