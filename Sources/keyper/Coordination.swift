import ArgumentParser
import Dispatch
import KeyperClient
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Options every client command shares.
struct EndpointOptions: ParsableArguments {
    @Option(help: "Comma-separated HTTP URLs of the cluster's nodes (default: $KEYPER_ENDPOINTS, else http://127.0.0.1:8080).")
    var endpoints: String?

    /// `KEYPER_ENDPOINTS` when set, else a node on this machine's default port.
    static let defaultEndpoints = "http://127.0.0.1:8080"

    func cluster() throws -> KeyperClient {
        let text = endpoints ?? getenv("KEYPER_ENDPOINTS").map { String(cString: $0) } ?? Self.defaultEndpoints
        do { return try KeyperClient(endpoints: text) } catch { throw ValidationError("\(error)") }
    }
}

/// Exit codes of the coordination commands, beyond 0 (done) and 1 (error).
enum CoordinationExit {
    /// The lock or leadership was held, then lost (lease expired, key deleted).
    static let lost: Int32 = 3
    /// Not acquired within `--wait`.
    static let notAcquired: Int32 = 4
}

/// Waits for a lock or an election's leadership, retrying through `endpoints` until it is
/// held or `wait` runs out (nil: forever). Returns the holder's answer.
func campaign(_ path: String, value: [UInt8], lease: LeaseSession, wait: Duration?, endpoints: KeyperClient,
              onWaiting: @Sendable (KeyperClient.Answer) -> Void = { _ in }) async throws -> KeyperClient.Answer? {
    let deadline = wait.map { ContinuousClock.now + $0 }
    while true {
        let remaining = deadline.map { max(.zero, $0 - .now) } ?? .seconds(30)
        let milliseconds = min(remaining, .seconds(30)).components.seconds * 1000 + min(remaining, .seconds(30)).components.attoseconds / 1_000_000_000_000_000
        let answer: KeyperClient.Answer
        do {
            // keep_place: a wait that ends keeps this lease's place in line for the next request.
            answer = try await endpoints.send(.POST, "\(path)?lease=\(lease.id)&wait=\(milliseconds)ms&keep_place=true", body: value,
                                              timeout: remaining + .seconds(15))
        } catch {
            if let deadline, ContinuousClock.now >= deadline { return nil }
            try await Task.sleep(for: .milliseconds(300))
            continue
        }
        switch (answer.status, answer.errorCode) {
        case (200, _): return answer
        case (409, "lock_held"), (409, "election_has_leader"):
            onWaiting(answer)
            if let deadline, ContinuousClock.now >= deadline { return nil }
        case (503, _), (502, _), (504, _):
            if let deadline, ContinuousClock.now >= deadline { return nil }
            try await Task.sleep(for: .milliseconds(300))
        default:
            throw HTTPRequestError("\(answer.status) \(answer.text)")
        }
    }
}

