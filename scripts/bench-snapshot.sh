#!/usr/bin/env bash
# Measures catching a lagging follower up through a large snapshot on a local 3-node cluster:
# how long the transfer and install take, at how many MB/s, and whether the leader keeps its
# leadership meanwhile (a leader that holds its loop for seconds stops sending heartbeats, and
# the followers elect another). A benchmark to run and read, not a test: it prints numbers.
#
#   scripts/bench-snapshot.sh                                   # release build, 1,100 × 1 MiB
#   KEYPER_BIN=.build/release/keyper scripts/bench-snapshot.sh  # an existing binary
#   VALUES=300 scripts/bench-snapshot.sh                        # a quick look (about 300 MB)
#
# Environment:
#   KEYPER_BIN        use this keyper binary instead of building (a copy of it is run)
#   VALUES            values loaded (default 1100), each of VALUE_BYTES (default 1048576)
#   SNAPSHOT_ENTRIES  --snapshot-entries of every node (default VALUES - 100): the leader takes
#                     one snapshot of about that many values, then compacts its log
#   LOAD_CONNECTIONS  concurrent writers during the load (default 4)
#   TRANSFER_TIMEOUT  seconds the laggard may take to install the snapshot (default 600)
#   WAIT_TIMEOUT      seconds for every other wait (default 120)
#   KEEP=1            keep the temporary directory (data dirs, logs, status samples)
#
# Steps: start three nodes on 127.0.0.1 (node1 bootstraps, the others join it), stop one
# follower, load VALUES distinct keys through the leader, wait until both running nodes have
# taken their snapshot and compacted, then restart the stopped follower. The leader finds the
# entries it needs compacted and sends its snapshot. Meanwhile a sampler polls /v1/status of
# every node every 100 ms. Reported: the snapshot's size, the time from the restart until the
# follower has installed it and until it has caught up, MB/s, the leader changes the running
# nodes saw, and the "a Raft step held the loop for long" warnings in each node's log.
#
# Needs bash 4+, curl and python3. Data and logs go to a temporary directory under $TMPDIR
# (default /tmp), removed at the end unless KEEP=1; every process started is stopped on exit.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_LOCK=/tmp/keyper-build.lock

VALUES=${VALUES:-1100}
VALUE_BYTES=${VALUE_BYTES:-1048576}
SNAPSHOT_ENTRIES=${SNAPSHOT_ENTRIES:-$((VALUES > 150 ? VALUES - 100 : VALUES / 2))}
LOAD_CONNECTIONS=${LOAD_CONNECTIONS:-4}
TRANSFER_TIMEOUT=${TRANSFER_TIMEOUT:-600}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-120}
KEEP=${KEEP:-0}
NODES=(node1 node2 node3)

