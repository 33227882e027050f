import KeyperBase
import KeyperClient

#if canImport(Glibc)
import Glibc
#endif

/// Real `keyper` processes on loopback for `keyper verify --local-cluster N`: started, killed,
/// paused and restarted by the nemesis. Every process it starts, it stops.
public final class LocalCluster: @unchecked Sendable {
    struct Node {
        var id: String
        var httpPort: Int
        var raftPort: Int
        var arguments: [String]
        var pid: pid_t = 0
        var paused = false
    }

    let binary: String
    let directory: String
    /// The nodes run as this user and group (through setpriv), as a service would.
    let account: Account?
    private(set) var nodes: [Node] = []

    /// An unprivileged account to run nodes as: `user` (its primary group) or `user:group`.
    public struct Account: Sendable {
        public var user: String
        public var group: String
        var uid: uid_t
        var gid: gid_t

        public init(parsing text: String) throws {
            let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
            guard let user = parts.first, let password = getpwnam(user) else { throw VerifyError("no such user: \(text)") }
            self.user = user
            uid = password.pointee.pw_uid
            if parts.count == 2 {
                guard let entry = getgrnam(parts[1]) else { throw VerifyError("no such group: \(parts[1])") }
                gid = entry.pointee.gr_gid
                group = parts[1]
            } else {
                gid = password.pointee.pw_gid
                guard let entry = getgrgid(gid) else { throw VerifyError("user \(user) has no primary group") }
                group = String(cString: entry.pointee.gr_name)
            }
            guard geteuid() == 0 else { throw VerifyError("--run-as needs root (to start nodes as \(user))") }
        }
    }

    static let setpriv = "/usr/bin/setpriv"

    init(binary: String, directory: String, size: Int, account: Account? = nil) {
        self.binary = binary
        self.directory = directory
        self.account = account
        let ports = freePorts(size * 2)
        for index in 0..<size {
            let id = "node\(index + 1)"
            var arguments = [
                "--data-dir", "\(directory)/\(id)", "--node-id", id, "--http-addr", "127.0.0.1:\(ports[index])",
                "--enable-raft", "--raft-addr", "127.0.0.1:\(ports[size + index])", "--enable-fault-injection",
                "--tick-interval", "50ms", "--election-timeout", "500ms", "--heartbeat-interval", "50ms",
                "--request-timeout", "2s", "--snapshot-entries", "500", "--snapshot-catch-up-entries", "50", "--log-level", "notice",
            ]
            if index > 0 { arguments += ["--join", "http://127.0.0.1:\(ports[0])"] }
            nodes.append(Node(id: id, httpPort: ports[index], raftPort: ports[size + index], arguments: arguments))
        }
    }

    var endpoints: [String] { nodes.map { "http://127.0.0.1:\($0.httpPort)" } }

    func start(_ index: Int) throws {
        let log = "\(directory)/\(nodes[index].id).log"
        var path = binary
        var arguments = nodes[index].arguments
        if let account {
            // The account owns its data directory and can reach it; the verifier keeps the logs.
            let data = "\(directory)/\(nodes[index].id)"
            chmod(directory, 0o755)
            mkdir(data, 0o750)
            chown(data, account.uid, account.gid)
            path = Self.setpriv
            arguments = ["--reuid=\(account.user)", "--regid=\(account.group)", "--clear-groups", "--", binary] + arguments
        }
        let pid = try Self.spawn(path, arguments: arguments, logPath: log)
        nodes[index].pid = pid
        nodes[index].paused = false
    }

    func kill(_ index: Int) {
        guard nodes[index].pid > 0 else { return }
        Glibc.kill(nodes[index].pid, SIGKILL)
        var status: Int32 = 0
        waitpid(nodes[index].pid, &status, 0)
        nodes[index].pid = 0
    }

    func pause(_ index: Int) {
        guard nodes[index].pid > 0 else { return }
        Glibc.kill(nodes[index].pid, SIGSTOP)
        nodes[index].paused = true
    }

    func resume(_ index: Int) {
        guard nodes[index].pid > 0 else { return }
        Glibc.kill(nodes[index].pid, SIGCONT)
        nodes[index].paused = false
    }

    /// Stops every process this cluster started (a paused one is resumed so it can die).
    func stopAll() {
        for index in nodes.indices where nodes[index].pid > 0 {
            if nodes[index].paused { resume(index) }
            kill(index)
        }
    }

    // MARK: Processes

    static func spawn(_ path: String, arguments: [String], logPath: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else { throw VerifyError("cannot start \(path): \(String(cString: strerror(rc)))") }
        return pid
    }
}

public struct VerifyError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
