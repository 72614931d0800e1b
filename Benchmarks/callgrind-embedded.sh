#!/bin/bash
# Userland instructions per request of the embedded Hummingbird server (Benchmarks/HummingbirdEmbedded,
# release), counted by callgrind: deterministic enough for step-by-step comparisons on a loaded machine,
# where CPU time is not. Same approach as Scripts/callgrind-per-request.sh (lbserve): one nginx worker
# on 3 ports as backends, the server under valgrind on private loopback ports, a warm-up, counters
# zeroed, a bounded wrk load, counters dumped, instructions divided by the requests wrk completed.
# The targets run one after the other in the same server process (zero, load, dump per target):
#
#   trivial   GET /hello   Hummingbird's own route (no proxying)
#   lbkit     GET /api/x   Hummingbird + LBKit (router.balance("/api", across: 3 backends))
#   lbserve   GET /api/x   standalone lbserve (root package .build/release/lbserve), its own valgrind run
#   vapor-trivial, vapor-lbkit   the same two routes in Benchmarks/VaporEmbedded (release), one valgrind run
#   idle      no load: the app's instructions per second at rest (timers, health checks)
#
# usage: bash Benchmarks/callgrind-embedded.sh [trivial lbkit lbserve]   (from anywhere; default: trivial lbkit)
# env:   HBE [Benchmarks/HummingbirdEmbedded/.build/release/HummingbirdEmbedded]  LBSERVE [.build/release/lbserve]
#        DUR [8] s  WARMUP [3] s  CONNS [16]  BASE_PORT [15300]  LB_EXECUTOR=1 (run the app on LBKit's loops)
#        VG_ARGS extra valgrind flags (--separate-threads=yes: instructions per request per thread)
#        KEEP=1 keeps the callgrind files (paths printed)  TOP=N prints the N functions with the most self
#        cost per target (/work/tools/cgself.py when present, else callgrind_annotate)
# Output per target: `<target>: instructions/request N (I instructions, R requests, non-2xx E, cC)`.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGETS=("$@"); [ ${#TARGETS[@]} -eq 0 ] && TARGETS=(trivial lbkit)
DUR=${DUR:-8}; WARMUP=${WARMUP:-3}; CONNS=${CONNS:-16}; BASE=${BASE_PORT:-15300}
HBE=${HBE:-$ROOT/Benchmarks/HummingbirdEmbedded/.build/release/HummingbirdEmbedded}
LBSERVE=${LBSERVE:-$ROOT/.build/release/lbserve}
VPE=${VPE:-$ROOT/Benchmarks/VaporEmbedded/.build/release/VaporEmbedded}
TMP=$(mktemp -d /tmp/cgemb.XXXX); PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM -- -"$p" 2>/dev/null; done; sleep 1
  for p in "${PIDS[@]}"; do kill -KILL -- -"$p" 2>/dev/null; done
  [ "${KEEP:-0}" = 1 ] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "callgrind-embedded: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
waitp() { for _ in $(seq 900); do port_open "$1" && return 0; sleep 0.1; done; die "port $1 never opened (logs in $TMP)"; }
start() { local name=$1; shift; setsid "$@" >"$TMP/$name.log" 2>&1 </dev/null & PIDS+=($!); }
for tool in objcopy valgrind callgrind_control callgrind_annotate nginx wrk gcc curl; do command -v $tool >/dev/null || die "$tool not found"; done

P1=$((BASE + 1)); P2=$((BASE + 2)); P3=$((BASE + 3)); HBP=$BASE; LBP=$((BASE + 4)); VPP=$((BASE + 5))
for p in $HBP $P1 $P2 $P3 $LBP $VPP; do port_open $p && die "port $p is already in use (set BASE_PORT)"; done
{ echo "daemon off; master_process on; worker_processes 1; worker_rlimit_nofile 16384; pid backend.pid;"
  echo "error_log backend.err warn; events { worker_connections 8192; }"
  echo "http { access_log off; keepalive_timeout 65s; keepalive_requests 1000000; default_type application/json;"
  for p in $P1 $P2 $P3; do echo "  server { listen 127.0.0.1:$p; location / { default_type application/json; return 200 '{\"handled_by\":$p}'; } }"; done
  echo "}"; } >"$TMP/backend.conf"