log() { printf '[bench-snapshot %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { date +%s%3N; }

TMP_DIR=""
SAMPLER_PID=""
declare -A PID=() HTTP=() RAFT=()

cleanup() {
    local rc=$? node deadline alive
    set +e
    trap - EXIT INT TERM
    if [ -n "$SAMPLER_PID" ]; then
        kill -TERM "$SAMPLER_PID" 2>/dev/null
        wait "$SAMPLER_PID" 2>/dev/null
    fi
    if [ "${#PID[@]}" -gt 0 ]; then
        if [ "$rc" != 0 ] && [ -n "$TMP_DIR" ]; then
            for node in "${!PID[@]}"; do
                log "--- last lines of $TMP_DIR/$node.log"
                tail -n 15 "$TMP_DIR/$node.log" >&2
            done
        fi
        for node in "${!PID[@]}"; do kill -TERM "${PID[$node]}" 2>/dev/null; done
        deadline=$((SECONDS + 15))
        while :; do
            alive=0
            for node in "${!PID[@]}"; do kill -0 "${PID[$node]}" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] || [ "$SECONDS" -ge "$deadline" ] && break
            sleep 0.2
        done
        for node in "${!PID[@]}"; do
            kill -KILL "${PID[$node]}" 2>/dev/null
            wait "${PID[$node]}" 2>/dev/null
        done
    fi
    if [ -n "$TMP_DIR" ] && [ -d "$TMP_DIR" ]; then
        if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
            log "kept the temporary directory: $TMP_DIR"
        else
            rm -rf "$TMP_DIR"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# nodes

start_node() {
    local node=$1; shift
    "$KEYPER" --data-dir "$TMP_DIR/$node" --http-addr "127.0.0.1:${HTTP[$node]}" \
        --node-id "$node" --enable-raft --raft-addr "127.0.0.1:${RAFT[$node]}" \
        --snapshot-entries "$SNAPSHOT_ENTRIES" --snapshot-catch-up-entries 0 --max-value-bytes "$VALUE_BYTES" \
        --log-level info "$@" >>"$TMP_DIR/$node.log" 2>&1 &
    PID[$node]=$!
    log "started $node (pid ${PID[$node]}): http ${HTTP[$node]}, raft ${RAFT[$node]}"
}

stop_node() {
    local node=$1 pid=${PID[$1]} waited=0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do sleep 0.1; waited=$((waited + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$node]"
    log "stopped $node"
}

check_alive() {
    local node
    for node in "${!PID[@]}"; do
        kill -0 "${PID[$node]}" 2>/dev/null || die "$node (pid ${PID[$node]}) exited; its log: $TMP_DIR/$node.log"
    done
}

# status NODE FIELD: one field of the node's /v1/status (empty when it does not answer).
status() {
    curl -sf --max-time 2 "http://127.0.0.1:${HTTP[$1]}/v1/status" 2>/dev/null |
        python3 -c 'import json,sys
try: v = json.load(sys.stdin).get(sys.argv[1])
except Exception: v = None
print("" if v is None else ("true" if v is True else "false" if v is False else v))' "$2" || true
}

wait_until() {
    local what=$1 timeout=$2; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        check_alive
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${timeout}s waiting for $what"
        sleep 0.2
    done
}

is_leader() { [ "$(status "$1" is_leader)" = true ]; }
three_voters() {
    curl -sf --max-time 2 "http://127.0.0.1:${HTTP[$1]}/v1/status" 2>/dev/null | python3 -c '
import json, sys
members = json.load(sys.stdin).get("members") or []
sys.exit(0 if sorted(m["id"] for m in members if m.get("role") == "voter") == ["node1", "node2", "node3"] else 1)'
}
has_snapshot() { local s; s=$(status "$1" snapshot_index); [ -n "$s" ] && [ "$s" -gt 0 ]; }

LEADER=""
find_leader() {
    local node
    for node in "${!PID[@]}"; do
        if is_leader "$node"; then LEADER=$node; return 0; fi
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# setup

command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
[ "$SNAPSHOT_ENTRIES" -lt "$VALUES" ] || die "SNAPSHOT_ENTRIES ($SNAPSHOT_ENTRIES) must be below VALUES ($VALUES)"

TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/keyper-bench-snapshot.XXXXXX")
mkdir -p "$TMP_DIR/bin"
KEYPER=$TMP_DIR/bin/keyper
if [ -n "${KEYPER_BIN:-}" ]; then
    [ -x "$KEYPER_BIN" ] || die "KEYPER_BIN=$KEYPER_BIN is not an executable file"
    cp "$KEYPER_BIN" "$KEYPER"
    SOURCE="$KEYPER_BIN"
else
    log "building: flock $BUILD_LOCK swift build -c release --product keyper"
    # The build and the copy under the shared lock: one Swift build at a time on the machine,
    # and nobody relinks the binary between our build and our copy.
    (cd "$REPO_DIR" && flock "$BUILD_LOCK" bash -c '
        set -e
        swift build -c release --product keyper
        cp "$(swift build -c release --show-bin-path)/keyper" "$1"' _ "$KEYPER") || die "swift build -c release failed"
    SOURCE="release build of $REPO_DIR at $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi
log "binary: $SOURCE; data and logs in $TMP_DIR"

read -r -a PORTS <<< "$(python3 "$REPO_DIR/scripts/free_ports.py" 6)"
[ "${#PORTS[@]}" = 6 ] || die "expected 6 free ports, got: ${PORTS[*]}"
for i in 0 1 2; do
    HTTP[${NODES[$i]}]=${PORTS[$i]}
    RAFT[${NODES[$i]}]=${PORTS[$((i + 3))]}
done

start_node node1
wait_until "node1 to lead" "$WAIT_TIMEOUT" is_leader node1
for node in node2 node3; do start_node "$node" --join "http://127.0.0.1:${HTTP[node1]}"; done
wait_until "three voters" "$WAIT_TIMEOUT" three_voters node1
wait_until "a leader" "$WAIT_TIMEOUT" find_leader
LAGGARD=node3
[ "$LEADER" = node3 ] && LAGGARD=node2
stop_node "$LAGGARD"

# ---------------------------------------------------------------------------------------------
# load

log "loading $VALUES values of $VALUE_BYTES bytes through $LEADER ($LOAD_CONNECTIONS writers); $LAGGARD is down"
LOAD_START=$(now_ms)
python3 - "http://127.0.0.1:${HTTP[$LEADER]}" "$VALUES" "$VALUE_BYTES" "$LOAD_CONNECTIONS" <<'PY' || die "the load failed"
import http.client, os, sys, threading, time, urllib.parse
url, count, size, writers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
host = urllib.parse.urlparse(url)
base = os.urandom(size)
failed = []
def writer(first):
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    for i in range(first, count, writers):
        body = i.to_bytes(8, "little") + base[8:]   # distinct values, incompressible
        for attempt in range(100):
            try:
                conn.request("PUT", "/v1/keys/bench-snapshot/%06d" % i, body=body)
                r = conn.getresponse(); r.read()
                if r.status == 204: break
                if r.status != 503: failed.append((i, r.status)); return
            except Exception:
                conn.close(); conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
            time.sleep(0.2)
        else:
            failed.append((i, "retries")); return
threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
for t in threads: t.start()
for t in threads: t.join()
if failed: print("failed writes:", failed[:5], file=sys.stderr); sys.exit(1)
PY
LOAD_MS=$(( $(now_ms) - LOAD_START ))
LOADED_MB=$(( VALUES * VALUE_BYTES / 1000000 ))
log "loaded $LOADED_MB MB in $LOAD_MS ms"

for node in "${!PID[@]}"; do
    wait_until "$node to take its snapshot" "$WAIT_TIMEOUT" has_snapshot "$node"
done
find_leader || die "no leader after the load"
SNAP_INDEX=$(status "$LEADER" snapshot_index)
TARGET=$(status "$LEADER" commit_index)
SNAP_FILE=$(ls "$TMP_DIR/$LEADER/snapshots/snap-$(printf '%016x' "$SNAP_INDEX")-"*.db 2>/dev/null | head -1)
[ -n "$SNAP_FILE" ] || die "no snapshot file at index $SNAP_INDEX in $TMP_DIR/$LEADER/snapshots"
SNAP_BYTES=$(stat -c %s "$SNAP_FILE")
log "leader $LEADER: snapshot at index $SNAP_INDEX, $SNAP_BYTES bytes; commit index $TARGET"
sleep 2  # let the snapshots' fsyncs and compactions settle

# ---------------------------------------------------------------------------------------------
# the transfer

declare -A LOG_LINES=()
for node in "${NODES[@]}"; do LOG_LINES[$node]=$(wc -l <"$TMP_DIR/$node.log"); done
STATUS_URLS=""
for node in "${NODES[@]}"; do STATUS_URLS+="$node=http://127.0.0.1:${HTTP[$node]}/v1/status "; done
python3 - "$TMP_DIR/samples.jsonl" $STATUS_URLS <<'PY' &
import json, signal, sys, threading, time, urllib.request
out = open(sys.argv[1], "w", buffering=1)
nodes = [a.split("=", 1) for a in sys.argv[2:]]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
def poll(name, url):
    while True:
        started = time.time()
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                s = json.load(r)
            out.write(json.dumps({"t": started, "node": name, "term": s.get("term"), "leader": s.get("leader_id"),
                                  "applied": s.get("applied_index"), "snapshot": s.get("snapshot_index")}) + "\n")
        except Exception as e:
            out.write(json.dumps({"t": started, "node": name, "error": type(e).__name__}) + "\n")
        time.sleep(max(0, 0.1 - (time.time() - started)))
threads = [threading.Thread(target=poll, args=n, daemon=True) for n in nodes]
for t in threads: t.start()
while True: time.sleep(1)
PY
SAMPLER_PID=$!
TERM_BEFORE=$(status "$LEADER" term)
sleep 0.5

log "restarting $LAGGARD"
RESTART=$(now_ms)
start_node "$LAGGARD"
installed() { local s; s=$(status "$LAGGARD" snapshot_index); [ -n "$s" ] && [ "$s" -ge "$SNAP_INDEX" ]; }
caught_up() { local a; a=$(status "$LAGGARD" applied_index); [ -n "$a" ] && [ "$a" -ge "$TARGET" ]; }
# Not fatal: a node that never gets the snapshot (leadership churning) is a result to report.
INSTALLED_MS=""
CAUGHT_UP_MS=""
DEADLINE=$((SECONDS + TRANSFER_TIMEOUT))
while [ "$SECONDS" -lt "$DEADLINE" ]; do
    check_alive
    if [ -z "$INSTALLED_MS" ] && installed; then INSTALLED_MS=$(( $(now_ms) - RESTART )); fi
    if [ -n "$INSTALLED_MS" ] && caught_up; then CAUGHT_UP_MS=$(( $(now_ms) - RESTART )); break; fi
    sleep 0.2
done
[ -n "$CAUGHT_UP_MS" ] || log "$LAGGARD did not install the snapshot and catch up within ${TRANSFER_TIMEOUT}s"
sleep 1
kill -TERM "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
find_leader || true
TERM_AFTER=$(status "$LEADER" term)

# ---------------------------------------------------------------------------------------------
# report

for node in "${NODES[@]}"; do tail -n +"$((LOG_LINES[$node] + 1))" "$TMP_DIR/$node.log" >"$TMP_DIR/$node.transfer.log"; done
python3 - "$TMP_DIR" "$LAGGARD" "$SNAP_BYTES" "$INSTALLED_MS" "$CAUGHT_UP_MS" "$TERM_BEFORE" "$TERM_AFTER" \
    "$LOADED_MB" "$LOAD_MS" "$SNAP_INDEX" "$SOURCE" <<'PY'
import json, re, sys
tmp, laggard, size, installed_ms, caught_ms, term0, term1, loaded_mb, load_ms, index, source = sys.argv[1:]
size, load_ms = int(size), int(load_ms)
installed_ms = int(installed_ms) if installed_ms else None
caught_ms = int(caught_ms) if caught_ms else None
samples = [json.loads(l) for l in open(tmp + "/samples.jsonl")]
# Leader changes as the running nodes saw them: each change of (term, leader) in a node's samples.
changes, seen = {}, {}
for s in samples:
    if s["node"] == laggard or "error" in s or not s.get("leader"): continue
    key = (s["term"], s["leader"])
    if s["node"] in seen and seen[s["node"]] != key: changes[s["node"]] = changes.get(s["node"], 0) + 1
    seen[s["node"]] = key
leaders = sorted({s["leader"] for s in samples if s.get("leader") and s["node"] != laggard})
# The same from the samples, without the process's start: from the laggard's first answer to
# /v1/status to the first sample that shows the snapshot installed.
answered = [s for s in samples if s["node"] == laggard and "error" not in s]
up = answered[0]["t"] if answered else None
done = next((s["t"] for s in answered if (s.get("snapshot") or 0) >= int(index)), None)
def lines(node, text): return [l.rstrip() for l in open(f"{tmp}/{node}.transfer.log") if text in l]
print()
print(f"binary: {source}")
print(f"loaded: {loaded_mb} MB in {load_ms / 1000:.1f} s; snapshot at index {index}: {size:,} bytes ({size / 1e6:.0f} MB)")
if installed_ms:
    print(f"{laggard} restart -> snapshot installed: {installed_ms / 1000:.2f} s = {size / 1e6 / (installed_ms / 1000):.0f} MB/s (includes the node's start)")
else:
    print(f"{laggard} restart -> snapshot installed: NOT within the timeout")
if up and done:
    print(f"{laggard} up -> snapshot installed (transfer + store + install): {done - up:.2f} s = {size / 1e6 / (done - up):.0f} MB/s")
print(f"{laggard} restart -> caught up (applied >= commit index at restart): " + (f"{caught_ms / 1000:.2f} s" if caught_ms else "NOT within the timeout"))
print(f"leader term {term0} -> {term1}; leaders seen by the running nodes: {', '.join(leaders)}; "
      f"leader changes seen: {max(changes.values(), default=0)}")
# Slow steps before the install (the transfer) and after it (the log entries that follow the
# snapshot), by the logs' timestamps (whole seconds, so a step in the second of the install
# counts as after it).
import calendar, time as _time
def stamp(line):
    try: return calendar.timegm(_time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError: return None
def summary(slow):
    worst = max((int(m.group(1)) for l in slow for m in [re.search(r"total_ms=(\d+)", l)] if m), default=0)
    return f"{len(slow)}" + (f" (longest {worst} ms)" if slow else "")
for node in sorted({s['node'] for s in samples}):
    slow = lines(node, "a Raft step held the loop for long")
    if done:
        before = [l for l in slow if (stamp(l) or 0) < int(done)]
        after = [l for l in slow if l not in before]
        print(f"{node}: 'a Raft step held the loop for long' warnings: {summary(before)} until the install, "
              f"{summary(after)} after it")
    else:
        print(f"{node}: 'a Raft step held the loop for long' warnings: {summary(slow)}")
for node in sorted({s['node'] for s in samples}):
    for text in ("sending a snapshot", "sent a snapshot", "snapshot transfer abandoned", "stored an incoming snapshot",
                 "installed a snapshot", "without a prepared copy", "snapshot message without its complete data", "leader changed"):
        found = lines(node, text)
        for l in found[:3]: print(f"  {node}: {l}")
        if len(found) > 3: print(f"  {node}: ... {len(found) - 3} more '{text}'")
PY
