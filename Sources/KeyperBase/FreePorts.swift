#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// TCP ports on 127.0.0.1 free right now, picked at random from `range` (20000..<30000 unless a
/// caller keeps its own) and checked by binding them.
///
/// Not from the kernel's ephemeral range (where port 0 binds and outgoing connections get their
/// ports): a node that stopped and restarts on its port must never find it taken by an outgoing
/// connection. A small race remains until the caller binds.
public func freePorts(_ count: Int, in range: Range<Int> = 20_000..<30_000) -> [Int] {
    var ports: [Int] = []
    var attempts = 0
    while ports.count < count && attempts < 10_000 {
        attempts += 1
        let port = Int.random(in: range)
        guard !ports.contains(port) else { continue }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(fd, raw, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        close(fd)
        if bound { ports.append(port) }
    }
    return ports
}