/// `keyper lock NAME -- command args…`
struct Lock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command while holding a cluster-wide lock.",
        discussion: """
            Takes the lock NAME (waiting in line), runs the command with KEYPER_LOCK_REVISION (the
            fencing token: larger for every later holder), KEYPER_LOCK_KEY and KEYPER_LEASE_ID in its
            environment, keeps the lock's lease alive meanwhile, and releases the lock when the command
            exits, with the command's exit status. If the lock is lost (the lease expired: this process
            was stopped, or cut off from the cluster for a TTL), the command gets SIGTERM (SIGKILL 5 s
            later) and keyper exits 3. Not acquired within --wait: exit 4.
              keyper lock nightly-backup -- ./backup.sh
            """)

    @OptionGroup var cluster: EndpointOptions

    @Option(help: "The lease's TTL: how long the lock outlives this process if it dies.")
    var ttl = "10s"

    @Option(help: "Give up after this long without the lock (default: wait for ever).")
    var wait: String?

    @Argument(help: "The lock's name: letters, digits, '.', '_', '-' or ':'.")
    var name: String

    @Argument(parsing: .postTerminator, help: "The command to run, after --.")
    var command: [String]

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("give the command to run after --: keyper lock NAME -- command args…") }
        if let wait, waitMilliseconds(wait) == nil { throw ValidationError("--wait must look like 0, 500ms, 30s or 5m") }
    }

    /// `--wait`: a duration, or 0 (try once).
    private func waitMilliseconds(_ text: String) -> Int? {
        text == "0" ? 0 : Keyper.milliseconds(text)
    }

    func run() async throws {
        let endpoints = try cluster.cluster()
        let lease = try await LeaseSession.grant(ttl: ttl, endpoints: endpoints)
        lease.keepAlive { _ in }
        let path = "/v1/locks/\(name)"
        guard let held = try await campaign(path, value: [], lease: lease, wait: wait.map { .milliseconds(waitMilliseconds($0)!) },
                                            endpoints: endpoints) else {
            // Leaving the line: the revoke deletes the candidate key the waits kept.
            await lease.revoke()
            printError("keyper lock: \(name) not acquired within \(wait ?? "")")
            throw ExitCode(CoordinationExit.notAcquired)
        }
        let revision = held.jsonNumber("revision") ?? 0
        let child = try ChildProcess(arguments: command, environment: [
            "KEYPER_LOCK_REVISION": String(revision), "KEYPER_LOCK_KEY": held.jsonString("key") ?? "",
            "KEYPER_LEASE_ID": String(lease.id),
        ])
        let lost = Mutex<String?>(nil)
        lease.stop()
        lease.keepAlive(check: {
            guard let holder = try? await endpoints.send(.GET, path) else { return nil }
            if holder.status == 404 || (holder.status == 200 && holder.jsonNumber("lease") != lease.id) {
                return "the lock's key was deleted"
            }
            return nil
        }, onLost: { reason in
            lost.withLock { $0 = reason }
            child.signal(SIGTERM)
            DispatchQueue.global().asyncAfter(deadline: .now() + 5) { child.signal(SIGKILL) }
        })
        // SIGINT from a terminal reaches the command by itself: this process only ignores it,
        // so it keeps the lock alive until the command has exited.
        signal(SIGINT, SIG_IGN)
        let forwarding = SignalForwarding(to: child, signals: [SIGTERM, SIGHUP])
        let status = await child.wait()
        forwarding.stop()
        await lease.revoke()
        if let reason = lost.withLock({ $0 }) {
            printError("keyper lock: lost the lock \(name) while the command ran: \(reason)")
            throw ExitCode(CoordinationExit.lost)
        }
        throw ExitCode(status)
    }
}

