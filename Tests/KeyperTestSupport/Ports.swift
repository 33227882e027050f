/// Ports for servers a test stops and restarts on the same port, outside the kernel's
/// ephemeral range so no outgoing connection (nor its TIME_WAIT) can hold one meanwhile.
/// Tests that restart servers draw from a range of their own, so that processes started
/// by other tests running in parallel (which use 20000..<30000) never take a port while
/// its owner is down.
public enum TestPorts {
    /// Real processes (process tests, `keyper verify`'s local clusters).
    public static let processes = 20_000..<30_000
    /// In-process Raft nodes.
    public static let inProcessNodes = 10_000..<15_000
    /// Transport tests.
    public static let transport = 15_000..<20_000
    /// Suites of the command-line tools (backups, client commands, configuration): each its
    /// own, apart from the processes' range, so a port one checked free is not taken by
    /// another suite running at the same time. Below the kernel's ephemeral range (32768 on).
    public static let backups = 31_000..<31_500
    public static let clientCommands = 31_500..<32_000
    public static let configuration = 32_000..<32_500
}
