import Glibc

/// The kernel's view of this process's TCP sockets, read with `getsockopt`, so a test checks
/// the options a socket really has rather than what the code meant to ask for. (SwiftNIO's
/// `.socketOption(.tcp_nodelay)` is `SO_DEBUG` at `SOL_SOCKET`, not `TCP_NODELAY`: as root it
/// silently succeeds, as any other user it fails and the connection never comes up.)
public struct SocketOptions: Equatable, Sendable, CustomStringConvertible {
    public var fd: Int32
    public var localPort: Int
    public var peerPort: Int
    public var tcpNoDelay: Bool
    public var soDebug: Bool

    public var description: String {
        "fd \(fd) \(localPort)->\(peerPort) TCP_NODELAY=\(tcpNoDelay) SO_DEBUG=\(soDebug)"
    }
}

/// Every connected IPv4 TCP socket of this process whose local or peer port is `port`.
public func connectedSockets(port: Int) -> [SocketOptions] {
    guard let directory = opendir("/proc/self/fd") else { return [] }
    defer { closedir(directory) }
    var found: [SocketOptions] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard let fd = Int32(name), let local = socketPort(fd, getsockname), let peer = socketPort(fd, getpeername),
              local == port || peer == port else { continue }
        found.append(SocketOptions(fd: fd, localPort: local, peerPort: peer,
                                   tcpNoDelay: intOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY) != 0,
                                   soDebug: intOption(fd, SOL_SOCKET, SO_DEBUG) != 0))
    }
    return found
}

private func socketPort(_ fd: Int32, _ query: (Int32, UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<socklen_t>?) -> Int32) -> Int? {
    var address = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let result = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { query(fd, $0, &length) }
    }
    guard result == 0, address.sin_family == sa_family_t(AF_INET) else { return nil }
    return Int(UInt16(bigEndian: address.sin_port))
}

private func intOption(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32 {
    var value: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    guard getsockopt(fd, level, name, &value, &length) == 0 else { return -1 }
    return value
}

/// A plain listening socket on 127.0.0.1 (port chosen by the kernel) that accepts and holds
/// connections, for tests that inspect a client's socket.
public final class HoldingListener: @unchecked Sendable {
    public let fd: Int32
    public let port: Int

    public init() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0, "socket: errno \(errno)")
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        precondition(bound == 0 && listen(fd, 16) == 0, "bind/listen: errno \(errno)")
        self.fd = fd
        port = socketPort(fd, getsockname) ?? 0
    }

    deinit { close(fd) }

    /// What the listener's descriptor is now: a diagnostic for a failing test (a descriptor
    /// closed by someone else, or reused for another file, shows here).
    public var state: String {
        var listening: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        let accepting = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0 ? "\(listening)" : "errno \(errno)"
        return "fd \(fd) port now \(socketPort(fd, getsockname).map(String.init) ?? "none") (was \(port)), SO_ACCEPTCONN \(accepting)"
    }
}
