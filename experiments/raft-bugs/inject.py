#!/usr/bin/env python3
"""Applies one deliberate bug to the core for the bug-injection experiment.
Usage: experiments/raft-bugs/inject.py NAME | --list   (undo with: git checkout Sources/)
Run by experiments/run-bugs.sh raft-bugs."""
import sys

SYNC = ("        let configurationBefore = configurations.current\n"
        "        configurations.committedIndex = log.committed\n"
        "        if configurations.current != configurationBefore { configurationChanged() }\n")

BUGS = {
    # §5.4.2: count replicas of an entry from an earlier term.
    "commit-previous-term": [("Sources/KeyperRaft/RawNode+Leader.swift",
        "guard candidate > log.committed, log.matchTerm(candidate, term) else { return false }",
        "guard candidate > log.committed else { return false }")],
    # Figure 2: the vote is not saved in the hard state.
    "forget-vote": [("Sources/KeyperRaft/RawNode+Ready.swift",
        "var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }",
        "var hardState: HardState { HardState(term: term, vote: nil, commit: log.committed) }")],
    # §5.4.1: grant votes without comparing logs.
    "vote-shorter-log": [("Sources/KeyperRaft/RawNode+Step.swift",
        "let grant = listed && canVote && log.isUpToDate(lastIndex: request.lastIndex, lastTerm: request.lastTerm)",
        "let grant = listed && canVote")],
    # §6.4: release reads without a quorum confirming leadership.
    "read-without-heartbeat": [("Sources/KeyperRaft/ReadIndex.swift",
        "        _ = reads.startRound(leader: id)\n",
        "        let round = reads.startRound(leader: id)\n"
        "        for voter in configurations.current.voters { reads.acknowledge(round: round, from: voter) }\n")],
    # §6.4: serve reads before the new leader committed an entry of its term.
    "read-before-commit-in-term": [("Sources/KeyperRaft/ReadIndex.swift",
        "reads.add(context: context, origin: origin, committedInTerm: committedInTerm, commit: log.committed)",
        "reads.add(context: context, origin: origin, committedInTerm: true, commit: log.committed)")],
    # thesis §4.1: a configuration acts only once committed.
    "config-on-commit": [
        ("Sources/KeyperRaft/ConfigurationLog.swift",
         "    var current: Configuration { changes.last?.configuration ?? base }",
         "    var committedIndex: LogIndex = .zero\n"
         "    var current: Configuration { configuration(at: max(committedIndex, baseIndex)) }\n"
         "    var appended: Configuration { changes.last?.configuration ?? base }"),
        ("Sources/KeyperRaft/ConfigurationLog.swift",
         "changes.append((entry.index, current.applying(change)))",
         "changes.append((entry.index, appended.applying(change)))"),
        ("Sources/KeyperRaft/RawNode.swift",
         "    public mutating func tick() {\n", "    public mutating func tick() {\n" + SYNC),
        ("Sources/KeyperRaft/RawNode+Step.swift",
         "        guard message.from != id else { return }\n", "        guard message.from != id else { return }\n" + SYNC),
        ("Sources/KeyperRaft/RawNode+Ready.swift",
         "        var ready = Ready()\n", SYNC + "        var ready = Ready()\n"),
    ],
    # §5.3: a follower appends without checking the entry before the new ones.
    "append-without-prev-check": [("Sources/KeyperRaft/RawNode+Step.swift",
        "guard log.matchTerm(append.prevIndex, append.prevTerm) else {",
        "guard append.prevIndex <= log.lastIndex else {")],
    # thesis §10.2.1: the leader counts entries it has not persisted yet.
    "leader-counts-unpersisted": [("Sources/KeyperRaft/RawNode+Leader.swift",
        "matches.append(voter == id ? log.stableLastIndex : progress[voter]?.match ?? .zero)",
        "matches.append(voter == id ? log.lastIndex : progress[voter]?.match ?? .zero)")],
}

if sys.argv[1:] == ["--list"]:
    print(" ".join(BUGS))
    sys.exit(0)
name = sys.argv[1]
for path, old, new in BUGS[name]:
    text = open(path).read()
    assert text.count(old) == 1, (name, path, text.count(old))
    open(path, "w").write(text.replace(old, new))
print("injected", name)
