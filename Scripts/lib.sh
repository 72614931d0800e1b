# Shared helpers for Scripts/chaos.sh and Scripts/slowness.sh. Sourced, not run.
# Everything here talks to 127.0.0.1 only and stops only processes it started (by PID / own PGID).
# shellcheck shell=bash

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPTS/.." && pwd)"
LBSERVE="${LBSERVE:-$ROOT/.build/release/lbserve}"
ECHO_BIN="${ECHO_BIN:-$ROOT/.build/release/echo}"
BUILD="${BUILD:-1}"              # 1 = `swift build -c release` before measuring (incremental, fast if up to date)
QUIET_MAX="${QUIET_MAX:-600}"    # max seconds to wait for other benchmarks to finish before starting
MAX_WALL="${MAX_WALL:-300}"      # hard bound on the measuring part (after the quiet wait and the build)
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS_DIR="${RESULTS_DIR:-$SCRIPTS/results}"
STAMP="$(date +%Y-%m-%d_%H%M%S)"
LOCK_FILE="${LOCK_FILE:-/tmp/lbkit-scenarios.lock}"

log() { printf '[%s %s] %s\n' "${SCENARIO:-scenario}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now_ns() { date +%s%N; }
# sleep_until T0_NS OFFSET_S: sleep until OFFSET_S seconds after T0_NS (no-op if already past)
sleep_until() {
  local left_ms=$(( ($1 + $2 * 1000000000 - $(now_ns)) / 1000000 ))
  ((left_ms > 0)) && sleep "$(printf '%d.%03d' $((left_ms / 1000)) $((left_ms % 1000)))"
  return 0
}
rel_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }   # rel_s T0_NS T_NS

