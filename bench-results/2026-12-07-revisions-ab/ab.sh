#!/usr/bin/env bash
# A/B: two keyper binaries, 3-node release cluster each, 1000 keys, wrk reads and writes.
set -u
LUA=/work/main/scripts/bench/keyper.lua
KEYS=1000
run_one() { # bin label
  local BIN=$1 L=$2 D=/tmp/ab-$2
  pkill -f "$D/node" ; sleep 0.5; rm -rf $D; mkdir -p $D
  for i in 1 2 3; do
    extra=""; [ $i != 1 ] && extra="--join http://127.0.0.1:19411"
    $BIN --data-dir $D/node$i --http-addr 127.0.0.1:1941$i --node-id node$i --enable-raft --raft-addr 127.0.0.1:1951$i --log-level warning $extra > $D/node$i.log 2>&1 &
    sleep 1.5
  done
  sleep 3
  $BIN bench --endpoints http://127.0.0.1:19411 --keys $KEYS --preload-only --connections 16 > /dev/null 2>&1
  for w in read write read write; do
    r=$(wrk -t2 -c64 -d8s --latency --timeout 10s -s $LUA http://127.0.0.1:19411 -- $w $KEYS 256 90 0 2 2>&1 | grep BENCH_RESULT | tr ' ' '\n' | grep -E '^(rps|p50_us|p99_us)=' | tr '\n' ' ')
    echo "$L $w $r"
  done
  pkill -f "$D/node"; sleep 1
}
for round in 1 2; do
  run_one /tmp/keyper-before-revs before
  run_one /tmp/keyper-after-revs after
done
