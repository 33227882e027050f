#!/usr/bin/env python3
"""Applies one deliberate bug to the replica (the driver that ships) for the bug-injection
experiment of the cluster simulation.
Usage: experiments/replica-bugs/inject.py NAME | --list   (undo with: git checkout Sources/)
Run by experiments/run-bugs.sh replica-bugs."""
import sys

BUGS = {
    # Apply beyond the durable log: a follower skips the fsync of its appends (an "optimisation"),
    # acknowledges and applies entries a crash can take back.
    "apply-beyond-durable": [("Sources/KeyperReplica/Replica.swift",
        "        let sync = ready.mustSync\n",
        "        let sync = ready.mustSync && raw.role == .leader\n")],
    # Release reads before their round is confirmed: a node that believes it leads serves reads
    # from its state machine at once, without the heartbeat round that proves it still leads.
    "read-released-unconfirmed": [("Sources/KeyperReplica/Replica.swift",
        "        guard clients.reads.canStartRound, raw.leader != nil else { return }\n",
        "        guard clients.reads.canStartRound, raw.leader != nil else { return }\n"
        "        if raw.role == .leader {\n"
        "            for reader in clients.reads.takeWaiting() { reader.succeed() }\n"
        "            return\n"
        "        }\n")],
    # A cache fill racing an apply: a value read before a batch was applied fills the cache
    # after it, hiding the batch's write from later reads.
    "cache-fill-races-apply": [("Sources/KeyperStorage/StateMachine/ReadCache.swift",
        "        guard version == self.version, !applying else { return }\n",
        "        guard !applying else { return }\n")],
    # A rejoined wiped voter votes: the runtime ignores incarnations, so a node that lost its
    # disk answers (and is counted) as the member that held the log.
    "wiped-voter-votes": [("Sources/KeyperReplica/Replica+Membership.swift",
        "    func incarnationsMatch(_ peer: FrameOrigin, counted: Bool) -> Bool {\n",
        "    func incarnationsMatch(_ peer: FrameOrigin, counted: Bool) -> Bool {\n        if peer.nodeID != \"\" { return true }\n")],
    # A read round answered by a previous run's response: round numbers restart at 1 on every
    # start, so a late answer to the old process's round releases the new one's.
    "stale-round-answer": [("Sources/KeyperReplica/Replica.swift",
        "ReadBarrier(firstRound: random.next() >> 1 | 1)",
        "ReadBarrier(firstRound: 1)")],
    # A waiter kind left out on close: the read round in flight is dropped, never answered.
    "close-forgets-read-rounds": [("Sources/KeyperReplica/ReadBarrier.swift",
        "        return waiting + (inFlight?.readers ?? []) + confirmed.flatMap(\\.readers)\n",
        "        return waiting + confirmed.flatMap(\\.readers)\n")],
}

if sys.argv[1:] == ["--list"]:
    print(" ".join(BUGS))
    sys.exit(0)
name = sys.argv[1]
for path, old, new in BUGS[name]:
    text = open(path).read()
    if text.count(old) != 1:
        sys.exit(f"{name}: expected exactly one match in {path}")
    open(path, "w").write(text.replace(old, new))
print(f"injected {name}")
