#!/bin/sh
# Bug-injection experiment for the cluster simulation: each bug is applied to the replica, the
# simulator runs SEEDS seeds of the shipped replica, the bug is removed.
# Usage: experiments/replica-bugs/run-bugs.sh [SEEDS [BUG...]]
# It rewrites Sources/ and restores it with git: it refuses to run with uncommitted changes there.
SEEDS=${1:-1000}
[ $# -gt 0 ] && shift
BUGS=${*:-apply-beyond-durable read-released-unconfirmed cache-fill-races-apply wiped-voter-votes stale-round-answer close-forgets-read-rounds}
cd "$(dirname "$0")/../.."
if [ -n "$(git status --porcelain Sources/)" ]; then
    echo "Sources/ has uncommitted changes; commit or stash them first" >&2
    exit 2
fi
for bug in $BUGS; do
    git checkout -q Sources/
    python3 experiments/replica-bugs/inject.py "$bug" >/dev/null || { echo "$bug: does not apply"; continue; }
    mkdir -p experiments/replica-bugs/bugs && git diff Sources/ > "experiments/replica-bugs/bugs/$bug.patch"
    flock /tmp/keyper-build.lock swift build -c release --product raft-sim 2>&1 | grep -E "error:" && { echo "$bug: build failed"; continue; }
    out=$(./.build/release/raft-sim cluster --seeds "$SEEDS" 2>&1)
    caught=$(echo "$out" | grep -c VIOLATION)
    crashed=$(echo "$out" | grep -c "Fatal error")
    first=$(echo "$out" | grep VIOLATION | head -1 | sed 's/; replay.*//' | cut -c1-200)
    echo "$bug: caught=$caught/$SEEDS crashed=$crashed first: $first"
    echo "   $(echo "$out" | tail -1)"
done
git checkout -q Sources/
flock /tmp/keyper-build.lock swift build -c release --product raft-sim 2>&1 | grep -E "error:"
