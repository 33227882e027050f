#!/bin/sh
# Bug-injection experiment: each bug is applied, the simulator runs SEEDS seeds, the bug is removed.
# Usage: experiments/raft-bugs/run-bugs.sh [SEEDS [BUG...]]
# It rewrites Sources/ and restores it with git: it refuses to run with uncommitted changes there.
SEEDS=${1:-1000}
[ $# -gt 0 ] && shift
BUGS=${*:-commit-previous-term forget-vote vote-shorter-log read-without-heartbeat read-before-commit-in-term config-on-commit leader-counts-unpersisted append-without-prev-check}
cd "$(dirname "$0")/../.."
if [ -n "$(git status --porcelain Sources/)" ]; then
    echo "Sources/ has uncommitted changes; commit or stash them first" >&2
    exit 2
fi
for bug in $BUGS; do
    git checkout -q Sources/
    python3 experiments/raft-bugs/inject.py "$bug" >/dev/null
    mkdir -p experiments/raft-bugs/bugs && git diff Sources/ > "experiments/raft-bugs/bugs/$bug.patch"
    flock /tmp/keyper-build.lock swift build -c release --product raft-sim 2>&1 | grep -E "error" && { echo "$bug: build failed"; continue; }
    out=$(./.build/release/raft-sim --seeds "$SEEDS" 2>&1)
    caught=$(echo "$out" | grep -c VIOLATION)
    crashed=$(echo "$out" | grep -c "Fatal error")
    first=$(echo "$out" | grep VIOLATION | head -1 | sed 's/replay.*//')
    summary=$(echo "$out" | tail -1)
    echo "$bug: caught=$caught/$SEEDS crashed=$crashed first: $first"
    echo "   $summary"
done
git checkout -q Sources/
flock /tmp/keyper-build.lock swift build -c release --product raft-sim 2>&1 | grep -E "error"
