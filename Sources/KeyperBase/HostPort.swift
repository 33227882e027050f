/// A host and a port, the one address type of every layer: `127.0.0.1:8080`, `localhost:8080`,
/// `[::1]:8080` (an IPv6 host is always bracketed), and, for an address to listen on, `:8080`
/// (every interface).
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses an address to dial: a host and a port in 1...65535. With `listening`, also an
    /// empty host (every interface: `0.0.0.0`) and port 0 (any free port).
    public init?(parsing text: some StringProtocol, listening: Bool = false) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (listening ? 0 : 1)...65_535 ~= port else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
            guard !host.isEmpty else { return nil }
        } else if host.contains(":") {
            return nil  // an IPv6 address must be bracketed
        }
        guard !host.isEmpty || listening else { return nil }
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
    }

    /// `http://host:port/path` (the path may be empty): the address to dial and the path.
    public static func parseURL(_ url: String) -> (address: HostPort, path: String)? {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" }
        guard let address = HostPort(parsing: authority) else { return nil }
        let path = rest.dropFirst(authority.count)
        return (address, path.isEmpty ? "/" : String(path))
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// A host other machines (and this one) can dial: a wildcard listen address is reachable at
    /// least on loopback.
    public var advertisableHost: String {
        host == "0.0.0.0" || host == "::" || host.isEmpty ? "127.0.0.1" : host
    }

    /// The address others are told for a listener bound at this address on `port`.
    public func advertised(port: Int? = nil) -> HostPort {
        HostPort(host: advertisableHost, port: port ?? self.port)
    }
}
