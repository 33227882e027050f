#!/usr/bin/env bash
# The script that produced ten-10m.log and ten-1m.log (KEYS=1000000), kept as run: BIN is a
# release build of keyper (swift build -c release), ports 19201-19204 and 19301-19304, data in
# /tmp/ten. The same as bench-results/2026-11-30-10m/ten.sh, but the new member logs at info
# level, and memory and the snapshot lines of every node are printed after its catch-up.
# 10M keys on a 3-node release cluster: load, size, restart after kill -9, reads/writes, a new member's catch-up.
set -u
BIN=/tmp/keyper-ten-bin
D=/tmp/ten
KEYS=${KEYS:-10000000}
LUA=/work/main/scripts/bench/keyper.lua
log() { echo "[ten $(date +%H:%M:%S)] $*"; }
start_node() { # i [extra...]
  local i=$1; shift
  $BIN --data-dir $D/node$i --http-addr 127.0.0.1:1920$i --node-id node$i --enable-raft --raft-addr 127.0.0.1:1930$i --log-level notice "$@" >> $D/node$i.log 2>&1 &
}
status() { curl -sf --max-time 5 127.0.0.1:1920$1/v1/status; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get('$1'))"; }
leader_url() { for i in 1 2 3; do s=$(status $i) || continue; l=$(echo "$s" | field leader_http_addr); [ "$l" != None ] && { echo "http://$l"; return; }; done; }
rss() { for i in "$@"; do p=$(pgrep -f "$D/node$i " | head -1); echo "node$i rss $(( $(awk '/VmRSS/{print $2}' /proc/$p/status) / 1024 )) MiB"; done; }
pkill -f "$D/node" ; sleep 1
if [ "${SKIP_LOAD:-0}" != 1 ]; then
  rm -rf $D; mkdir -p $D
  start_node 1; sleep 2
  start_node 2 --join http://127.0.0.1:19201; start_node 3 --join http://127.0.0.1:19201
  sleep 5
  log "loading $KEYS keys"
  t0=$(date +%s)
  $BIN bench --endpoints http://127.0.0.1:19201 --keys $KEYS --preload-only --connections 64 2>&1 | tr '\r' '\n' | grep -vE "^\s*$" | awk 'NR % 50 == 0 || /keys\/s|loaded|rate/' 
  log "load took $(( $(date +%s) - t0 )) s"
fi
sleep 5
rss 1 2 3
du -sh $D/node*/state $D/node*/wal $D/node*/snapshots 2>/dev/null
status 1 | field keys
L=$(leader_url); log "leader $L"
OUT=${OUT:-/tmp/ten-results}; mkdir -p $OUT
for run in 1 2 3; do for w in write read; do
  wrk -t2 -c64 -d10s --latency --timeout 10s -s $LUA $L -- $w $KEYS 256 90 0 2 > $OUT/run$run-$w.txt 2>&1
  log "run $run $w: $(grep -E '^BENCH_RESULT' $OUT/run$run-$w.txt | tr ' ' '\n' | grep -E '^(rps|p50_us|p99_us|status_errors|timeouts)=' | tr '\n' ' ')"
done; done
python3 - "$OUT" "$KEYS" <<'PY'
import sys, glob, statistics, re
out, keys = sys.argv[1], sys.argv[2]
rows = ["keys\tsystem\tworkload\trps\tp50_us\tp99_us\truns"]
for w in ("write", "read"):
    vals = []
    for f in sorted(glob.glob(f"{out}/run*-{w}.txt")):
        line = [l for l in open(f) if l.startswith("BENCH_RESULT")][-1]
        d = dict(kv.split("=") for kv in line.split()[1:])
        vals.append((float(d["rps"]), int(d["p50_us"]), int(d["p99_us"])))
    rows.append(f"{keys}\tkeyper\t{w}\t{statistics.median(v[0] for v in vals):.1f}\t{int(statistics.median(v[1] for v in vals))}\t{int(statistics.median(v[2] for v in vals))}\t{len(vals)}")
open(f"{out}/scaling.tsv", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY
log "kill -9 all three, restart"
pkill -9 -f "$D/node"; sleep 1
t0=$(date +%s.%N)
start_node 1; start_node 2; start_node 3
until status 1 >/dev/null && [ "$(status 1 | field leader_id)" != None ]; do sleep 0.2; done
t1=$(date +%s.%N); log "restart after kill -9: serving with a leader after $(echo "$t1 - $t0" | bc) s"
rss 1 2 3
L=$(leader_url)
wrk -t2 -c64 -d10s --latency --timeout 10s -s $LUA $L -- write $KEYS 256 90 0 2 2>&1 | grep -E "Requests/sec|99%"
log "node4 joins (needs a snapshot)"
t0=$(date +%s.%N)
start_node 4 --join $L --log-level info
until s=$(status 4) && [ "$(echo "$s" | field keys)" = "$KEYS" ]; do sleep 1; done
t1=$(date +%s.%N); log "node4 holds all $KEYS keys after $(echo "$t1 - $t0" | bc) s"
rss 4; sleep 10; log "ten seconds later"; rss 1 2 3 4
du -sh $D/node4/state $D/node1/snapshots $D/node2/snapshots $D/node3/snapshots 2>/dev/null
grep -hiE "snapshot|held the loop" $D/node*.log | cut -c1-400 | tail -20
log done
