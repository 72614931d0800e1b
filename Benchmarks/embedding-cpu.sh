#!/bin/bash
# LBKit embedded in a framework vs standalone lbserve vs a hand-written AsyncHTTPClient forwarder:
# server CPU µs per request and req/s, side by side in one run (issue 10, "Measured side by side").
#
#   hb-trivial   Hummingbird, GET /hello returning a short string (no proxying)       Benchmarks/HummingbirdEmbedded
#   hb-lbkit     Hummingbird + LBKit, router.balance("/api", ...), GET /api/x          same process as hb-trivial
#   lbserve      standalone lbserve (root package), GET /api/x                          .build/release/lbserve
#   hb-ahc       Hummingbird route forwarding round robin with AsyncHTTPClient 1.37.0   Benchmarks/HummingbirdAHCGateway
#   hb-*-loops   the same two routes in a second HummingbirdEmbedded process run with LB_EXECUTOR=1: the app
#                runs under withTaskExecutorPreference(balancer.eventLoopGroup), so Hummingbird's request
#                handling runs on LBKit's loops instead of the global pool (HB_LOOPS=0 leaves it out)
#   hb-*-pool    the same two routes in a third HummingbirdEmbedded process run with LB_KEEP_JOBS=0: the
#                balancer's keepsResumedTasksOnLoops is false, so a request resumed by LBKit's loop (the
#                backend answered) goes back to a thread of the global pool, as before that setting
#                (HB_POOL=0 leaves it out)
#   vapor-trivial / vapor-lbkit (when the Vapor release build is there)                Benchmarks/VaporEmbedded
#   hb-raw       the floor for any forwarder in Hummingbird: GET /raw/x forwarded round robin by a minimal
#                hand-written HTTP/1.1 exchange over a SwiftNIO channel on the client connection's own event
#                loop (kept-alive upstream connections, no retries, health, limits or header handling)
#                Benchmarks/HummingbirdRawForward (HB_FLOOR=0 leaves it, hb-block and hb-raw-nio out)
#   hb-block     the absolute lower bound: GET /block/x in the same process, the handler's own thread forwarding
#                with blocking system calls on kept-alive sockets (wrong in a real server: it blocks a thread
#                of the concurrency pool; here it shows what crossing to the backend costs at the least)
#   hb-*-nio     hb-trivial, hb-lbkit (HB_NIO=0 leaves them out) and hb-raw in processes that first call
#                SwiftNIO's executor take-over (NIO_TAKEOVER=1): Swift concurrency's global executor is NIO's
#                event loops, so a handler runs on the loop that read its request
#
# Every server is a release build, bound to 127.0.0.1, proxying to the same 3 backends: the root package's release
# echo on 3 ports (one process), or with BACKEND=nginx one nginx worker on 3 ports, as
# ../shared/bench/conf/backend-nginx.conf (nginx must be installed).
# Per run: 2 s wrk warm-up, then `wrk -t1 -c32 -d8s` GET (wrapped in timeout); the server process's CPU time
# (utime+stime, all threads, /proc/PID/stat) before/after, divided by the requests wrk completed; likewise the
# server's context switches (voluntary + involuntary, summed over its threads in /proc/PID/task/*/status; a thread
# that exits during the run takes its count with it), which say how often a request's work moves between
# threads and depend less on the machine's load than CPU time does. Rounds are
# interleaved (a b c d e f, a b c d e f, ...) and the table gives medians. Each run also records the CPU used by
# processes this script did not start ("other CPU", % of one core, 200 % = both cores) and the 1-min load
# average; before each round the script waits up to QUIET_WAIT s for other CPU to drop under FOREIGN_MAX %.
# Nothing is pinned. Only processes the script started are stopped, by their process group.
#
# usage: bash Benchmarks/embedding-cpu.sh        (from anywhere; takes ~5 min + builds + quiet waits)
# knobs: BUILD=1 (0: use the existing release binaries)  ROUNDS=3  DUR=8  WARMUP=2  CONNS=32  THREADS=1
#        HB_LOOPS=1|0  HB_POOL=1|0  HB_FLOOR=1|0  HB_NIO=1|0  BACKEND=echo|nginx  VAPOR=auto|0 (auto: build VaporEmbedded with at most VAPOR_BUILD_TIMEOUT=1200 s,
#        skip Vapor if that fails)  FOREIGN_MAX=30  QUIET_WAIT=120  BASE_PORT=8490  BACKEND_BASE=5490
#        RESULTS=path of the markdown report (default Benchmarks/results/embedding-<date>.md)
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD=${BUILD:-1}; ROUNDS=${ROUNDS:-3}; DUR=${DUR:-8}; WARMUP=${WARMUP:-2}; CONNS=${CONNS:-32}; THREADS=${THREADS:-1}
HB_LOOPS=${HB_LOOPS:-1}; HB_POOL=${HB_POOL:-1}; HB_FLOOR=${HB_FLOOR:-1}; HB_NIO=${HB_NIO:-1}; BACKEND=${BACKEND:-echo}; VAPOR=${VAPOR:-auto}; VAPOR_ASKED=$VAPOR; VAPOR_BUILD_TIMEOUT=${VAPOR_BUILD_TIMEOUT:-1200}
FOREIGN_MAX=${FOREIGN_MAX:-30}; QUIET_WAIT=${QUIET_WAIT:-120}
BASE_PORT=${BASE_PORT:-8490}; BACKEND_BASE=${BACKEND_BASE:-5490}
RESULTS=${RESULTS:-$ROOT/Benchmarks/results/embedding-$(date +%F).md}
RAW_PORT=$((BASE_PORT + 7)); RAWN_PORT=$((BASE_PORT + 8)); HBN_PORT=$((BASE_PORT + 9)); HB_PORT=$((BASE_PORT + 1)); LB_PORT=$((BASE_PORT + 2)); AHC_PORT=$((BASE_PORT + 3)); HBL_PORT=$((BASE_PORT + 4)); VAPOR_PORT=$((BASE_PORT + 5)); HBK_PORT=$((BASE_PORT + 6))
BPORTS=($((BACKEND_BASE + 1)) $((BACKEND_BASE + 2)) $((BACKEND_BASE + 3)))
BURLS=(); for p in "${BPORTS[@]}"; do BURLS+=("http://127.0.0.1:$p"); done
HZ=$(getconf CLK_TCK); NCPU=$(nproc)
GITDESC="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"   # before any build or report is written
[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && GITDESC+=" (+ uncommitted changes)"
say() { echo "[embedding-cpu] $*"; }
die() { say "error: $*"; exit 1; }
for tool in wrk curl timeout setsid; do command -v $tool >/dev/null || die "$tool not found"; done
[ "$BACKEND" = nginx ] && { command -v nginx >/dev/null || die "nginx not found (apt-get install nginx, or BACKEND=echo)"; }

# ---- builds (release) ----
HBE="$ROOT/Benchmarks/HummingbirdEmbedded"; HRF="$ROOT/Benchmarks/HummingbirdRawForward"; AHC="$ROOT/Benchmarks/HummingbirdAHCGateway"; VPE="$ROOT/Benchmarks/VaporEmbedded"
VAPOR_NOTE=""; [ "$VAPOR" = 0 ] && VAPOR_NOTE="Vapor not measured (VAPOR=0)"
if [ "$BUILD" = 1 ]; then
  say "building release: lbserve, echo"
  (cd "$ROOT" && swift build -c release --product lbserve && swift build -c release --product echo) || die "root build failed"
  say "building release: Benchmarks/HummingbirdEmbedded"
  (cd "$HBE" && swift build -c release) || die "HummingbirdEmbedded build failed"
  say "building release: Benchmarks/HummingbirdAHCGateway"
  (cd "$AHC" && swift build -c release) || die "HummingbirdAHCGateway build failed"
  if [ "$HB_FLOOR" = 1 ]; then
    say "building release: Benchmarks/HummingbirdRawForward"
    (cd "$HRF" && swift build -c release) || die "HummingbirdRawForward build failed"
  fi
  if [ "$VAPOR" != 0 ]; then
    say "building release: Benchmarks/VaporEmbedded (at most ${VAPOR_BUILD_TIMEOUT} s)"
    t0=$(date +%s)
    if (cd "$VPE" && timeout "$VAPOR_BUILD_TIMEOUT" swift build -c release); then
      VAPOR_NOTE="Vapor release build: $(( $(date +%s) - t0 )) s"
    else
      VAPOR_NOTE="Vapor release build did not finish within ${VAPOR_BUILD_TIMEOUT} s (or failed): Vapor skipped"
      VAPOR=0
    fi
    say "$VAPOR_NOTE"
  fi
fi
LBSERVE_BIN="$ROOT/.build/release/lbserve"; ECHO_BIN="$ROOT/.build/release/echo"
HBE_BIN="$HBE/.build/release/HummingbirdEmbedded"; AHC_BIN="$AHC/.build/release/HummingbirdAHCGateway"
VPE_BIN="$VPE/.build/release/VaporEmbedded"; HRF_BIN="$HRF/.build/release/HummingbirdRawForward"
FLOOR_BINS=(); [ "$HB_FLOOR" = 1 ] && FLOOR_BINS=("$HRF_BIN")
for b in "$LBSERVE_BIN" "$HBE_BIN" "$AHC_BIN" "${FLOOR_BINS[@]}"; do [ -x "$b" ] || die "missing $b (run with BUILD=1)"; done
[ "$BACKEND" = echo ] && { [ -x "$ECHO_BIN" ] || die "missing $ECHO_BIN"; }
if [ "$VAPOR" != 0 ] && [ ! -x "$VPE_BIN" ]; then VAPOR=0; VAPOR_NOTE=${VAPOR_NOTE:-"no Vapor release binary: Vapor skipped"}; fi

# ---- processes: each in its own session / process group; stopped by that group only ----
TMP=$(mktemp -d /tmp/embedding-cpu.XXXX); PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM -- -"$p" 2>/dev/null; done; sleep 1
  for p in "${PIDS[@]}"; do kill -KILL -- -"$p" 2>/dev/null; done; rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
waitp() { for _ in $(seq 300); do port_open "$1" && return 0; sleep 0.1; done; die "port $1 never opened (see $TMP)"; }
start() { local name=$1; shift; setsid "$@" >"$TMP/$name.log" 2>&1 </dev/null & PIDS+=($!); }
for p in "${BPORTS[@]}" $HB_PORT $LB_PORT $AHC_PORT $HBL_PORT $VAPOR_PORT $HBK_PORT $RAW_PORT $RAWN_PORT $HBN_PORT; do port_open $p && die "port $p is already in use (set BASE_PORT / BACKEND_BASE)"; done

if [ "$BACKEND" = nginx ]; then   # same as ../shared/bench/conf/backend-nginx.conf, on BPORTS
  { echo "daemon off; master_process on; worker_processes 1; worker_rlimit_nofile 16384; pid backend.pid;"
    echo "error_log backend.err warn; events { worker_connections 8192; }"
    echo "http { access_log off; keepalive_timeout 65s; keepalive_requests 1000000; default_type application/json;"
    echo "  client_body_buffer_size 16k;"
    for p in "${BPORTS[@]}"; do echo "  server { listen 127.0.0.1:$p; location / { default_type application/json; return 200 '{\"handled_by\":$p}'; } }"; done
    echo "}"; } >"$TMP/backend-nginx.conf"
  start backends nginx -p "$TMP" -e "$TMP/backend.err" -c "$TMP/backend-nginx.conf"
else
  start backends "$ECHO_BIN" --host 127.0.0.1 --port "${BPORTS[0]}" --port "${BPORTS[1]}" --port "${BPORTS[2]}"
fi
BACKEND_PG=${PIDS[-1]}
for p in "${BPORTS[@]}"; do waitp $p; done

start hb env PORT=$HB_PORT "$HBE_BIN" "${BURLS[@]}"; HB_PID=${PIDS[-1]}
start lbserve "$LBSERVE_BIN" --host 127.0.0.1 --port $LB_PORT --backend "${BURLS[0]}" --backend "${BURLS[1]}" --backend "${BURLS[2]}"; LB_PID=${PIDS[-1]}
start ahc env PORT=$AHC_PORT "$AHC_BIN" "${BURLS[@]}"; AHC_PID=${PIDS[-1]}
if [ "$HB_LOOPS" = 1 ]; then start hb-loops env PORT=$HBL_PORT LB_EXECUTOR=1 "$HBE_BIN" "${BURLS[@]}"; HBL_PID=${PIDS[-1]}; fi
if [ "$HB_POOL" = 1 ]; then start hb-pool env PORT=$HBK_PORT LB_KEEP_JOBS=0 "$HBE_BIN" "${BURLS[@]}"; HBK_PID=${PIDS[-1]}; fi
RAWHOSTS=(); for p in "${BPORTS[@]}"; do RAWHOSTS+=("127.0.0.1:$p"); done
if [ "$HB_FLOOR" = 1 ]; then
  start raw env PORT=$RAW_PORT "$HRF_BIN" "${RAWHOSTS[@]}"; RAW_PID=${PIDS[-1]}
  start raw-nio env PORT=$RAWN_PORT NIO_TAKEOVER=1 "$HRF_BIN" "${RAWHOSTS[@]}"; RAWN_PID=${PIDS[-1]}
fi
if [ "$HB_NIO" = 1 ] || [ "$HB_FLOOR" = 1 ]; then start hb-nio env PORT=$HBN_PORT NIO_TAKEOVER=1 "$HBE_BIN" "${BURLS[@]}"; HBN_PID=${PIDS[-1]}; fi
if [ "$VAPOR" != 0 ]; then
  start vapor env BACKENDS="$(IFS=,; echo "${BURLS[*]}")" "$VPE_BIN" serve --env production --hostname 127.0.0.1 --port $VAPOR_PORT
  VAPOR_PID=${PIDS[-1]}
fi
waitp $HB_PORT; waitp $LB_PORT; waitp $AHC_PORT; [ "$HB_LOOPS" = 1 ] && waitp $HBL_PORT; [ "$HB_POOL" = 1 ] && waitp $HBK_PORT; [ "$VAPOR" != 0 ] && waitp $VAPOR_PORT
[ "$HB_FLOOR" = 1 ] && { waitp $RAW_PORT; waitp $RAWN_PORT; }; { [ "$HB_NIO" = 1 ] || [ "$HB_FLOOR" = 1 ]; } && waitp $HBN_PORT

# name:pid:port:path:what
TARGETS=("hb-trivial:$HB_PID:$HB_PORT:/hello:Hummingbird trivial route (GET /hello, no proxying)"
         "hb-lbkit:$HB_PID:$HB_PORT:/api/x:Hummingbird + LBKit (router.balance(\"/api\", across: 3 backends))"
         "lbserve:$LB_PID:$LB_PORT:/api/x:standalone lbserve, 3 backends"
         "hb-ahc:$AHC_PID:$AHC_PORT:/api/x:Hummingbird route forwarding round robin with AsyncHTTPClient 1.37.0")
if [ "$HB_LOOPS" = 1 ]; then
  TARGETS+=("hb-trivial-loops:$HBL_PID:$HBL_PORT:/hello:Hummingbird trivial route, app run on LBKit's loops (LB_EXECUTOR=1)"
            "hb-lbkit-loops:$HBL_PID:$HBL_PORT:/api/x:Hummingbird + LBKit, app run on LBKit's loops (LB_EXECUTOR=1)")
fi
if [ "$HB_POOL" = 1 ]; then
  TARGETS+=("hb-trivial-pool:$HBK_PID:$HBK_PORT:/hello:Hummingbird trivial route, balancer with keepsResumedTasksOnLoops = false (LB_KEEP_JOBS=0)"
            "hb-lbkit-pool:$HBK_PID:$HBK_PORT:/api/x:Hummingbird + LBKit, keepsResumedTasksOnLoops = false (LB_KEEP_JOBS=0)")
fi
if [ "$HB_FLOOR" = 1 ]; then
  TARGETS+=("hb-raw:$RAW_PID:$RAW_PORT:/raw/x:floor: Hummingbird route forwarding with a minimal NIO exchange on the connection's loop (no features)"
            "hb-block:$RAW_PID:$RAW_PORT:/block/x:lower bound: the handler's thread forwarding with blocking system calls (no features)")
fi
if [ "$HB_NIO" = 1 ] || [ "$HB_FLOOR" = 1 ]; then
  TARGETS+=("hb-trivial-nio:$HBN_PID:$HBN_PORT:/hello:Hummingbird trivial route, SwiftNIO's executor take-over (NIO_TAKEOVER=1)")
fi
if [ "$HB_NIO" = 1 ]; then
  TARGETS+=("hb-lbkit-nio:$HBN_PID:$HBN_PORT:/api/x:Hummingbird + LBKit, SwiftNIO's executor take-over (NIO_TAKEOVER=1)")
fi
if [ "$HB_FLOOR" = 1 ]; then
  TARGETS+=("hb-raw-nio:$RAWN_PID:$RAWN_PORT:/raw/x:floor, SwiftNIO's executor take-over (NIO_TAKEOVER=1)")
fi
if [ "$VAPOR" != 0 ]; then
  TARGETS+=("vapor-trivial:$VAPOR_PID:$VAPOR_PORT:/hello:Vapor trivial route (GET /hello, no proxying)"
            "vapor-lbkit:$VAPOR_PID:$VAPOR_PORT:/api/x:Vapor + LBKit (app.loadBalancer.use(pathPrefix: \"/api\"))")
fi

# ---- sanity: each target answers 200; each proxy spreads 6 requests over all 3 backends ----
for t in "${TARGETS[@]}"; do
  IFS=: read -r name pid port path what <<<"$t"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$path")
  [ "$code" = 200 ] || die "$name: GET $path answered $code (logs in $TMP)"
  if [ "$path" != /hello ]; then
    seen=$(for _ in 1 2 3 4 5 6; do curl -s --max-time 5 "http://127.0.0.1:$port$path"; echo; done | grep -o '"handled_by":[0-9]*' | sort -u | wc -l)
    [ "$seen" = 3 ] || die "$name: 6 requests reached $seen backends, not 3"
  fi
done
say "all targets answer; proxies reach all 3 backends"

# ---- CPU accounting ----
pswitches() { local t n s=0; for t in /proc/$1/task/*/status; do
    n=$(awk '/ctxt_switches/ {a += $2} END {print a + 0}' "$t" 2>/dev/null) && s=$((s + ${n:-0})); done; echo $s; }
pticks() { local l; { read -r l <"/proc/$1/stat"; } 2>/dev/null || { echo 0; return; }; set -- ${l##*) }; echo $(( ${12} + ${13} )); }
mine() { # CPU ticks of everything this script started: the process groups in PIDS (servers, backends; with
  # their reaped children) plus this shell and its reaped children (wrk, curl)
  local t=0 f l; local -A ours=(); for f in "${PIDS[@]}"; do ours[$f]=1; done
  for f in /proc/[0-9]*/stat; do { read -r l <"$f"; } 2>/dev/null || continue
    set -- ${l##*) }; [ -n "${ours[$3]:-}" ] && t=$((t + ${12} + ${13} + ${14} + ${15})); done
  read -r l </proc/$$/stat; set -- ${l##*) }; echo $((t + ${12} + ${13} + ${14} + ${15})); }
busy() { local cpu u n s i w q sq st rest; read -r cpu u n s i w q sq st rest </proc/stat; echo "$((u + n + s + q + sq)) $st"; }
now_ticks() { awk -v hz=$HZ '{printf "%d", $1 * hz}' /proc/uptime; }
# other CPU (% of one core) over the interval between two snapshots "busy steal mine wall"
other_pct() { awk -v b0=$1 -v b1=$5 -v m0=$3 -v m1=$7 -v w0=$4 -v w1=$8 'BEGIN{d=w1-w0; if (d<=0) d=1; o=(b1-b0)-(m1-m0); if (o<0) o=0; printf "%.0f", 100*o/d}'; }
steal_pct() { awk -v s0=$2 -v s1=$6 -v w0=$4 -v w1=$8 'BEGIN{d=w1-w0; if (d<=0) d=1; printf "%.0f", 100*(s1-s0)/d}'; }
snapshot() { echo "$(busy) $(mine) $(now_ticks)"; }
quiet_wait() { # before a round: up to QUIET_WAIT s for other CPU < FOREIGN_MAX
  local waited=0 a b o
  while :; do
    a=$(snapshot); sleep 2; b=$(snapshot); o=$(other_pct $a $b)
    [ "$o" -le "$FOREIGN_MAX" ] && { say "other CPU ${o}% (quiet)"; return; }
    waited=$((waited + 2))
    [ $waited -ge "$QUIET_WAIT" ] && { say "other CPU ${o}% after waiting ${waited} s: running anyway (contended)"; return; }
  done
}

others() { # the 5 busiest processes over 1 s that this script did not start: "name pid %cpu"
  local -A ours=(); local p; for p in "${PIDS[@]}"; do ours[$p]=1; done
  top -b -n2 -d1 -w 200 2>/dev/null | awk '/^top -/{f++} f==2 && $1 ~ /^[0-9]+$/ && $9 >= 1 {print $1, $9, $12}' |
    while read -r pid cpu cmd; do pg=$(awk '{sub(/.*\) /, ""); print $3}' /proc/$pid/stat 2>/dev/null)
      [ -n "${ours[$pg]:-}" ] || [ "$pid" = $$ ] || [ "$cmd" = top ] || echo "$cmd($pid) $cpu%"; done | head -5 | tr '\n' ' '; }

RUNS="$TMP/runs.tsv"; : >"$RUNS"; OTHERS=""
for r in $(seq "$ROUNDS"); do
  quiet_wait
  o=$(others); OTHERS+="- round $r: ${o:-none}"$'\n'; say "busiest other processes: ${o:-none}"
  for t in "${TARGETS[@]}"; do
    IFS=: read -r name pid port path what <<<"$t"
    url="http://127.0.0.1:$port$path"
    timeout $((WARMUP + 20)) wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null 2>&1
    s0=$(snapshot); c0=$(pticks "$pid"); w0=$(pswitches "$pid")
    out=$(timeout $((DUR + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" "$url" 2>&1)
    c1=$(pticks "$pid"); w1=$(pswitches "$pid"); s1=$(snapshot)
    n=$(awk '/requests in/ {print $1}' <<<"$out"); rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' <<<"$out")
    [ -n "$n" ] && [ "$n" -gt 0 ] || { say "$name: wrk failed: $out"; n=0; rps=0; }
    us=$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN{if (n>0) printf "%.1f", c/hz*1e6/n; else print "nan"}')
    cs=$(awk -v c=$((w1 - w0)) -v n="$n" 'BEGIN{if (n>0) printf "%.2f", c/n; else print "nan"}')
    other=$(other_pct $s0 $s1); steal=$(steal_pct $s0 $s1); load=$(cut -d' ' -f1 /proc/loadavg)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$n" "$rps" "$us" "${non2xx:-0}" "${sockerr:-0}" "$other" "$steal" "$load" "$cs" >>"$RUNS"
    say "round $r $name: $n requests, $rps req/s, $us µs CPU/request, $cs context switches/request, non-2xx ${non2xx:-0}, socket errors ${sockerr:-0}, other CPU ${other}%, steal ${steal}%, load $load"
  done
done

# ---- report ----
med() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -F'\t' -v t="$1" -v c="$2" '$2==t {print $c}' "$RUNS" | tr '\n' ' '; }
range() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{print lo "–" hi}'; }
declare -A MUS MRPS
TABLE="| target | what | CPU µs/request, median (range) | context switches/request, median (range) | req/s, median (range) | non-2xx + socket errors | other CPU % of one core, median (max) | load 1-min, median |
|---|---|---|---|---|---|---|---|"
for t in "${TARGETS[@]}"; do
  IFS=: read -r name pid port path what <<<"$t"
  MUS[$name]=$(col "$name" 5 | med); MRPS[$name]=$(col "$name" 4 | med)
  errs=$(awk -F'\t' -v t="$name" '$2==t {e+=$6+$7} END{print e+0}' "$RUNS")
  TABLE+=$'\n'"| $name | $what | ${MUS[$name]} ($(col "$name" 5 | range)) | $(col "$name" 11 | med) ($(col "$name" 11 | range)) | ${MRPS[$name]} ($(col "$name" 4 | range)) | $errs | $(col "$name" 8 | med) ($(col "$name" 8 | tr ' ' '\n' | grep . | sort -g | tail -1)) | $(col "$name" 10 | med) |"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (b>0) printf "%.2f", a/b; else print "nan"}'; }
paired() { # median over rounds of a per-round expression on µs: $1 = awk expression over x (target a), y (b), z (c)
  local expr=$1 a=$2 b=$3 c=${4:-$3}
  for r in $(seq "$ROUNDS"); do
    awk -F'\t' -v r="$r" -v a="$a" -v b="$b" -v c="$c" '$1==r && $2==a {x=$5} $1==r && $2==b {y=$5} $1==r && $2==c {z=$5}
      END{printf "%.3f ", '"$expr"'}' "$RUNS"
  done | med; }
EMB=$(awk -v a="${MUS[hb-lbkit]}" -v b="${MUS[hb-trivial]}" 'BEGIN{printf "%.1f", a-b}')
R1=$(ratio "$EMB" "${MUS[lbserve]}"); R2=$(ratio "${MUS[hb-lbkit]}" "${MUS[hb-ahc]}")
R1P=$(paired '(x-y)/z' hb-lbkit hb-trivial lbserve); R2P=$(paired 'x/y' hb-lbkit hb-ahc)
RATIOS="- Hummingbird: (hb-lbkit − hb-trivial) = ${MUS[hb-lbkit]} − ${MUS[hb-trivial]} = $EMB µs vs lbserve ${MUS[lbserve]} µs: **$R1×** (target ≤ 1.2×; median of per-round ratios $R1P×)
- LBKit route vs AsyncHTTPClient route: ${MUS[hb-lbkit]} / ${MUS[hb-ahc]} µs = **$R2×** (target ≤ 1.0×; median of per-round ratios $R2P×)"
CSL=$(col lbserve 11 | med); CSE=$(awk -v a="$(col hb-lbkit 11 | med)" -v b="$(col hb-trivial 11 | med)" 'BEGIN{printf "%.2f", a-b}')
RATIOS+=$'\n'"- Context switches per request: (hb-lbkit − hb-trivial) = $(col hb-lbkit 11 | med) − $(col hb-trivial 11 | med) = $CSE vs lbserve $CSL"
if [ "$HB_LOOPS" = 1 ]; then
  LEMB=$(awk -v a="${MUS[hb-lbkit-loops]}" -v b="${MUS[hb-trivial-loops]}" 'BEGIN{printf "%.1f", a-b}')
  R4=$(ratio "$LEMB" "${MUS[lbserve]}"); R4P=$(paired '(x-y)/z' hb-lbkit-loops hb-trivial-loops lbserve)
  LCSE=$(awk -v a="$(col hb-lbkit-loops 11 | med)" -v b="$(col hb-trivial-loops 11 | med)" 'BEGIN{printf "%.2f", a-b}')
  RATIOS+=$'\n'"- Hummingbird run on LBKit's loops: (hb-lbkit-loops − hb-trivial-loops) = ${MUS[hb-lbkit-loops]} − ${MUS[hb-trivial-loops]} = $LEMB µs vs lbserve ${MUS[lbserve]} µs: **$R4×** (target ≤ 1.2×; median of per-round ratios $R4P×); context switches $LCSE per request vs lbserve $CSL"
fi
if [ "$HB_POOL" = 1 ]; then
  KEMB=$(awk -v a="${MUS[hb-lbkit-pool]}" -v b="${MUS[hb-trivial-pool]}" 'BEGIN{printf "%.1f", a-b}')
  R5=$(ratio "$KEMB" "${MUS[lbserve]}"); R5P=$(paired '(x-y)/z' hb-lbkit-pool hb-trivial-pool lbserve)
  KCSE=$(awk -v a="$(col hb-lbkit-pool 11 | med)" -v b="$(col hb-trivial-pool 11 | med)" 'BEGIN{printf "%.2f", a-b}')
  RATIOS+=$'\n'"- Hummingbird with keepsResumedTasksOnLoops = false (the route's work after the answer on the pool): (hb-lbkit-pool − hb-trivial-pool) = ${MUS[hb-lbkit-pool]} − ${MUS[hb-trivial-pool]} = $KEMB µs vs lbserve ${MUS[lbserve]} µs: **$R5×**; context switches $KCSE per request vs lbserve $CSL"
fi
if [ "$HB_FLOOR" = 1 ]; then
  FEMB=$(awk -v a="${MUS[hb-raw]}" -v b="${MUS[hb-trivial]}" 'BEGIN{printf "%.1f", a-b}')
  R6=$(ratio "$FEMB" "${MUS[lbserve]}"); R6P=$(paired '(x-y)/z' hb-raw hb-trivial lbserve)
  BEMB=$(awk -v a="${MUS[hb-block]}" -v b="${MUS[hb-trivial]}" 'BEGIN{printf "%.1f", a-b}')
  R9=$(ratio "$BEMB" "${MUS[lbserve]}"); R9P=$(paired '(x-y)/z' hb-block hb-trivial lbserve)
  FNEMB=$(awk -v a="${MUS[hb-raw-nio]}" -v b="${MUS[hb-trivial-nio]}" 'BEGIN{printf "%.1f", a-b}')
  R7=$(ratio "$FNEMB" "${MUS[lbserve]}"); R7P=$(paired '(x-y)/z' hb-raw-nio hb-trivial-nio lbserve)
  RATIOS+=$'\n'"- Floor, a forwarder with no features (hb-raw − hb-trivial) = ${MUS[hb-raw]} − ${MUS[hb-trivial]} = $FEMB µs vs lbserve ${MUS[lbserve]} µs: **$R6×** (median of per-round ratios $R6P×); LBKit's route costs $(ratio "${MUS[hb-lbkit]}" "${MUS[hb-raw]}")× the floor's
- Lower bound, blocking system calls on the handler's thread (hb-block − hb-trivial) = ${MUS[hb-block]} − ${MUS[hb-trivial]} = $BEMB µs vs lbserve ${MUS[lbserve]} µs: **$R9×** (median of per-round ratios $R9P×)
- Floor under SwiftNIO's take-over (hb-raw-nio − hb-trivial-nio) = ${MUS[hb-raw-nio]} − ${MUS[hb-trivial-nio]} = $FNEMB µs vs lbserve ${MUS[lbserve]} µs: **$R7×** (median of per-round ratios $R7P×)"
fi
if [ "$HB_NIO" = 1 ]; then
  NEMB=$(awk -v a="${MUS[hb-lbkit-nio]}" -v b="${MUS[hb-trivial-nio]}" 'BEGIN{printf "%.1f", a-b}')
  R8=$(ratio "$NEMB" "${MUS[lbserve]}"); R8P=$(paired '(x-y)/z' hb-lbkit-nio hb-trivial-nio lbserve)
  RATIOS+=$'\n'"- Hummingbird + LBKit under SwiftNIO's take-over (hb-lbkit-nio − hb-trivial-nio) = ${MUS[hb-lbkit-nio]} − ${MUS[hb-trivial-nio]} = $NEMB µs vs lbserve ${MUS[lbserve]} µs: **$R8×** (median of per-round ratios $R8P×)"
fi
if [ "$VAPOR" != 0 ]; then
  VEMB=$(awk -v a="${MUS[vapor-lbkit]}" -v b="${MUS[vapor-trivial]}" 'BEGIN{printf "%.1f", a-b}')
  R3=$(ratio "$VEMB" "${MUS[lbserve]}"); R3P=$(paired '(x-y)/z' vapor-lbkit vapor-trivial lbserve)
  RATIOS+=$'\n'"- Vapor: (vapor-lbkit − vapor-trivial) = ${MUS[vapor-lbkit]} − ${MUS[vapor-trivial]} = $VEMB µs vs lbserve ${MUS[lbserve]} µs: **$R3×** (target ≤ 1.2×; median of per-round ratios $R3P×)"
fi
RAW="| round | target | requests | req/s | CPU µs/request | context switches/request | non-2xx | socket errors | other CPU % | steal % | load 1-min |
|---|---|---|---|---|---|---|---|---|---|---|"
while IFS=$'\t' read -r a b c d e f g h i j k; do RAW+=$'\n'"| $a | $b | $c | $d | $e | $k | $f | $g | $h | $i | $j |"; done <"$RUNS"
CONTENDED=$(awk -F'\t' -v m="$FOREIGN_MAX" '$8>m {n++} END{print n+0}' "$RUNS"); TOTAL=$(wc -l <"$RUNS")

mkdir -p "$(dirname "$RESULTS")"
cat >"$RESULTS" <<EOF
# Embedded LBKit vs standalone lbserve vs AsyncHTTPClient forwarding — server CPU per request

$(date '+%Y-%m-%d %H:%M %Z'), commit $GITDESC, $NCPU cores, $(uname -r), $(swift --version 2>/dev/null | head -1)

Command: \`BUILD=$BUILD HB_LOOPS=$HB_LOOPS HB_POOL=$HB_POOL HB_FLOOR=$HB_FLOOR HB_NIO=$HB_NIO ROUNDS=$ROUNDS DUR=$DUR WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS BACKEND=$BACKEND VAPOR=$VAPOR_ASKED bash Benchmarks/embedding-cpu.sh\`

Release builds, everything on 127.0.0.1, 3 backends ($BACKEND on ports ${BPORTS[*]}), nothing pinned.
Each run: ${WARMUP} s warm-up, then \`wrk -t$THREADS -c$CONNS -d${DUR}s\` GET (/hello for the trivial routes, /raw/x and
/block/x for the floor and the lower bound, /api/x otherwise); CPU = utime+stime of the server process (all threads) over the run, divided by the requests wrk
completed. $ROUNDS interleaved rounds; medians. "other CPU" = CPU used during the run by processes this
script did not start (% of one core; the machine has $NCPU cores), from /proc/stat minus our own processes.
${VAPOR_NOTE:+$VAPOR_NOTE.}

$TABLE

$RATIOS

Runs with other CPU above ${FOREIGN_MAX}% of one core: $CONTENDED of $TOTAL. Busiest other processes
(top, over 1 s, % of one core) at the start of each round:

$OTHERS
## Every run

$RAW
EOF
echo; echo "$TABLE"; echo; echo "$RATIOS"; echo; say "contended runs (other CPU > ${FOREIGN_MAX}%): $CONTENDED of $TOTAL"; say "report: $RESULTS"