/// `keyper elect NAME --value V`
struct Elect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Campaign in a leader election, or watch who leads.",
        discussion: """
            Joins the election NAME with --value, prints each change of leader as it sees it
            ("leader <value> lease <id> revision <r>"), and "elected" once this process leads; then
            keeps leading until stopped (SIGINT/SIGTERM resigns, exit 0) or until the lease is lost
            (exit 3). With --observe, only prints the changes of leader.
              keyper elect scheduler --value "$(hostname)"
            """)

    @OptionGroup var cluster: EndpointOptions

    @Option(help: "The lease's TTL: how long leadership outlives this process if it dies.")
    var ttl = "10s"

    @Option(help: "This candidate's value (what the others see as the leader).")
    var value: String?

    @Flag(help: "Print the changes of leader without campaigning.")
    var observe = false

    @Argument(help: "The election's name: letters, digits, '.', '_', '-' or ':'.")
    var name: String

    func validate() throws {
        guard observe != (value != nil) else { throw ValidationError("give --value to campaign, or --observe to watch") }
    }

    func run() async throws {
        let endpoints = try cluster.cluster()
        let path = "/v1/elections/\(name)"
        let observer = Task {
            var last: String?
            while !Task.isCancelled {
                if let answer = try? await endpoints.send(.GET, path) {
                    let now = answer.status == 200
                        ? "leader \(answer.jsonString("value") ?? "") lease \(answer.jsonNumber("lease") ?? 0) revision \(answer.jsonNumber("revision") ?? 0)"
                        : answer.errorCode == "no_election_leader" ? "no leader" : nil
                    if let now, now != last {
                        printLine(now)
                        last = now
                    }
                }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        defer { observer.cancel() }
        guard let value else {
            await waitForSignal([SIGINT, SIGTERM])
            return
        }
        let lease = try await LeaseSession.grant(ttl: ttl, endpoints: endpoints)
        let lost = AsyncSignal()
        let leading = Mutex(false)
        lease.keepAlive(check: {
            guard leading.withLock({ $0 }) else { return nil }
            guard let leader = try? await endpoints.send(.GET, path), leader.status == 200 || leader.status == 404 else { return nil }
            return leader.jsonNumber("lease") == lease.id ? nil : "another candidate leads"
        }, onLost: { reason in lost.fire(reason) })
        let stop = Task { await waitForSignal([SIGINT, SIGTERM]); lost.fire(nil) }
        defer { stop.cancel() }
        // Campaign until elected (or stopped, or the lease lost while in line).
        let campaignTask = Task { try await campaign(path, value: Array(value.utf8), lease: lease, wait: nil, endpoints: endpoints) }
        let elected = Task {
            do {
                if let held = try await campaignTask.value {
                    leading.withLock { $0 = true }
                    printLine("elected revision \(held.jsonNumber("revision") ?? 0)")
                }
            } catch is CancellationError {
            } catch {
                lost.fire("the campaign failed: \(error)")
            }
        }
        let reason = await lost.wait()
        campaignTask.cancel()
        elected.cancel()
        _ = try? await endpoints.send(.DELETE, "\(path)?lease=\(lease.id)")
        await lease.revoke()
        if let reason {
            printError("keyper elect: lost the election \(name): \(reason)")
            throw ExitCode(CoordinationExit.lost)
        }
    }
}

/// Fires once; waiters get the value it fired with.
final class AsyncSignal: Sendable {
    private let state = Mutex<(fired: Bool, value: String?, waiters: [CheckedContinuation<String?, Never>])>((false, nil, []))

    func fire(_ value: String?) {
        let waiters = state.withLock { state -> [CheckedContinuation<String?, Never>] in
            guard !state.fired else { return [] }
            state.fired = true
            state.value = value
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    func wait() async -> String? {
        await withCheckedContinuation { continuation in
            let fired = state.withLock { state -> (Bool, String?) in
                if state.fired { return (true, state.value) }
                state.waiters.append(continuation)
                return (false, nil)
            }
            if fired.0 { continuation.resume(returning: fired.1) }
        }
    }
}

/// Returns when one of `signals` arrives (they no longer end the process meanwhile).
func waitForSignal(_ signals: [Int32]) async {
    let fired = AsyncSignal()
    let sources = signals.map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { fired.fire(nil) }
        source.resume()
        return source
    }
    _ = await fired.wait()
    for source in sources { source.cancel() }
}

/// Passes signals this process gets on to a child (SIGINT needs no forwarding: a terminal
/// sends it to the whole foreground group).
final class SignalForwarding: Sendable {
    private let sources: Mutex<[any DispatchSourceSignal]>

    init(to child: ChildProcess, signals: [Int32]) {
        sources = Mutex(signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { child.signal(number) }
            source.resume()
            return source
        })
    }

    func stop() {
        sources.withLock { sources in
            for source in sources { source.cancel() }
        }
    }
}

/// A command run with `posix_spawnp`, with extra environment variables.
struct ChildProcess: Sendable {
    let pid: pid_t

    init(arguments: [String], environment extra: [String: String]) throws {
        var environment: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let name = text.split(separator: "=", maxSplits: 1).first, extra[String(name)] == nil { environment.append(text) }
            entry += 1
        }
        environment += extra.map { "\($0.key)=\($0.value)" }
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv + envp { free(pointer) }
        }
        // The child starts with no signal blocked and the usual dispositions, whatever this
        // process's threads block or ignore (else a SIGTERM to it would wait, blocked).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for number in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, number) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, arguments[0], nil, &attributes, argv, envp)
        guard result == 0 else {
            throw ValidationError("cannot run \(arguments[0]): \(String(cString: strerror(result)))")
        }
        self.pid = pid
    }

    func signal(_ number: Int32) {
        kill(pid, number)
    }

    /// The exit status: the code it exited with, or 128 + the signal that ended it.
    func wait() async -> Int32 {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                let signal = status & 0x7f
                continuation.resume(returning: signal == 0 ? (status >> 8) & 0xff : 128 + signal)
            }
        }
    }
}

/// Writes a line to standard error.
func printError(_ text: String) {
    writeLine(text, to: 2)
}

/// Writes a line to standard output at once (unbuffered: a reader of a pipe or file sees
/// each change as it happens, also if this process is then killed).
func printLine(_ text: String) {
    writeLine(text, to: 1)
}

private func writeLine(_ text: String, to descriptor: Int32) {
    let line = Array((text + "\n").utf8)
    line.withUnsafeBytes { _ = write(descriptor, $0.baseAddress, $0.count) }
}
