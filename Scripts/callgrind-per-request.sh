#!/bin/bash
# Userland instructions per proxied request of lbserve, counted by callgrind (stable on a loaded
# machine, unlike CPU time). Starts its own nginx backend (1 worker, 3 ports) and lbserve under
# valgrind on private loopback ports, warms up, zeroes the counters, runs a bounded wrk load,
# dumps the counters and divides the instructions by the requests wrk completed.
#
# usage: Scripts/callgrind-per-request.sh [post|get]     (from the project root)
# env:   LBSERVE [.build/release/lbserve]  DUR [10] s  CONNS [16]  BASE_PORT [15100]
#        LB_ARGS   extra lbserve flags      KEEP=1 keeps the callgrind output (path printed)
#        LB=nginx  counts nginx instead (the bench's nginx-1w.conf, one worker, no master), the
#                  yardstick for lbserve's count under the same load
# Output: one line `instructions/request: N (I instructions, R requests)`, then the top
# functions by inclusive and self cost when TOP=N is set.
set -u
MODE=${1:-post}; DUR=${DUR:-10}; CONNS=${CONNS:-16}; BASE=${BASE_PORT:-15100}
LBSERVE=${LBSERVE:-.build/release/lbserve}
HERE="$(cd "$(dirname "$0")" && pwd)"
BENCH=${BENCH:-/work/shared/bench}
TMP=$(mktemp -d /tmp/cgpr.XXXX); PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM -- -$p 2>/dev/null; done; sleep 1
  for p in "${PIDS[@]}"; do kill -KILL -- -$p 2>/dev/null; done
  [ "${KEEP:-0}" = 1 ] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
waitp() { for i in $(seq 600); do port_open $1 && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
start() { setsid "$@" >"$TMP/out.${#PIDS[@]}" 2>&1 </dev/null & PIDS+=($!); }

P1=$((BASE + 1)); P2=$((BASE + 2)); P3=$((BASE + 3)); LBP=$BASE
sed -e "s/5001/$P1/g; s/5002/$P2/g; s/5003/$P3/g" "$BENCH/conf/backend-nginx.conf" >"$TMP/backend.conf"
start nginx -p "$TMP" -e "$TMP/b.err" -c "$TMP/backend.conf"
for p in $P1 $P2 $P3; do waitp $p; done
# Valgrind 3.19 writes into the signal mask given to rt_sigsuspend, and libdispatch (the main queue
# of an async main) passes a read-only one: valgrind dies with SIGSEGV. Preload a sigsuspend that
# passes a copy.
cat >"$TMP/shim.c" <<'SHIM'
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
int sigsuspend(const sigset_t *mask) { sigset_t copy = *mask; return (int)syscall(SYS_rt_sigsuspend, &copy, 8); }
SHIM
gcc -O2 -shared -fPIC -o "$TMP/shim.so" "$TMP/shim.c" || exit 1
if [ "${LB:-lbserve}" = nginx ]; then
  sed -e "s/5001/$P1/g; s/5002/$P2/g; s/5003/$P3/g; s/127.0.0.1:8081/127.0.0.1:$LBP/; s/master_process on/master_process off/" \
    "$BENCH/conf/nginx-1w.conf" >"$TMP/lb.conf"
  start valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" --dump-instr=no \
    nginx -p "$TMP" -e "$TMP/lb.err" -c "$TMP/lb.conf"
else
start env LD_PRELOAD="$TMP/shim.so" valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" --dump-instr=no \
  $LBSERVE --host 127.0.0.1 --port $LBP ${LB_ARGS:-} \
  --backend http://127.0.0.1:$P1 --backend http://127.0.0.1:$P2 --backend http://127.0.0.1:$P3
fi
waitp $LBP
# Warm-up: connections to backends opened, caches filled.
timeout 60 wrk -t1 -c$CONNS -d3s -s "$BENCH/lua/$MODE.lua" http://127.0.0.1:$LBP/ >/dev/null 2>&1
sleep 0.5
callgrind_control -z ${PIDS[-1]} >/dev/null 2>&1 || callgrind_control -z >/dev/null
out=$(timeout $((DUR + 60)) wrk -t1 -c$CONNS -d${DUR}s -s "$BENCH/lua/$MODE.lua" http://127.0.0.1:$LBP/ 2>&1)
sleep 0.3
callgrind_control -d ${PIDS[-1]} >/dev/null 2>&1
sleep 1
n=$(echo "$out" | awk '/requests in/ {print $1}')
non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
f=$(ls -t "$TMP"/cg.out* | head -1)
ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
# Under valgrind a cold start is slow enough for hang detection to eject a backend now and then;
# it comes back in slow start, whose weighted choice costs about 1,000 instructions more per
# request. Such a run is named, so that it is compared only with runs like it.
health=$(grep -c '\[HEALTH\]' "$TMP/out.1" 2>/dev/null)
echo "instructions/request: $((ir / n)) ($ir instructions, $n requests, non-2xx ${non2xx:-0}, mode $MODE, c$CONNS${health:+, health transitions $health})"
if [ -n "${TOP:-}" ]; then
  callgrind_annotate --inclusive=yes "$f" 2>/dev/null | sed -n "1,$((TOP + 25))p" | cut -c1-220 >"$TMP/incl.txt"
  callgrind_annotate "$f" 2>/dev/null | sed -n "1,$((TOP + 25))p" | cut -c1-220 >"$TMP/self.txt"
  echo "--- inclusive"; cat "$TMP/incl.txt"; echo "--- self"; cat "$TMP/self.txt"
fi
[ -n "${COPY_TO:-}" ] && cp "$f" "$COPY_TO"
exit 0
