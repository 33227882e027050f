import KeyperVerify

/// Ports for servers a test stops and restarts on the same port: outside the kernel's
/// ephemeral range, so no outgoing connection (nor its TIME_WAIT) can hold one meanwhile.
public func freePorts(_ count: Int) -> [Int] {
    LocalCluster.freePorts(count)
}