# ------------------------------------------------------------------ processes (own PIDs only)
PIDS=(); PNAMES=()
TMP="$(mktemp -d "/tmp/lbkit-${SCENARIO:-scenario}.XXXXXX")"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
need_ports_free() {
  local p busy=()
  for p in "$@"; do port_open "$p" && busy+=("$p"); done
  ((${#busy[@]} == 0)) || die "127.0.0.1 ports already in use (not by us): ${busy[*]} (set BASE_PORT=...)"
}

# start_server NAME CMD... -> runs CMD in its own session (PGID == PID), output to $TMP/NAME.log; sets LAST_PID
start_server() {
  local name=$1; shift
  setsid "$@" >>"$TMP/$name.log" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID"); PNAMES+=("$name")
}

# wait_port NAME PORT SECONDS (NAME's process is LAST_PID)
wait_port() {
  local name=$1 port=$2 limit=$3 i
  for ((i = 0; i < limit * 20; i++)); do
    port_open "$port" && return 0
    kill -0 "$LAST_PID" 2>/dev/null || { tail -n 20 "$TMP/$name.log" >&2 || true; die "$name exited before listening on $port"; }
    sleep 0.05
  done
  tail -n 20 "$TMP/$name.log" >&2 || true
  die "$name did not listen on 127.0.0.1:$port within ${limit}s"
}

# stop_pid PID: TERM its own process group, wait up to 5 s, then KILL. Only for PIDs in PIDS.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  wait "$pid" 2>/dev/null || true
}
forget_pid() {  # remove PID from the tracking arrays (after it was stopped or killed)
  local i np=() nn=()
  for ((i = 0; i < ${#PIDS[@]}; i++)); do
    [[ ${PIDS[i]} == "$1" ]] || { np+=("${PIDS[i]}"); nn+=("${PNAMES[i]}"); }
  done
  PIDS=("${np[@]}"); PNAMES=("${nn[@]}")
}
stop_all() {  # newest first: load generator and balancer before backends
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  PIDS=(); PNAMES=()
}

# timestamped copy of a server log: $TMP/NAME.ts gets "<epoch.micro> <line>" for every line of $TMP/NAME.log
start_stamper() {
  local name=$1
  start_server "$name-stamper" bash -c 'tail -s 0.05 -n +1 -F "$1" 2>/dev/null | while IFS= read -r l; do printf "%s %s\n" "$EPOCHREALTIME" "$l"; done >"$2"' \
    _ "$TMP/$name.log" "$TMP/$name.ts"
}

WATCHDOG=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  [[ -n $WATCHDOG ]] && { kill -TERM -- "-$WATCHDOG" 2>/dev/null || true; wait "$WATCHDOG" 2>/dev/null || true; }
  if [[ $rc != 0 ]]; then log "failed (rc=$rc); raw output and server logs kept in $TMP"
  elif [[ $KEEP_TMP == 1 ]]; then log "raw output and server logs kept in $TMP"
  else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'log "terminated (wall-clock bound ${MAX_WALL}s or signal)"; exit 143' TERM

start_watchdog() {  # kills this script (TERM -> cleanup) MAX_WALL seconds from now
  setsid bash -c 'sleep "$1"; kill -TERM "$2"' _ "$MAX_WALL" "$$" </dev/null >/dev/null 2>&1 &
  WATCHDOG=$!
}

# ------------------------------------------------------------------ quiet machine
# Other benchmarks: the side-by-side harness, or any wrk that is not ours.
OUR_WRK=""
foreign_bench() {
  local p
  pgrep -f 'shared/bench/run.sh' >/dev/null && return 0
  for p in $(pgrep -x wrk || true); do
    [[ -n $OUR_WRK && $p == "$OUR_WRK" ]] && continue
    [[ $(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ') == "${OUR_WRK_PARENT:-x}" ]] && continue
    return 0
  done
  return 1
}
# quiet_wait MAX_SECONDS: wait (10 s steps) while another benchmark runs; 0 = quiet, 1 = still busy
quiet_wait() {
  local max=$1 waited=0
  while foreign_bench; do
    ((waited >= max)) && { log "another benchmark is still running after ${waited}s; going on anyway"; return 1; }
    log "another benchmark is running (shared/bench/run.sh or wrk); waiting 10 s (${waited}/${max}s)"
    sleep 10; waited=$((waited + 10))
  done
  return 0
}

# ------------------------------------------------------------------ CPU used by others during a run
# Same method as /work/shared/bench/run.sh: machine busy ticks minus ticks of this script's
# descendants minus kernel threads, as % of all cores.
CLK_TCK=$(getconf CLK_TCK); NCPU=$(nproc); SELF=$$
proc_snap() {
  local f l pid _c u n s idle iow irq sirq rest
  {
    read -r _c u n s idle iow irq sirq rest </proc/stat
    echo "B 0 $((u + n + s + irq + sirq))"
    for f in /proc/[0-9]*/stat; do
      { read -r l <"$f"; } 2>/dev/null || continue
      pid=${l%% *}
      # shellcheck disable=SC2086
      set -- ${l##*) }
      echo "$pid $2 $((${12} + ${13} + ${14} + ${15}))"
    done
  } >"$1"
}
foreign_pct() {  # snap0 snap1 wall_ns
  awk -v self="$SELF" -v w="$3" -v hz="$CLK_TCK" -v n="$NCPU" '
    FNR == NR { c0[$1] = $3; next }
    { c1[$1] = $3; pp[$1] = $2 }
    END {
      busy = c1["B"] - c0["B"]
      for (p in c1) {
        if (p == "B") continue
        d = c1[p] - ((p in c0) ? c0[p] : 0); if (d < 0) d = 0
        if (p == 2 || pp[p] == 2) { kt += d; continue }
        q = p; mine = 0
        for (i = 0; i < 64 && q > 1; i++) { if (q == self) { mine = 1; break }; q = pp[q] }
        if (mine) ours += d
      }
      f = (busy - ours - kt) * 100 / hz / (w / 1e9) / n; if (f < 0) f = 0
      printf "%.0f", f
    }' "$1" "$2"
}

# ------------------------------------------------------------------ wrk
# wrk_start NAME DURATION_S METHOD URL: wrk -t1 -cCONNS in the background (bounded by -d and timeout)
wrk_start() {
  local name=$1 dur=$2 method=$3 url=$4
  start_server "wrk-$name" timeout --kill-after=5 $((dur + 20)) \
    wrk -t"${THREADS:-1}" -c"${CONNS:-32}" -d"${dur}s" --timeout 5s --latency \
        -s "$SCRIPTS/lua/scenario.lua" "$url" -- "$method"
  WRK_PID=$LAST_PID; OUR_WRK_PARENT=$WRK_PID
}
# wrk_wait NAME -> WRK_LINE ("key=value ..." from the SCENARIO line)
wrk_wait() {
  local name=$1
  wait "$WRK_PID" 2>/dev/null || log "wrk ($name) exited non-zero (see $TMP/wrk-$name.log)"
  forget_pid "$WRK_PID"; OUR_WRK_PARENT=""
  WRK_LINE=$(grep '^SCENARIO ' "$TMP/wrk-$name.log" | tail -n 1 || true)
  if [[ -z $WRK_LINE ]]; then
    log "no SCENARIO line from wrk ($name):"; tail -n 5 "$TMP/wrk-$name.log" >&2 || true
    WRK_LINE="SCENARIO requests=0 duration_us=1 p50_us=0 p99_us=0 max_us=0 non2xx=0 err_connect=0 err_read=0 err_write=0 err_status=0 err_timeout=0 codes=- by=- bad_by_s=-"
  fi
  WRK_LINE=${WRK_LINE#SCENARIO }
}
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -n 1; }   # kv KEY "k=v k=v"

# sanity NAME URL METHOD [MIN_DISTINCT]: 6 sequential requests, all 2xx, at least MIN_DISTINCT (3)
# distinct backends (P2C strategies need not rotate) -> SANITY_OUT
sanity() {
  local name=$1 url=$2 method=$3 min=${4:-3} i out code hb seq="" bad=0 distinct
  for i in 1 2 3 4 5 6; do
    if [[ $method == POST ]]; then
      out=$(curl -s --max-time 5 -D - -o /dev/null -H 'Content-Type: application/json' -d '{"msg":"demo"}' "$url" || true)
    else
      out=$(curl -s --max-time 5 -D - -o /dev/null "$url" || true)
    fi
    code=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' <<<"$out")
    hb=$(grep -i '^x-handled-by:' <<<"$out" | tr -dc '0-9' || true)
    [[ $code == 2* ]] || bad=1
    seq+="${hb:-?}/${code:-ERR} "
  done
  distinct=$(tr ' ' '\n' <<<"$seq" | cut -d/ -f1 | grep -E '^[0-9]+$' | sort -u | wc -l)
  SANITY_OUT="$seq"
  ((bad == 0 && distinct >= min))
}

# ------------------------------------------------------------------ build, versions, configs
build_release() {
  [[ $BUILD == 1 ]] || { [[ -x $LBSERVE && -x $ECHO_BIN ]] || die "BUILD=0 but $LBSERVE / $ECHO_BIN missing"; return 0; }
  local try
  for try in 1 2 3 4 5; do
    log "swift build -c release (attempt $try)"
    if (cd "$ROOT" && timeout 900 swift build -c release >"$TMP/build.log" 2>&1); then return 0; fi
    tail -n 5 "$TMP/build.log" >&2 || true
    ((try < 5)) && { log "build failed (someone mid-edit?); retrying in 30 s"; sleep 30; }
  done
  die "swift build -c release failed 5 times (see $TMP/build.log)"
}

versions() {
  local sw
  sw=$( (swift --version 2>/dev/null || true) | head -n 1)
  VERSIONS="lbserve: $LBSERVE (built $(date -r "$LBSERVE" '+%Y-%m-%d %H:%M:%S')), ${sw:-swift ?}; "
  VERSIONS+="nginx $( (nginx -v 2>&1 || true) | sed 's/^nginx version: nginx\///'); "
  VERSIONS+="HAProxy $( (haproxy -v 2>&1 || true) | head -n 1 | awk '{print $3}'); "
  VERSIONS+="wrk $( (wrk -v 2>&1 || true) | head -n 1 | awk '{print $2}'); "
  VERSIONS+="curl $(curl --version | head -n 1 | awk '{print $2}'); kernel $(uname -r); $(nproc) cores ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1))"
  log "versions: $VERSIONS"
}

check_tools() {
  local t missing=()
  for t in wrk nginx haproxy curl python3 setsid timeout flock pgrep awk; do command -v "$t" >/dev/null || missing+=("$t"); done
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]}"
}

# render TEMPLATE OUT KEY=VALUE...: replace @KEY@ by VALUE
render() {
  local tpl=$1 out=$2 kvp args=()
  shift 2
  for kvp in "$@"; do args+=(-e "s|@${kvp%%=*}@|${kvp#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
  ! grep -q '@[A-Z_0-9]*@' "$out" || die "unfilled placeholder in $out: $(grep -o '@[A-Z_0-9]*@' "$out" | head -n 1)"
}

# start_echo NAME PORT -> one echo process per port (so one backend can be SIGKILLed alone)
start_echo() {
  start_server "$1" "$ECHO_BIN" --host 127.0.0.1 --port "$2"
  wait_port "$1" "$2" 10
}

# start_target KIND NAME PORT B1 B2 B3 [extra lbserve flags...]: KIND lbserve | nginx:<conf> | haproxy:<cfg>
start_target() {
  local kind=$1 name=$2 port=$3 b1=$4 b2=$5 b3=$6
  shift 6
  case $kind in
    lbserve)
      start_server "$name" "$LBSERVE" --host 127.0.0.1 --port "$port" --backend "http://127.0.0.1:$b1" \
        --backend "http://127.0.0.1:$b2" --backend "http://127.0.0.1:$b3" "$@"
      TARGET_CMD="lbserve --host 127.0.0.1 --port $port --backend http://127.0.0.1:{$b1,$b2,$b3} $*" ;;
    nginx:*)
      mkdir -p "$TMP/$name"
      render "$SCRIPTS/conf/${kind#nginx:}" "$TMP/$name/nginx.conf" PORT="$port" B1="$b1" B2="$b2" B3="$b3" "$@"
      start_server "$name" nginx -p "$TMP/$name/" -e "$TMP/$name/error.log" -c "$TMP/$name/nginx.conf"
      TARGET_CMD="nginx -c Scripts/conf/${kind#nginx:} ${*}" ;;
    haproxy:*)
      render "$SCRIPTS/conf/${kind#haproxy:}" "$TMP/$name.cfg" PORT="$port" B1="$b1" B2="$b2" B3="$b3" "$@"
      start_server "$name" haproxy -db -f "$TMP/$name.cfg"
      TARGET_CMD="haproxy -f Scripts/conf/${kind#haproxy:}" ;;
    *) die "unknown target kind $kind" ;;
  esac
  TARGET_PID=$LAST_PID
  wait_port "$name" "$port" 20
  start_stamper "$name"
}

# health_events NAME T0_NS: state-change lines of the balancer's log, with seconds since T0_NS
health_events() {
  local name=$1 t0=$2
  [[ -f $TMP/$name.ts ]] || return 0
  grep -E '\[HEALTH\]|is DOWN|is UP|no server available' "$TMP/$name.ts" | head -n 20 |
    awk -v t0="$t0" '{ t = $1; $1 = ""; sub(/^ /, ""); printf "+%.1fs %s\n", t - t0 / 1e9, $0 }' || true
}

acquire_lock() {  # one scenario script at a time on this machine
  exec 9>"$LOCK_FILE"
  flock -w "$QUIET_MAX" 9 || die "another Scripts/ scenario holds $LOCK_FILE"
}
