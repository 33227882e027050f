#!/usr/bin/env bash
# Benchmarks a local 3-node Keyper cluster against a local 3-node etcd cluster, with the same
# client (wrk) and the same workloads, at several key-space sizes, against both of etcd's HTTP
# paths, and prints markdown tables with the targets judged against etcd's best path.
#
#   scripts/bench-compare.sh                                  # 1k, 100k and 1M keys; 3 rounds of 10 s
#   scripts/bench-compare.sh --keys 1000,100000               # chosen key spaces
#   scripts/bench-compare.sh --keys 1000 --runs 1 --duration 5s --workloads write,noop   # quick
#   KEYPER_BIN=.build/release/keyper scripts/bench-compare.sh # skip the build
#
# Options (each also an environment variable):
#   --keys LIST        KEYSPACES: key-space sizes, ascending (default 1000,100000,1000000)
#   --runs N           RUNS: rounds over all workloads per key space (default 3); tables show medians
#   --duration D       DURATION: wrk -d per run (default 10s)
#   --workloads LIST   WORKLOADS: of write read mix single noop health cas txn txn1 (default all)
#   --systems LIST     SYSTEMS: of keyper etcd-v2 etcd-v3 (default all three)
# Environment only:
#   KEYPER_BIN   use this keyper binary instead of building (a copy of it is run)
#   KEEP=1       keep the temporary directory (data dirs, logs) instead of removing it
#   RESULTS_DIR  where the per-run numbers and raw wrk output go
#                (default ${TMPDIR:-/tmp}/keyper-bench-compare-<date>-<time>)
#   WRK_TIMEOUT  wrk --timeout (default 10s): a slower response counts as an error
#
# What runs: both clusters on 127.0.0.1 at the same time for the whole comparison, data dirs
# in one temporary directory (the same filesystem for both), default durability for both
# (Keyper fsyncs each batch; etcd runs with its defaults plus --enable-v2, nothing unsafe).
# Every run goes to the current leader of its system, found again before every wrk run.
# Within a round the systems take turns, in an order that rotates from round to round, so
# drift on the machine affects all alike.
#
# Three systems: keyper; etcd-v2, etcd's v2 keys API (an in-memory store, with --enable-v2);
# etcd-v3, etcd's v3 JSON gateway (grpc-gateway over its bbolt store). For each workload the
# tables compare Keyper with whichever etcd path was faster on it ("etcd best").
#
# Key spaces: keys are bench/0 .. bench/(N-1), every one written before the runs at N (the
# preload extends the previous key space, so 1M keys are loaded once, not three times), and
# every request picks its key uniformly at random. Values are 256 bytes.
#
# The workloads (wrk scripts in scripts/bench/, requests formatted as they are sent):
#   write   64 connections, a 256-byte value to a random key
#           (Keyper PUT /v1/keys; etcd-v2 PUT /v2/keys; etcd-v3 POST /v3/kv/put)
#   read    64 connections, a linearizable read of a random key
#           (Keyper GET /v1/keys, ReadIndex; etcd-v2 GET /v2/keys?quorum=true, a read through the
#           Raft log; etcd-v3 POST /v3/kv/range, linearizable by default)
#   mix     64 connections, 90% reads / 10% writes
#   single  1 connection, sequential writes: the latency of one write
#   noop    64 connections on the cheapest route: Keyper GET /v1/health (a local check);
#           etcd GET /version (the same for both APIs; reported as etcd-v3). etcd 3.4's GET
#           /health is not a no-op: it proposes a v2 QGET through Raft, so each call is a log
#           entry appended and fsynced on a quorum. It is measured separately:
#   health  etcd only, 64 connections, GET /health, for reference.
#   cas     64 connections, a conditional write of a random (existing) key
#           (Keyper PUT /v1/keys with If-Match: *; etcd-v2 PUT ?prevExist=true; etcd-v3 POST
#           /v3/kv/txn comparing the key's version > 0, then a put: the gateway has no other)
#   txn     64 connections, a transaction: compare key N's version > 0, then put keys N..N+3
#           (Keyper POST /v1/txn; etcd-v3 POST /v3/kv/txn; etcd-v2 has none)
#   txn1    the same with one put: what a transaction costs beyond its writes
#
# Outputs in RESULTS_DIR: summary.md (the tables), results.tsv (one line per wrk run),
# scaling.tsv (medians per key space, system and workload, for scripts/plot-scaling.py),
# machine.txt, wrk/ (raw output).
#
# Needs: swift (unless KEYPER_BIN), curl, python3; installs etcd-server, etcd-client, wrk and
# fio from Debian's packages when missing (fio only for the fdatasync line of the machine
# description; the script goes on without it).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LUA_DIR=$REPO_DIR/scripts/bench
BUILD_LOCK=/tmp/keyper-build.lock

DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
KEEP=${KEEP:-0}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
RESULTS_DIR=${RESULTS_DIR:-${TMPDIR:-/tmp}/keyper-bench-compare-$(date +%Y%m%d-%H%M%S)}
KEYSPACES=${KEYSPACES:-1000,100000,1000000}
WORKLOADS=${WORKLOADS:-write read mix single noop health cas txn txn1}
SYSTEMS=${SYSTEMS:-keyper etcd-v2 etcd-v3}
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYSPACES=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --workloads) WORKLOADS=$2; shift 2 ;;
        --systems) SYSTEMS=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
