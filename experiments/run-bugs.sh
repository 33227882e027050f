#!/bin/sh
# Bug-injection experiment: each bug of DIR/inject.py is applied, the cluster simulation (the
# shipped replica over the real WAL and state machine) runs SEEDS seeds, the bug is removed.
# Usage: experiments/run-bugs.sh raft-bugs|replica-bugs [SEEDS [BUG...]]
#   raft-bugs: bugs in the Raft core; replica-bugs: bugs in the replica that drives it.
# It rewrites Sources/ and restores it with git: it refuses to run with uncommitted changes there.
DIR=${1:?usage: experiments/run-bugs.sh raft-bugs|replica-bugs [SEEDS [BUG...]]}
shift
SEEDS=${1:-1000}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."
BUGS=${*:-$(python3 "experiments/$DIR/inject.py" --list)}
if [ -n "$(git status --porcelain Sources/)" ]; then
    echo "Sources/ has uncommitted changes; commit or stash them first" >&2
    exit 2
fi
echo "commit $(git rev-parse --short HEAD), $SEEDS seeds from 0"
for bug in $BUGS; do
    git checkout -q Sources/
    python3 "experiments/$DIR/inject.py" "$bug" >/dev/null || { echo "$bug: does not apply"; continue; }
    mkdir -p "experiments/$DIR/bugs" && git diff Sources/ > "experiments/$DIR/bugs/$bug.patch"
    flock /tmp/keyper-build.lock swift build -c release --product raft-sim 2>&1 | grep -E "error:" && { echo "$bug: build failed"; continue; }
    # A precondition failing under the bug stops the process: that seed counts as caught (an
    # assertion of the replica or the core found it) and the run goes on from the next seed.
    start=0; caught=0; crashed=0; first=""; summary=""
    while [ "$start" -lt "$SEEDS" ]; do
        out=$(./.build/release/raft-sim --start "$start" --seeds $((SEEDS - start)) --progress 2>&1)
        caught=$((caught + $(echo "$out" | grep -c VIOLATION)))
        [ -z "$first" ] && first=$(echo "$out" | grep VIOLATION | head -1 | sed 's/; replay.*//' | cut -c1-220)
        if echo "$out" | grep -q "^cluster seeds="; then
            summary=$(echo "$out" | grep "^cluster seeds=")
            break
        fi
        last=$(echo "$out" | grep "^seed " | tail -1 | cut -d' ' -f2)
        [ -z "$last" ] && { echo "$bug: raft-sim failed before its first seed"; break; }
        crashed=$((crashed + 1))
        [ -z "$first" ] && first="seed=$last: $(echo "$out" | grep -m1 -E "Fatal error|precondition|error:" | cut -c1-200)"
        start=$((last + 1))
    done
    echo "$bug: caught=$((caught + crashed))/$SEEDS (of which stopped by an assertion: $crashed) first: $first"
    [ -n "$summary" ] && echo "   $summary"
done
git checkout -q Sources/
flock /tmp/keyper-build.lock swift build -c release --product raft-sim 2>&1 | grep -E "error:"
