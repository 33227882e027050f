#!/usr/bin/env bash
# A 3-node Keyper cluster on this machine, in one command: starts the nodes, joins them, waits
# until all three are voters, prints their URLs, and runs until Ctrl-C (or SIGTERM), which stops
# them all.
#
#   scripts/local-cluster.sh                                  # builds release, HTTP on 8080-8082
#   KEYPER_BIN=.build/debug/keyper scripts/local-cluster.sh   # an existing binary
#   BASE_PORT=9000 DATA=/tmp/kc scripts/local-cluster.sh      # HTTP 9000-9002, Raft 9100-9102
#
# Environment:
#   KEYPER_BIN   existing keyper binary (default: swift build -c release, then .build/release/keyper)
#   BASE_PORT    HTTP ports BASE_PORT..+2, Raft ports BASE_PORT+100..+102 (default 8080)
#   DATA         where the data directories and logs go (default ./local-cluster; kept between
#                runs, so a second run starts the same cluster again)
#
# Needs bash and curl.

set -u
set -o pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_PORT=${BASE_PORT:-8080}
DATA=${DATA:-./local-cluster}
PIDS=()

if [ -z "${KEYPER_BIN:-}" ]; then
    (cd "$REPO_DIR" && swift build -c release --product keyper) || exit 1
    KEYPER_BIN="$REPO_DIR/.build/release/keyper"
fi
[ -x "$KEYPER_BIN" ] || { echo "no keyper binary at $KEYPER_BIN" >&2; exit 1; }

stop() {
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "stopped; data and logs in $DATA"
}
trap stop EXIT
trap 'exit 0' INT TERM

mkdir -p "$DATA"
http_url() { echo "http://127.0.0.1:$((BASE_PORT + $1 - 1))"; }

start() {
    local n=$1 join=${2:-}
    local args=(--data-dir "$DATA/node$n" --node-id "node$n" --http-addr "127.0.0.1:$((BASE_PORT + n - 1))"
                --enable-raft --raft-addr "127.0.0.1:$((BASE_PORT + 100 + n - 1))")
    # A node that already has data rejoins its cluster by itself; only a new one asks to join.
    if [ -n "$join" ] && [ ! -e "$DATA/node$n/KEYPER" ]; then args+=(--join "$join"); fi
    "$KEYPER_BIN" "${args[@]}" >>"$DATA/node$n.log" 2>&1 &
    PIDS+=($!)
}

# wait_for SECONDS COMMAND...: retries COMMAND every 0.2 s.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

voters() { curl -sf --max-time 2 "$(http_url "$1")/v1/status" | grep -o '"role":"voter"' | wc -l; }
three_voters() { for n in 1 2 3; do [ "$(voters "$n")" = 3 ] && return 0; done; return 1; }

start 1
wait_for 60 curl -sf --max-time 2 "$(http_url 1)/v1/health" || { echo "node1 did not start; see $DATA/node1.log" >&2; exit 1; }
start 2 "$(http_url 1)"
start 3 "$(http_url 1)"
wait_for 60 three_voters || { echo "the cluster did not form; see $DATA/node*.log" >&2; exit 1; }

endpoints="$(http_url 1),$(http_url 2),$(http_url 3)"
cat <<EOF
a 3-node Keyper cluster is running (data and logs in $DATA):
  node1  $(http_url 1)
  node2  $(http_url 2)
  node3  $(http_url 3)
try:
  export KEYPER_ENDPOINTS=$endpoints
  $KEYPER_BIN status
  curl -X PUT $(http_url 1)/v1/keys/hello -d world
Ctrl-C stops it.
EOF

# Runs until a signal; a node that exits is reported.
while true; do
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            echo "node$((i + 1)) exited; see $DATA/node$((i + 1)).log" >&2
            unset "PIDS[$i]"
        fi
    done
    sleep 1
done