read -r -a KEYSPACE_LIST <<< "${KEYSPACES//,/ }"
KEYSPACE=0               # the key space being measured
VALUE_BYTES=256
CONNS=64
THREADS=2
READ_PERCENT=90
WAIT_TIMEOUT=60          # seconds to wait for a cluster to form

# A subset of workloads gives a targets table with only what it can judge.
read -r -a WORKLOADS <<< "${WORKLOADS//,/ }"
read -r -a SYSTEM_LIST <<< "${SYSTEMS//,/ }"

# Never let an inherited ETCD_* / ETCDCTL_* variable change how our etcd or etcdctl behave.
for var in $(compgen -e | grep -E '^ETCD(CTL)?_' || true); do unset "$var"; done
export ETCDCTL_API=3

# ---------------------------------------------------------------------------------------------
# output, failure, clean-up

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

TMP_DIR=""
WRK_PID=""
declare -A PID=()        # name -> pid of every server this script started

# Prints the end of every server log, for a run that failed.
dump_logs() {
    local f
    [ -n "$TMP_DIR" ] && [ -d "$TMP_DIR/logs" ] || return 0
    for f in "$TMP_DIR"/logs/*.log; do
        [ -s "$f" ] || continue
        log "--- last lines of $f"
        tail -n 15 "$f" >&2 || true
    done
}

# Stops everything this script started: wrk first, then every server (SIGTERM, then SIGKILL
# after 15 s: an etcd leader whose peers are already gone can hang in its shutdown), reaps them,
# and removes the temporary directory unless KEEP=1.
cleanup() {
    local rc=$? name pid deadline alive
    set +e
    trap - EXIT INT TERM
    if [ -n "$WRK_PID" ]; then
        kill -TERM "$WRK_PID" 2>/dev/null
        wait "$WRK_PID" 2>/dev/null
    fi
    if [ "${#PID[@]}" -gt 0 ]; then
        # A failure shows the servers' last words; an interrupt (130, 143) does not need them.
        case "$rc" in 0|130|143) ;; *) dump_logs ;; esac
        log "stopping ${#PID[@]} server processes: ${PID[*]}"
        for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null; done
        deadline=$((SECONDS + 15))
        while :; do
            alive=0
            for name in "${!PID[@]}"; do kill -0 "${PID[$name]}" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] || [ "$SECONDS" -ge "$deadline" ] && break
            sleep 0.2
        done
        for name in "${!PID[@]}"; do
            pid=${PID[$name]}
            if kill -0 "$pid" 2>/dev/null; then
                log "$name (pid $pid) did not stop on SIGTERM within 15 s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null
            fi
            wait "$pid" 2>/dev/null
        done
    fi
    if [ -n "$TMP_DIR" ] && [ -d "$TMP_DIR" ]; then
        if [ "$KEEP" = 1 ]; then
            log "kept the temporary directory (KEEP=1): $TMP_DIR"
        else
            rm -rf "$TMP_DIR"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Fails when a server this script started has exited.
check_alive() {
    local name
    for name in "${!PID[@]}"; do
        kill -0 "${PID[$name]}" 2>/dev/null || die "$name (pid ${PID[$name]}) exited unexpectedly; its log: $TMP_DIR/logs/$name.log"
    done
}

# wait_until DESCRIPTION COMMAND...: runs COMMAND every 0.2 s until it succeeds, failing after
# WAIT_TIMEOUT seconds or as soon as one of our servers dies.
wait_until() {
    local what=$1; shift
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    until "$@"; do
        check_alive
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${WAIT_TIMEOUT}s waiting for $what"
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# set-up: arguments, packages, build, ports

check_settings() {
    [[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
    [[ "$DURATION" =~ ^[1-9][0-9]*[smh]?$ ]] || die "DURATION must look like 10s, 1m (got '$DURATION')"
    [[ "$WRK_TIMEOUT" =~ ^[1-9][0-9]*[smh]?$ ]] || die "WRK_TIMEOUT must look like 10s (got '$WRK_TIMEOUT')"
    local k previous=0 w
    for k in "${KEYSPACE_LIST[@]}"; do
        [[ "$k" =~ ^[1-9][0-9]*$ ]] || die "key spaces must be positive integers (got '$k')"
        [ "$k" -gt "$previous" ] || die "key spaces must be given in ascending order (got '$KEYSPACES')"
        previous=$k
    done
    for w in "${WORKLOADS[@]}"; do
        case "$w" in write|read|mix|single|noop|health|cas|txn|txn1) ;; *) die "unknown workload '$w'" ;; esac
    done
    for w in "${SYSTEM_LIST[@]}"; do
        case "$w" in keyper|etcd-v2|etcd-v3) ;; *) die "unknown system '$w'" ;; esac
    done
    local f
    for f in common.lua keyper.lua etcd.lua; do
        [ -f "$LUA_DIR/$f" ] || die "missing wrk script $LUA_DIR/$f"
    done
    command -v curl >/dev/null || die "curl is required"
    command -v python3 >/dev/null || die "python3 is required"
}

# Runs a command as root: directly when we are root, otherwise through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Debian's etcd-server enables a system etcd on 2379/2380, started by the package's postinst
# where an init system lets it (systemd, or /etc/init.d/etcd under sysvinit; in a container
# policy-rc.d usually forbids it). When this script has just installed the package, stop and
# disable that service: it would compete for the two cores. Our clusters use free ephemeral
# ports, so a port collision is impossible either way. An etcd that was already running before
# (someone else's) is reported, never stopped.
quiet_system_etcd() {
    local just_installed=$1
    if [ "$just_installed" = 1 ]; then
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
            if systemctl is-active --quiet etcd 2>/dev/null || systemctl is-enabled --quiet etcd 2>/dev/null; then
                log "stopping and disabling the etcd service the package installed (systemd)"
                as_root systemctl disable --now etcd || log "WARNING: could not stop the etcd service"
            fi
        elif [ -x /etc/init.d/etcd ] && as_root /etc/init.d/etcd status >/dev/null 2>&1; then
            log "stopping the etcd service the package started (/etc/init.d/etcd)"
            as_root /etc/init.d/etcd stop || log "WARNING: could not stop the etcd service"
            command -v update-rc.d >/dev/null && as_root update-rc.d etcd disable >/dev/null 2>&1 || true
        fi
    fi
    if pgrep -x etcd >/dev/null 2>&1; then
        log "WARNING: an etcd not started by this script is running (pids $(pgrep -x etcd | tr '\n' ' ')): it competes for CPU"
    fi
    return 0
}

install_tools() {
    local need=() just_installed_etcd=0
    command -v etcd >/dev/null || { need+=(etcd-server); just_installed_etcd=1; }
    command -v etcdctl >/dev/null || need+=(etcd-client)
    command -v wrk >/dev/null || need+=(wrk)
    if [ "${#need[@]}" -gt 0 ]; then
        apt_install "${need[@]}" || die "could not install ${need[*]}"
    fi
    quiet_system_etcd "$just_installed_etcd"
    if ! command -v fio >/dev/null; then
        apt_install fio || log "fio could not be installed: no fdatasync figure in the machine description"
    fi
    command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v wrk >/dev/null ||
        die "etcd, etcdctl and wrk are required"
}

# Builds (or takes KEYPER_BIN) and copies the binary into the temporary directory, so a rebuild
# by someone else during the benchmark cannot replace it under the running nodes. The build and
# the copy both happen under the shared build lock: only one Swift build runs on the machine at
# a time, and nobody can relink the binary between our build and our copy.
prepare_keyper() {
    KEYPER=$TMP_DIR/bin/keyper
    mkdir -p "$TMP_DIR/bin"
    if [ -n "${KEYPER_BIN:-}" ]; then
        [ -x "$KEYPER_BIN" ] || die "KEYPER_BIN=$KEYPER_BIN is not an executable file"
        cp "$KEYPER_BIN" "$KEYPER"
        KEYPER_SOURCE="$KEYPER_BIN (KEYPER_BIN)"
    else
        if ! flock -n "$BUILD_LOCK" true; then
            log "the build lock $BUILD_LOCK is held by another build: waiting for it"
        fi
        log "building: flock $BUILD_LOCK swift build -c release --product keyper"
        (cd "$REPO_DIR" && flock "$BUILD_LOCK" bash -c '
            set -e
            swift build -c release --product keyper
            cp "$(swift build -c release --show-bin-path)/keyper" "$1"' _ "$KEYPER") ||
            die "swift build -c release failed"
        KEYPER_SOURCE="release build of $REPO_DIR"
    fi
    "$KEYPER" --help >/dev/null 2>&1 || die "$KEYPER --help failed"
    log "keyper binary: $KEYPER_SOURCE, running a copy at $KEYPER"
}

# Twelve distinct free ports on 127.0.0.1.
pick_ports() {
    PORTS=($(python3 "$REPO_DIR/scripts/free_ports.py" 12)) || die "could not find free ports"
    [ "${#PORTS[@]}" = 12 ] || die "expected 12 free ports, got: ${PORTS[*]}"
}

# ---------------------------------------------------------------------------------------------
# machine description

describe_machine() {
    local out=$RESULTS_DIR/machine.txt model mem fs
    model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') || model=unknown
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    fs=$(df -PT "$TMP_DIR" | awk 'NR == 2 { print $2 " on " $1 }')
    {
        echo "- cpus: $(nproc) ($model)"
        echo "- memory: $mem"
        echo "- kernel: $(uname -r)"
        echo "- data dirs: $TMP_DIR ($fs)"
        if [ -n "${KEYPER_BIN:-}" ]; then
            # A given binary may come from any commit: say so rather than name the checkout's.
            echo "- keyper: $KEYPER_SOURCE (the checkout is at $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown); the binary may be from another commit)"
        else
            echo "- keyper: $KEYPER_SOURCE, commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO_DIR" diff --quiet HEAD -- Sources Package.swift 2>/dev/null || echo ' + uncommitted changes in Sources/')"
        fi
        echo "- etcd: $(etcd --version 2>/dev/null | head -1 | sed 's/etcd Version: //') (defaults: fsync on, snapshot-count 100000)"
        echo "- client: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), on the same machine"
        fio_line
        busy_line
    } >"$out"
    log "machine:"
    sed 's/^/    /' "$out" >&2
}

# One line with the fdatasync rate of the data dirs' filesystem: 4 KiB writes, each followed by
# fdatasync, which is the floor under any durable write on this disk.
fio_line() {
    command -v fio >/dev/null || { echo "- fdatasync: (fio not installed)"; return 0; }
    mkdir -p "$TMP_DIR/fio"
    if fio --name=fsync --rw=write --bs=4k --size=16m --fdatasync=1 --runtime=20 \
           --directory="$TMP_DIR/fio" --output-format=json >"$TMP_DIR/fio.json" 2>"$TMP_DIR/fio.err"; then
        python3 - "$TMP_DIR/fio.json" <<'PY' || echo "- fdatasync: (could not parse fio output)"
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
iops = job["write"]["iops"]
pct = job.get("sync", {}).get("lat_ns", {}).get("percentile", {})
def ms(key):
    return "%.2f ms" % (pct[key] / 1e6) if key in pct else "?"
print("- fdatasync (fio, 4 KiB write + fdatasync each): %.0f/s; fdatasync p50 %s, p99 %s"
      % (iops, ms("50.000000"), ms("99.000000")))
PY
    else
        echo "- fdatasync: (fio failed: $(head -c 200 "$TMP_DIR/fio.err"))"
    fi
    rm -rf "$TMP_DIR/fio"
}

# One line with how busy the CPUs were over the last second, before our clusters start: the
# results are only comparable between quiet machines. A busy machine (another benchmark, a
# build, a test cluster) is reported with its top processes, not stopped.
busy_line() {
    local busy
    busy=$(python3 -c '
import time
def sample():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f), f[3] + f[4]          # total, idle + iowait
t0, i0 = sample(); time.sleep(1); t1, i1 = sample()
print(round(100 * (1 - (i1 - i0) / max(1, t1 - t0))))')
    echo "- CPU busy before the clusters started: ${busy}% of $(nproc) cpus over 1 s"
    if [ "$busy" -gt 15 ]; then
        echo "- WARNING: the machine was not quiet; biggest CPU users (lifetime average):"
        ps -e -o pid=,pcpu=,etime=,args= --sort=-pcpu | grep -v " ps -e" | head -n 4 | cut -c1-160 | sed 's/^/  - /'
        log "WARNING: the machine is busy (${busy}% CPU) before the benchmark: results will be noisy"
    fi
}

# ---------------------------------------------------------------------------------------------
# Keyper cluster

declare -A KHTTP=() KRAFT=()

start_keyper_node() {
    local node=$1; shift
    "$KEYPER" --data-dir "$TMP_DIR/keyper/$node" --http-addr "127.0.0.1:${KHTTP[$node]}" \
        --node-id "$node" --enable-raft --raft-addr "127.0.0.1:${KRAFT[$node]}" \
        --log-level warning "$@" >"$TMP_DIR/logs/$node.log" 2>&1 &
    PID[$node]=$!
    log "started keyper $node (pid ${PID[$node]}): http 127.0.0.1:${KHTTP[$node]}, raft 127.0.0.1:${KRAFT[$node]}"
}

# keyper_status NODE: the node's /v1/status JSON on stdout.
keyper_status() {
    curl -sf --max-time 2 "http://127.0.0.1:${KHTTP[$1]}/v1/status"
}

keyper_is_leader() {
    local s
    s=$(keyper_status "$1") || return 1
    python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("is_leader") else 1)' "$s"
}

keyper_three_voters() {
    local s
    s=$(keyper_status "$1") || return 1
    python3 -c '
import json, sys
members = json.loads(sys.argv[1]).get("members") or []
voters = sorted(m["id"] for m in members if m.get("role") == "voter")
sys.exit(0 if voters == ["node1", "node2", "node3"] else 1)' "$s"
}

# node1 bootstraps; node2 and node3 start with --join node1, which retries until they are in.
start_keyper() {
    local i node
    for i in 1 2 3; do
        KHTTP[node$i]=${PORTS[$((i - 1))]}
        KRAFT[node$i]=${PORTS[$((i + 2))]}
    done
    mkdir -p "$TMP_DIR/keyper"
    start_keyper_node node1
    wait_until "keyper node1 to become leader" keyper_is_leader node1
    for node in node2 node3; do
        start_keyper_node "$node" --join "http://127.0.0.1:${KHTTP[node1]}"
    done
    wait_until "keyper node1 to list node1..node3 as voters" keyper_three_voters node1
    log "keyper: 3 voters, leader node1"
}

# Prints "NODE URL" of the node whose /v1/status says is_leader.
keyper_leader() {
    local node
    for node in node1 node2 node3; do
        if keyper_is_leader "$node"; then
            echo "$node http://127.0.0.1:${KHTTP[$node]}"
            return 0
        fi
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# etcd cluster

declare -A ECLIENT=() EPEER=()
ETCD_ENDPOINTS=""

start_etcd() {
    local i name cluster="" token="keyper-bench-$$-$RANDOM"
    for i in 1 2 3; do
        ECLIENT[etcd$i]=${PORTS[$((i + 5))]}
        EPEER[etcd$i]=${PORTS[$((i + 8))]}
        cluster+="${cluster:+,}etcd$i=http://127.0.0.1:${EPEER[etcd$i]}"
        ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}http://127.0.0.1:${ECLIENT[etcd$i]}"
    done
    mkdir -p "$TMP_DIR/etcd"
    for i in 1 2 3; do
        name=etcd$i
        # Static bootstrap; a unique cluster token so these members can never talk to another
        # cluster's. Durability settings are etcd's defaults.
        etcd --name "$name" --data-dir "$TMP_DIR/etcd/$name" \
            --listen-client-urls "http://127.0.0.1:${ECLIENT[$name]}" \
            --advertise-client-urls "http://127.0.0.1:${ECLIENT[$name]}" \
            --listen-peer-urls "http://127.0.0.1:${EPEER[$name]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${EPEER[$name]}" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "$token" --enable-v2=true \
            --logger zap --log-level warn >"$TMP_DIR/logs/$name.log" 2>&1 &
        PID[$name]=$!
        log "started $name (pid ${PID[$name]}): client 127.0.0.1:${ECLIENT[$name]}, peer 127.0.0.1:${EPEER[$name]}"
    done
    wait_until "etcdctl endpoint health --cluster" etcd_healthy
    log "etcd: 3 members healthy, leader $(etcd_leader | cut -d' ' -f1)"
}

etcdctl_() {
    etcdctl --endpoints="$ETCD_ENDPOINTS" --dial-timeout=2s --command-timeout=5s "$@"
}

etcd_healthy() {
    etcdctl_ endpoint health --cluster >/dev/null 2>&1
}

# Prints "NAME URL" of the member that `endpoint status` names as the leader.
etcd_leader() {
    local url
    url=$(etcdctl_ endpoint status --cluster -w json 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    s = e["Status"]
    if s["header"]["member_id"] == s["leader"]:
        print(e["Endpoint"]); break') || return 1
    [ -n "$url" ] || return 1
    local name
    for name in etcd1 etcd2 etcd3; do
        [ "$url" = "http://127.0.0.1:${ECLIENT[$name]}" ] && { echo "$name $url"; return 0; }
    done
    echo "? $url"
}

# ---------------------------------------------------------------------------------------------
# preload: every key of the key space written once, then checked, so the read workloads read
# existing keys on every system (etcd answers a missing key with 200 and no kvs, which wrk
# could not tell apart from a hit). wrk does the writing (64 connections, each thread its share
# of the keys); its threads stop themselves when their share is answered, and the script then
# ends wrk (which would otherwise sleep out its duration).

# preload SYSTEM FROM TO: writes bench/FROM .. bench/(TO-1) on SYSTEM's leader. A pass with
# failed writes (etcd's v2 API refuses some at 10^6 keys) is followed by a second pass over the
# same keys; failures in that one stop the script.
preload() {
    local system=$1 from=$2 to=$3 started elapsed
    log "$system: preloading keys $from..$((to - 1))"
    started=$SECONDS
    if ! preload_pass "$system" "$from" "$to" 1; then
        log "$system: some preload writes failed; writing the same keys again"
        if ! preload_pass "$system" "$from" "$to" 2; then
            # etcd's v2 API does this at 10^6 keys (its leader stalls for seconds, see
            # BENCHMARKS.md). A key missing now answers reads with 404, which the tables count
            # as errors: the runs say so rather than the script stopping.
            log "WARNING: $system: some writes failed in both passes; reads of those keys will count as errors"
        fi
    fi
    elapsed=$((SECONDS - started))
    check_preloaded "$system" "$(leader_of "$system" | cut -d' ' -f2)" "$to" || die "$system: the preload of $to keys did not check out"
    log "$system: preloaded $((to - from)) keys in ${elapsed} s ($(( (to - from) / (elapsed > 0 ? elapsed : 1) )) keys/s)"
    printf '%s\t%s\t%s\t%s\n' "$system" "$from" "$to" "$elapsed" >>"$RESULTS_DIR/preload.tsv"
}

# preload_pass SYSTEM FROM TO PASS: one wrk pass over the keys; fails when a write failed.
preload_pass() {
    local system=$1 from=$2 to=$3 pass=$4 leader url out
    leader=$(leader_of "$system") || die "$system: no leader found"
    url=${leader#* }
    out=$RESULTS_DIR/wrk/preload-$to-$system-pass$pass.txt
    : >"$out"
    wrk -t"$THREADS" -c"$CONNS" -d24h --timeout "$WRK_TIMEOUT" -s "$LUA_DIR/$(lua_of "$system")" "$url" \
        -- preload "$to" "$VALUE_BYTES" "$READ_PERCENT" "$from" "$THREADS" "$(api_of "$system")" >"$out" 2>&1 &
    WRK_PID=$!
    local done_threads=0
    while [ "$done_threads" -lt "$THREADS" ]; do
        kill -0 "$WRK_PID" 2>/dev/null || { cat "$out" >&2; die "wrk stopped before the preload of $system was done"; }
        check_alive
        sleep 1
        done_threads=$(grep -c '^preload: thread [0-9]* done' "$out") || done_threads=0
    done
    # Its numbers are not needed (the keys are checked below): TERM, not INT, which a
    # background job of a script may have ignored.
    kill -TERM "$WRK_PID" 2>/dev/null
    wait "$WRK_PID" 2>/dev/null || true
    WRK_PID=""
    ! grep '^preload: thread [0-9]* done' "$out" | grep -qv '(0 failed)'
}

# check_preloaded SYSTEM URL KEYS: the key count (where the system can count cheaply) and the
# first and last key read back through the route the read workload uses.
check_preloaded() {
    python3 - "$@" "$VALUE_BYTES" <<'PY'
import base64, http.client, json, sys, urllib.parse
system, url, keys, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
def call(method, path, body=None, ctype=None):
    conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
    r = conn.getresponse()
    return r.status, r.read()
def b64(s):
    return base64.b64encode(s.encode()).decode()
problems = []
for i in (0, keys - 1):
    key = "bench/%d" % i
    if system == "keyper":
        st, body = call("GET", "/v1/keys/" + key)
        got = body if st == 200 else None
    elif system == "etcd-v2":
        st, body = call("GET", "/v2/keys/" + key + "?quorum=true")
        got = json.loads(body)["node"]["value"].encode() if st == 200 else None
    else:
        st, body = call("POST", "/v3/kv/range", json.dumps({"key": b64(key)}), "application/json")
        kvs = json.loads(body).get("kvs") or []
        got = base64.b64decode(kvs[0]["value"]) if kvs else None
    if got is None or len(got) != size:
        problems.append("%s: %s" % (key, "missing" if got is None else "%d bytes" % len(got)))
count = None
if system == "keyper":
    count = json.loads(call("GET", "/v1/status")[1]).get("keys")
elif system == "etcd-v3":
    st, body = call("POST", "/v3/kv/range",
                    json.dumps({"key": b64("bench/"), "range_end": b64("bench0"), "count_only": True}), "application/json")
    count = int(json.loads(body).get("count", 0))
if count is not None and count != keys:
    problems.append("%d bench/ keys, want %d" % (count, keys))
if problems:
    sys.exit("%s after preload: %s" % (system, "; ".join(problems)))
PY
}

# ---------------------------------------------------------------------------------------------
# one wrk run

# The route a workload exercises, for the results file.
route_of() {
    case "$1:$2" in
        keyper:write|keyper:single) echo "PUT /v1/keys/bench/N" ;;
        keyper:read) echo "GET /v1/keys/bench/N" ;;
        keyper:mix) echo "GET|PUT /v1/keys/bench/N" ;;
        keyper:noop|keyper:health) echo "GET /v1/health" ;;
        keyper:cas) echo "PUT /v1/keys/bench/N If-Match: *" ;;
        keyper:txn) echo "POST /v1/txn (1 compare, 4 puts)" ;;
        keyper:txn1) echo "POST /v1/txn (1 compare, 1 put)" ;;
        etcd-v2:cas) echo "PUT /v2/keys/bench/N?prevExist=true" ;;
        etcd-v3:cas) echo "POST /v3/kv/txn (1 compare, 1 put)" ;;
        etcd-v3:txn) echo "POST /v3/kv/txn (1 compare, 4 puts)" ;;
        etcd-v3:txn1) echo "POST /v3/kv/txn (1 compare, 1 put)" ;;
        etcd-v2:write|etcd-v2:single) echo "PUT /v2/keys/bench/N" ;;
        etcd-v2:read) echo "GET /v2/keys/bench/N?quorum=true" ;;
        etcd-v2:mix) echo "GET|PUT /v2/keys/bench/N" ;;
        etcd-v3:write|etcd-v3:single) echo "POST /v3/kv/put" ;;
        etcd-v3:read) echo "POST /v3/kv/range" ;;
        etcd-v3:mix) echo "POST /v3/kv/range|put" ;;
        etcd-*:noop) echo "GET /version" ;;
        etcd-*:health) echo "GET /health" ;;
    esac
}

leader_of() {
    case "$1" in
        keyper) keyper_leader ;;
        etcd-*) etcd_leader ;;
    esac
}

lua_of() { case "$1" in keyper) echo keyper.lua ;; *) echo etcd.lua ;; esac; }
api_of() { case "$1" in etcd-v2) echo v2 ;; *) echo v3 ;; esac; }

# Whether SYSTEM runs WORKLOAD: /version and /health are the same route for both etcd APIs,
# measured once (as etcd-v3); Keyper's health route is the no-op row.
runs_workload() {
    case "$1:$2" in
        keyper:health|etcd-v2:noop|etcd-v2:health|etcd-v2:txn|etcd-v2:txn1) return 1 ;;
        *) return 0 ;;
    esac
}

RESULTS_TSV=""

# run_wrk SYSTEM WORKLOAD RUN: one wrk run against SYSTEM's leader; appends a line to the
# results file.
run_wrk() {
    local system=$1 workload=$2 run=$3
    local threads=$THREADS conns=$CONNS script_workload=$workload leader url after out line
    [ "$workload" = single ] && { threads=1; conns=1; script_workload=write; }
    check_alive
    leader=$(leader_of "$system") || die "$system: no leader found"
    url=${leader#* }; leader=${leader%% *}
    out=$RESULTS_DIR/wrk/keys$KEYSPACE-run$run-$workload-$system.txt
    # In the background and waited for, so an interrupt reaches the trap at once and the trap
    # can stop wrk.
    wrk -t"$threads" -c"$conns" -d"$DURATION" --latency --timeout "$WRK_TIMEOUT" \
        -s "$LUA_DIR/$(lua_of "$system")" "$url" -- "$script_workload" "$KEYSPACE" "$VALUE_BYTES" "$READ_PERCENT" \
        0 "$threads" "$(api_of "$system")" >"$out" 2>&1 &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then
        WRK_PID=""
        cat "$out" >&2
        die "wrk failed ($system $workload)"
    fi
    WRK_PID=""
    line=$(grep '^BENCH_RESULT ' "$out" | tail -n 1) || { cat "$out" >&2; die "no BENCH_RESULT line from wrk ($system $workload)"; }
    after=$(leader_of "$system" | cut -d' ' -f1) || after=none
    local -A r=()
    local kv
    for kv in ${line#BENCH_RESULT }; do r[${kv%%=*}]=${kv#*=}; done
    local errors=$(( ${r[status_errors]} + ${r[connect_errors]} + ${r[read_errors]} + ${r[write_errors]} + ${r[timeouts]} ))
    printf '%s\t' "$KEYSPACE" "$run" "$system" "$workload" "$(route_of "$system" "$workload")" "$leader" "$after" \
        "$threads" "$conns" "$DURATION" "${r[requests]}" "${r[rps]}" "${r[p50_us]}" "${r[p90_us]}" \
        "${r[p99_us]}" "${r[p999_us]}" "${r[max_us]}" "${r[status_errors]}" "${r[connect_errors]}" \
        "${r[read_errors]}" "${r[write_errors]}" >>"$RESULTS_TSV"
    printf '%s\n' "${r[timeouts]}" >>"$RESULTS_TSV"
    log "$(printf 'keys %s run %s %-6s %-7s %10s req/s  p50 %6.2f ms  p99 %7.2f ms  errors %s%s' "$KEYSPACE" "$run" "$workload" \
        "$system" "${r[rps]}" "$(echo "${r[p50_us]}" | awk '{ print $1 / 1000 }')" \
        "$(echo "${r[p99_us]}" | awk '{ print $1 / 1000 }')" "$errors" \
        "$([ "$leader" = "$after" ] || echo "  LEADER CHANGED $leader -> $after")")"
    sleep 1   # let the previous run's connections close before the next one starts
}

# ---------------------------------------------------------------------------------------------
# summary

summarize() {
    python3 - "$RESULTS_TSV" "$RUNS" "$DURATION" "$RESULTS_DIR/scaling.tsv" <<'PY'
import csv, statistics, sys

path, runs, duration, scaling_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = list(csv.DictReader(open(path), delimiter="\t"))
ERR = ["status_errors", "connect_errors", "read_errors", "write_errors", "timeouts"]
WORKLOADS = ["write", "read", "mix", "single", "noop", "health", "cas", "txn", "txn1"]
LABELS = {
    "write": "writes, 64 conns",
    "read": "linearizable reads, 64 conns",
    "mix": "90% reads / 10% writes, 64 conns",
    "single": "sequential writes, 1 conn",
    "noop": "no-op route, 64 conns (Keyper /v1/health, etcd /version)",
    "health": "etcd GET /health, 64 conns (a Raft proposal in etcd 3.4, not a no-op)",
    "cas": "conditional writes, 64 conns",
    "txn": "transactions (1 compare, 4 puts), 64 conns",
    "txn1": "transactions (1 compare, 1 put), 64 conns",
}
keyspaces = sorted({int(r["keys"]) for r in rows})

def group(keys, system, workload):
    return [r for r in rows if int(r["keys"]) == keys and r["system"] == system and r["workload"] == workload]

def med(rs, field):
    return statistics.median(float(r[field]) for r in rs) if rs else None

def errors(rs):
    return sum(int(r[f]) for r in rs for f in ERR)

def leader_changes(rs):
    return sum(1 for r in rs if r["leader"] != r["leader_after"])

def best_etcd(keys, workload):
    """etcd's faster path on this workload: (system, rows), or (None, [])."""
    candidates = [(s, group(keys, s, workload)) for s in ("etcd-v2", "etcd-v3")]
    candidates = [(s, rs) for s, rs in candidates if rs]
    if not candidates:
        return None, []
    if workload == "single":   # one client: the lower median latency is the better path
        return min(candidates, key=lambda c: med(c[1], "p50_us"))
    return max(candidates, key=lambda c: med(c[1], "rps"))

def fmt_rps(rs):
    if not rs:
        return "—"
    s = "%.0f" % med(rs, "rps")
    if len(rs) > 1:
        s += " (%.0f–%.0f)" % (min(float(r["rps"]) for r in rs), max(float(r["rps"]) for r in rs))
    return s

def fmt_ms(rs, field):
    return "%.2f" % (med(rs, field) / 1000) if rs else "—"

scaling = open(scaling_path, "w")
scaling.write("keys\tsystem\tworkload\trps\tp50_us\tp99_us\truns\n")
for keys in keyspaces:
    for system in ("keyper", "etcd-v2", "etcd-v3"):
        for w in WORKLOADS:
            rs = group(keys, system, w)
            if rs:
                scaling.write("%d\t%s\t%s\t%.1f\t%.0f\t%.0f\t%d\n" % (keys, system, w, med(rs, "rps"), med(rs, "p50_us"), med(rs, "p99_us"), len(rs)))

print("Medians over %d run(s) of %s each; req/s shows (min–max) over the runs; latencies in ms." % (runs, duration))
for keys in keyspaces:
    print()
    print("### %s keys" % format(keys, ","))
    print()
    print("| workload | Keyper req/s | etcd v2 req/s | etcd v3 req/s | Keyper ÷ etcd best | Keyper p50 / p99 | etcd best p50 / p99 | valid |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for w in WORKLOADS:
        k = group(keys, "keyper", w) if w != "health" else []
        v2, v3 = group(keys, "etcd-v2", w), group(keys, "etcd-v3", w)
        if not (k or v2 or v3):
            continue
        best, e = best_etcd(keys, w)
        ratio = "%.2f× (%s)" % (med(k, "rps") / med(e, "rps"), best) if k and e and med(e, "rps") > 0 else "—"
        notes = []
        for name, rs in (("Keyper", k), ("etcd v2", v2), ("etcd v3", v3)):
            if errors(rs):
                notes.append("%s: %d non-2xx/socket errors" % (name, errors(rs)))
            if leader_changes(rs):
                notes.append("%s: leader changed in %d run(s)" % (name, leader_changes(rs)))
        valid = "ok" if not notes else ("INVALID — " if any("errors" in n for n in notes) else "note — ") + "; ".join(notes)
        print("| %s | %s | %s | %s | %s | %s / %s | %s / %s | %s |" % (
            LABELS[w], fmt_rps(k), fmt_rps(v2), fmt_rps(v3), ratio, fmt_ms(k, "p50_us"), fmt_ms(k, "p99_us"),
            fmt_ms(e, "p50_us"), fmt_ms(e, "p99_us"), valid))

def verdict(ok, groups):
    return "invalid (errors in a run)" if any(errors(g) for g in groups) else ("met" if ok else "not met")

print()
print("| target | key space | measured | verdict |")
print("| --- | --- | --- | --- |")
for keys in keyspaces:
    K = lambda w: group(keys, "keyper", w)
    name = format(keys, ",")
    best, e = best_etcd(keys, "write")
    if K("write") and e:
        r, kp, ep = med(K("write"), "rps") / med(e, "rps"), med(K("write"), "p99_us"), med(e, "p99_us")
        print("| writes ≥ 2× etcd's best, p99 ≤ its p99 | %s | %.2f× %s, p99 %.2f vs %.2f ms | %s |" % (
            name, r, best, kp / 1000, ep / 1000, verdict(r >= 2 and kp <= ep, [K("write"), e])))
    best, e = best_etcd(keys, "read")
    if K("read") and e:
        r = med(K("read"), "rps") / med(e, "rps")
        print("| linearizable reads ≥ 2× etcd's best | %s | %.2f× %s | %s |" % (name, r, best, verdict(r >= 2, [K("read"), e])))
    best, e = best_etcd(keys, "single")
    if K("single") and e:
        kp, ep = med(K("single"), "p50_us"), med(e, "p50_us")
        print("| one-client write p50 ≤ etcd's best | %s | %.2f vs %.2f ms (%s) | %s |" % (
            name, kp / 1000, ep / 1000, best, verdict(kp <= ep, [K("single"), e])))
    if K("write") and K("noop"):
        r = med(K("write"), "rps") / med(K("noop"), "rps")
        print("| writes ≥ 50%% of the no-op route | %s | %.0f%% | %s |" % (name, 100 * r, verdict(r >= 0.5, [K("write"), K("noop")])))
    for w, label in (("cas", "conditional writes"), ("txn", "transactions of 4 puts"), ("txn1", "transactions of 1 put")):
        if K("write") and K(w):
            r = med(K(w), "rps") / med(K("write"), "rps")
            print("| %s ≥ 90%% of plain writes | %s | %.0f%% (%.0f vs %.0f req/s) | %s |" % (
                label, name, 100 * r, med(K(w), "rps"), med(K("write"), "rps"), verdict(r >= 0.9, [K(w), K("write")])))
        best, e = best_etcd(keys, w)
        if K(w) and e:
            r = med(K(w), "rps") / med(e, "rps")
            print("| %s vs etcd's best | %s | %.2f× %s | %s |" % (label, name, r, best, verdict(r >= 1, [K(w), e])))
small, large = keyspaces[0], keyspaces[-1]
if large > small:
    for w in ("write", "read"):
        a, b = group(small, "keyper", w), group(large, "keyper", w)
        if a and b:
            r = med(b, "rps") / med(a, "rps")
            print("| flat: %ss at %s keys ≥ 80%% of %s keys | — | %.0f%% (%.0f vs %.0f req/s) | %s |" % (
                w, format(large, ","), format(small, ","), 100 * r, med(b, "rps"), med(a, "rps"), verdict(r >= 0.8, [a, b])))
PY
}

# =============================================================================================

main() {
    check_settings
    install_tools

    TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/keyper-bench.XXXXXX")
    mkdir -p "$TMP_DIR/logs" "$RESULTS_DIR/wrk"
    RESULTS_TSV=$RESULTS_DIR/results.tsv
    printf '%s\t' keys run system workload route leader leader_after threads conns duration requests rps \
        p50_us p90_us p99_us p999_us max_us status_errors connect_errors read_errors write_errors >"$RESULTS_TSV"
    printf 'timeouts\n' >>"$RESULTS_TSV"
    printf 'system\tfrom\tto\tseconds\n' >"$RESULTS_DIR/preload.tsv"
    log "temporary directory: $TMP_DIR; results: $RESULTS_DIR"

    prepare_keyper
    # Measured before the clusters start, so nothing else touches the disk meanwhile.
    describe_machine
    pick_ports
    start_keyper
    start_etcd

    local systems=("${SYSTEM_LIST[@]}") loaded=0 keys run workload turn system count=${#SYSTEM_LIST[@]}
    for keys in "${KEYSPACE_LIST[@]}"; do
        KEYSPACE=$keys
        for system in "${systems[@]}"; do preload "$system" "$loaded" "$keys"; done
        loaded=$keys
        log "$keys keys: $RUNS round(s) of ${#WORKLOADS[@]} workloads, $DURATION per run"
        for run in $(seq 1 "$RUNS"); do
            for workload in "${WORKLOADS[@]}"; do
                # The order of the systems rotates with the round.
                for turn in $(seq 0 $((count - 1))); do
                    system=${systems[$(( (turn + run - 1) % count ))]}
                    runs_workload "$system" "$workload" && run_wrk "$system" "$workload" "$run"
                done
            done
        done
    done

    {
        echo "## Keyper vs etcd, 3 nodes each on one machine"
        echo
        cat "$RESULTS_DIR/machine.txt"
        echo
        summarize
        echo
        echo "Both clusters ran on 127.0.0.1 at the same time; the client (wrk, -t$THREADS, --latency) ran on the same machine."
        echo "Preload times: $RESULTS_DIR/preload.tsv. Raw per-run numbers: $RESULTS_TSV; wrk output: $RESULTS_DIR/wrk/."
    } >"$RESULTS_DIR/summary.md"
    echo
    cat "$RESULTS_DIR/summary.md"
    echo
    log "results: $RESULTS_DIR (summary.md, results.tsv, scaling.tsv, machine.txt, wrk/)"
}

main "$@"
