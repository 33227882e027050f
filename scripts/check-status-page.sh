#!/usr/bin/env bash
# The status page in a real browser: starts a 3-node cluster (scripts/local-cluster.sh), loads
# its page in headless Chromium, checks that all three members are listed with one leader, kills
# the leader with SIGKILL, and checks that the page (served by a survivor) shows a new leader.
# Prints PASS (exit 0) or FAIL with what the page showed (exit 1).
#
#   scripts/check-status-page.sh                                   # builds release first
#   KEYPER_BIN=.build/debug/keyper scripts/check-status-page.sh    # an existing binary
#   SCREENSHOT=docs/status-page.png scripts/check-status-page.sh   # also saves a screenshot
#
# Needs chromium (Debian's package: apt-get install chromium), bash and curl.

set -u
set -o pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] || { echo "FAIL: no chromium (apt-get install chromium)" >&2; exit 1; }
if [ -z "${KEYPER_BIN:-}" ]; then
    (cd "$REPO_DIR" && swift build -c release --product keyper) || exit 1
    KEYPER_BIN="$REPO_DIR/.build/release/keyper"
fi
export KEYPER_BIN
DATA=$(mktemp -d "${TMPDIR:-/tmp}/keyper-status-page.XXXXXX")
export DATA
# Ports from 33000 down would meet the kernel's ephemeral range: stay below it.
export BASE_PORT=${BASE_PORT:-$((30900 + RANDOM % 60))}
CLUSTER_PID=""

finish() {
    local rc=$?
    trap - EXIT
    [ -n "$CLUSTER_PID" ] && kill -TERM "$CLUSTER_PID" 2>/dev/null && wait "$CLUSTER_PID" 2>/dev/null
    rm -rf "$DATA"
    exit "$rc"
}
trap finish EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# page URL: the page's DOM once its script has read /v1/cluster (Chromium, headless).
page() {
    timeout 60 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$DATA/chromium" \
        --virtual-time-budget=3000 --dump-dom "$1" 2>/dev/null
}

"$REPO_DIR/scripts/local-cluster.sh" >"$DATA/cluster.out" 2>&1 &
CLUSTER_PID=$!
for _ in $(seq 1 300); do
    grep -q "Ctrl-C stops it" "$DATA/cluster.out" 2>/dev/null && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$DATA/cluster.out" >&2; fail "the cluster did not start"; }
    sleep 0.2
done
grep -q "Ctrl-C stops it" "$DATA/cluster.out" || fail "the cluster did not start within a minute"

url() { echo "http://127.0.0.1:$((BASE_PORT + $1 - 1))/"; }
rows() { grep -o '<tr data-member="[^"]*" data-role="[^"]*"' <<<"$1"; }
leader_of() { grep -o 'data-leader="[^"]*"' <<<"$1" | head -1 | cut -d'"' -f2; }

dom=$(page "$(url 1)")
[ "$(rows "$dom" | wc -l)" = 3 ] || fail "the page does not list three members: $(rows "$dom")"
[ "$(rows "$dom" | grep -c 'data-role="leader"')" = 1 ] || fail "the page does not show one leader: $(rows "$dom")"
leader=$(leader_of "$dom")
[ -n "$leader" ] || fail "the page names no leader"
echo "the page lists 3 members, leader $leader"
if [ -n "${SCREENSHOT:-}" ]; then
    timeout 60 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$DATA/chromium" \
        --virtual-time-budget=3000 --hide-scrollbars --window-size=1100,330 --screenshot="$SCREENSHOT" "$(url 1)" 2>/dev/null
    echo "screenshot: $SCREENSHOT"
fi

pkill -KILL -f -- "--node-id $leader " || fail "cannot kill $leader"
number=${leader#node}
survivor=$(( number % 3 + 1 ))
for _ in $(seq 1 60); do
    dom=$(page "$(url "$survivor")")
    now=$(leader_of "$dom")
    if [ -n "$now" ] && [ "$now" != "$leader" ] && [ "$(rows "$dom" | grep -c 'data-role="leader"')" = 1 ] \
        && rows "$dom" | grep -q "data-member=\"$leader\" data-role=\"unreachable\""; then
        echo "after kill -9 of $leader the page shows leader $now and $leader unreachable"
        echo PASS
        exit 0
    fi
    sleep 0.5
done
fail "after kill -9 of $leader the page still shows: leader '${now:-}' $(rows "$dom" | tr '\n' ' ')"