start backends nginx -p "$TMP" -e "$TMP/backend.err" -c "$TMP/backend.conf"
for p in $P1 $P2 $P3; do waitp $p; done
BURLS=(http://127.0.0.1:$P1 http://127.0.0.1:$P2 http://127.0.0.1:$P3)

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
gcc -O2 -shared -fPIC -o "$TMP/shim.so" "$TMP/shim.c" || die "shim build failed"
grind() { # name, out-file prefix, command... (environment through `env` before valgrind: valgrind does
  # not follow an exec, so `valgrind env X=1 server` would run the server natively)
  local name=$1 out=$2; shift 2
  start "$name" env LD_PRELOAD="$TMP/shim.so" PORT=$HBP LB_EXECUTOR="${LB_EXECUTOR:-0}" \
    BACKENDS="http://127.0.0.1:$P1,http://127.0.0.1:$P2,http://127.0.0.1:$P3" valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no ${VG_ARGS:-} "$@"
}

idle() { # pid, out-file prefix: instructions per second with no load (timers, health checks, housekeeping)
  local pid=$1 prefix=$2 before f ir
  sleep 1; before=$(ls "$prefix"* 2>/dev/null | wc -l)
  callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control -z $pid failed"
  sleep "$DUR"
  callgrind_control -d "$pid" >/dev/null 2>&1
  for _ in $(seq 100); do [ "$(ls "$prefix"* 2>/dev/null | wc -l)" -gt "$before" ] && break; sleep 0.1; done
  sleep 0.5; f=$(ls -t "$prefix"* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
  echo "idle: $((ir / DUR)) instructions/s"
}

measure() { # target, pid, url, out-file prefix
  local target=$1 pid=$2 url=$3 prefix=$4 out n non2xx f ir before
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$url")
  [ "$code" = 200 ] || die "$target: GET $url answered $code (logs in $TMP)"
  timeout $((WARMUP + 60)) wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null 2>&1
  sleep 0.5
  before=$(ls "$prefix"* 2>/dev/null | wc -l)
  touch "$TMP/zeroed.$target"; sleep 1
  callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control -z $pid failed"
  out=$(timeout $((DUR + 60)) wrk -t1 -c"$CONNS" -d"${DUR}s" "$url" 2>&1)
  sleep 0.3
  callgrind_control -d "$pid" >/dev/null 2>&1
  for _ in $(seq 100); do [ "$(ls "$prefix"* 2>/dev/null | wc -l)" -gt "$before" ] && break; sleep 0.1; done
  sleep 0.5
  n=$(awk '/requests in/ {print $1}' <<<"$out"); non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  [ -n "$n" ] && [ "$n" -gt 0 ] || die "$target: wrk failed: $out"
  f=$(ls -t "$prefix"* | head -1)
  if [ -n "${VG_ARGS:-}" ] && [[ "$VG_ARGS" == *separate-threads=yes* ]]; then   # one file per thread
    ir=0; for g in $(ls "$prefix"*-[0-9]* | sort); do [ "$g" -nt "$TMP/zeroed.$target" ] || continue
      t=$(awk '/^summary:|^totals:/ {print $2; exit}' "$g"); ir=$((ir + ${t:-0}))
      [ "${t:-0}" -gt 0 ] && echo "  thread file ${g##*/}: $((t / n)) instructions/request"; done
    f=$(ls -t "$prefix"* | head -1)
  else
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
  fi
  echo "$target: instructions/request $((ir / n)) ($ir instructions, $n requests, non-2xx ${non2xx:-0}, c$CONNS)"
  cp "$f" "$TMP/$target.cg"
  [ "${KEEP:-0}" = 1 ] && echo "  callgrind file: $TMP/$target.cg"
  if [ -n "${TOP:-}" ]; then
    if [ -f /work/tools/cgself.py ]; then python3 /work/tools/cgself.py "$TMP/$target.cg" "$TOP"
    else callgrind_annotate "$TMP/$target.cg" 2>/dev/null | sed -n "1,$((TOP + 25))p" | cut -c1-200; fi
  fi
}

want() { local t; for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
if want trivial || want lbkit; then
  [ -x "$HBE" ] || die "missing $HBE (cd Benchmarks/HummingbirdEmbedded && swift build -c release)"
  # Valgrind 3.19 cannot read the DWARF 5 debug info clang writes for the C targets of the dependency
  # graph ("Possibly corrupted debuginfo file"): run a copy without debug info (the symbol table,
  # which names the functions, stays).
  objcopy --strip-debug "$HBE" "$TMP/HummingbirdEmbedded" || die "objcopy failed"
  grind hb "$TMP/hb.out" "$TMP/HummingbirdEmbedded" "${BURLS[@]}"
  HB_PID=${PIDS[-1]}; waitp $HBP
  VG=$(pgrep -s "$HB_PID" -f valgrind | head -1); VG=${VG:-$HB_PID}   # the valgrind'ed process of that session
  want idle && idle "$VG" "$TMP/hb.out"
  want trivial && measure trivial "$VG" "http://127.0.0.1:$HBP/hello" "$TMP/hb.out"
  want lbkit && measure lbkit "$VG" "http://127.0.0.1:$HBP/api/x" "$TMP/hb.out"
fi
if want lbserve; then
  [ -x "$LBSERVE" ] || die "missing $LBSERVE (swift build -c release --product lbserve)"
  grind lbserve "$TMP/lb.out" "$LBSERVE" --host 127.0.0.1 --port $LBP \
    --backend "${BURLS[0]}" --backend "${BURLS[1]}" --backend "${BURLS[2]}"
  LB_PID=${PIDS[-1]}; waitp $LBP
  VG=$(pgrep -s "$LB_PID" -f valgrind | head -1); VG=${VG:-$LB_PID}
  measure lbserve "$VG" "http://127.0.0.1:$LBP/api/x" "$TMP/lb.out"
fi
if want vapor-trivial || want vapor-lbkit; then
  [ -x "$VPE" ] || die "missing $VPE (cd Benchmarks/VaporEmbedded && swift build -c release)"
  objcopy --strip-debug "$VPE" "$TMP/VaporEmbedded" || die "objcopy failed"
  grind vapor "$TMP/vp.out" "$TMP/VaporEmbedded" serve --env production --hostname 127.0.0.1 --port $VPP
  VP_PID=${PIDS[-1]}; waitp $VPP
  VG=$(pgrep -s "$VP_PID" -f valgrind | head -1); VG=${VG:-$VP_PID}
  want vapor-trivial && measure vapor-trivial "$VG" "http://127.0.0.1:$VPP/hello" "$TMP/vp.out"
  want vapor-lbkit && measure vapor-lbkit "$VG" "http://127.0.0.1:$VPP/api/x" "$TMP/vp.out"
fi
exit 0
