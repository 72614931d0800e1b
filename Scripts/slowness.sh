#!/usr/bin/env bash
# slowness.sh: one backend turns slow (500 ms) under GET load; lbserve, nginx and HAProxy side by side.
#
#   bash Scripts/slowness.sh               # all targets, ~2 min after the build
#   TARGETS="lbserve-ewma nginx" bash Scripts/slowness.sh
#
# For each target in turn: start a fresh set of three echo backends (one process per port, distinct
# ports per target), start the balancer, check round robin with 6 GETs, then three consecutive runs of
#   wrk -t1 -c32 -dNs --timeout 5s --latency -s Scripts/lua/scenario.lua URL -- GET
#   healthy   5 s  all backends fast
#   slow     10 s  started right after `curl -X POST http://127.0.0.1:B2/_echo/delay?ms=500` (backend's own port)
#   recovered 5 s  started right after `.../_echo/delay?ms=0`
# The slow phase includes the time each balancer needs to notice; the recovered phase the way back.
# Table -> stdout and Scripts/results/slowness-<stamp>.md.
#
# Targets (ports BASE_PORT + 10*i, backends +1..+3):
#   lbserve       lbserve --timeout-ms 1000 --max-delay-ms 100 --health-interval-ms 250 (round robin)
#   lbserve-ewma  same + --strategy peak-ewma
#   nginx         conf/nginx-slowness.conf: proxy_read_timeout 1s, proxy_next_upstream error timeout
#   haproxy       conf/haproxy-slowness.cfg: timeout server 1s, httpchk GET /health inter 500 fall 3 rise 2,
#                 timeout check 250ms (operator choice, = lbserve's probe timeout here), L7 retries
#
# Knobs: TARGETS, HEALTHY_S [5], SLOW_S [10], RECOVER_S [5], DELAY_MS [500], CONNS [32],
#        BASE_PORT [17200], BUILD [1], QUIET_MAX [600], MAX_WALL [300], KEEP_TMP [0], RESULTS_DIR.
set -Eeuo pipefail
SCENARIO=slowness
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HEALTHY_S="${HEALTHY_S:-5}"; SLOW_S="${SLOW_S:-10}"; RECOVER_S="${RECOVER_S:-5}"; DELAY_MS="${DELAY_MS:-500}"
CONNS="${CONNS:-32}"; THREADS=1; BASE_PORT="${BASE_PORT:-17200}"
ALL_TARGETS="lbserve lbserve-ewma nginx haproxy"
read -r -a TLIST <<<"${TARGETS:-$ALL_TARGETS}"
PER_TARGET=$((HEALTHY_S + SLOW_S + RECOVER_S + 10))
(( ${#TLIST[@]} * PER_TARGET < MAX_WALL )) || die "${#TLIST[@]} targets x ${PER_TARGET}s do not fit MAX_WALL=${MAX_WALL}s"

check_tools
ALLPORTS=()
for ((i = 0; i < ${#TLIST[@]}; i++)); do
  case ${TLIST[i]} in lbserve|lbserve-ewma|nginx|haproxy) ;; *) die "unknown target ${TLIST[i]} (known: $ALL_TARGETS)" ;; esac
  for d in 0 1 2 3; do ALLPORTS+=($((BASE_PORT + 10 * i + d))); done
done

acquire_lock
quiet_wait "$QUIET_MAX" || true
build_release
versions
need_ports_free "${ALLPORTS[@]}"
start_watchdog
T_START=$SECONDS
log "measuring ${#TLIST[@]} targets x ${PER_TARGET}s (bound ${MAX_WALL}s); temp dir $TMP"

set_delay() {  # port ms
  local out
  out=$(curl -s --max-time 2 -w ' %{http_code}' -X POST "http://127.0.0.1:$1/_echo/delay?ms=$2" || true)
  [[ ${out##* } == 200 ]] || die "could not set delay on :$1 ($out)"
}

RES="$TMP/results.tsv"; : >"$RES"; DETAILS="$TMP/details.md"; : >"$DETAILS"
for ((i = 0; i < ${#TLIST[@]}; i++)); do
  t=${TLIST[i]}; port=$((BASE_PORT + 10 * i)); b1=$((port + 1)); b2=$((port + 2)); b3=$((port + 3))
  left=$(( (${#TLIST[@]} - i) * PER_TARGET ))
  budget=$(( MAX_WALL - (SECONDS - T_START) - left ))
  contended=0
  ((budget > 0)) && { quiet_wait "$budget" || contended=1; }
  foreign_bench && contended=1

  log "--- $t on :$port, backends :$b1 :$b2 :$b3 (:$b2 turns slow)"
  start_echo "$t-b1" "$b1"; start_echo "$t-b2" "$b2"; start_echo "$t-b3" "$b3"
  LBF=(--timeout-ms 1000 --max-delay-ms 100 --health-interval-ms 250)
  case $t in
    lbserve)      start_target lbserve "$t" "$port" "$b1" "$b2" "$b3" "${LBF[@]}" ;;
    lbserve-ewma) start_target lbserve "$t" "$port" "$b1" "$b2" "$b3" "${LBF[@]}" --strategy peak-ewma ;;
    nginx)        start_target nginx:nginx-slowness.conf "$t" "$port" "$b1" "$b2" "$b3" ;;
    haproxy)      start_target haproxy:haproxy-slowness.cfg "$t" "$port" "$b1" "$b2" "$b3" ;;
  esac
  URL="http://127.0.0.1:$port/"
  sleep 1
  mind=3; [[ $t == lbserve-ewma ]] && mind=1   # peak-ewma is P2C: sequential requests need not rotate
  sanity "$t" "$URL" GET "$mind" || log "WARNING: $t sanity check: $SANITY_OUT"
  pre=$SANITY_OUT

  proc_snap "$TMP/snap0"; T0=$(now_ns)
  phases=""
  for ph in healthy slow recovered; do
    case $ph in
      healthy) dur=$HEALTHY_S ;;
      slow) set_delay "$b2" "$DELAY_MS"; TS=$(now_ns); dur=$SLOW_S ;;
      recovered) set_delay "$b2" 0; TF=$(now_ns); dur=$RECOVER_S ;;
    esac
    wrk_start "$t-$ph" "$dur" GET "$URL"
    wrk_wait "$t-$ph"
    foreign_bench && contended=1
    printf '%s\t%s\t%s\n' "$t" "$ph" "$WRK_LINE" >>"$RES.phases"
    log "$t $ph: $(cut -d' ' -f1-6 <<<"$WRK_LINE") by=$(kv by "$WRK_LINE")"
  done
  T1=$(now_ns); proc_snap "$TMP/snap1"; fcpu=$(foreign_pct "$TMP/snap0" "$TMP/snap1" $((T1 - T0)))
  kill -0 "$TARGET_PID" 2>/dev/null || { log "WARNING: $t died during the run"; contended=2; }
  sanity "$t" "$URL" GET || true; post=$SANITY_OUT
  while IFS=$'\t' read -r tt ph line; do
    [[ $tt == "$t" ]] && printf '%s\t%s\t%s\tforeign_cpu=%s contended=%s slow=%s\n' "$tt" "$ph" "$line" "$fcpu" "$contended" "$b2" >>"$RES"
  done <"$RES.phases"
  {
    echo "### $t"
    echo
    echo "- command: \`$TARGET_CMD\`"
    echo "- before (handled_by/status): \`$pre\`; after: \`$post\`"
    echo "- delay 500 ms set at +$(rel_s "$T0" "$TS")s, back to 0 at +$(rel_s "$T0" "$TF")s (seconds since the healthy run started)"
    while IFS=$'\t' read -r tt ph line; do
      [[ $tt == "$t" ]] || continue
      echo "- $ph: statuses \`$(kv codes "$line")\`, responses by backend \`$(kv by "$line")\`, non-2xx by second \`$(kv bad_by_s "$line")\`"
    done <"$RES.phases"
    ev=$(health_events "$t" "$T0")
    if [[ -n $ev ]]; then echo "- balancer log (seconds since the healthy run started):"; echo; echo '```'; echo "$ev"; echo '```'; fi
    if [[ -f $TMP/$t/error.log ]]; then
      echo "- nginx error.log: $(grep -c . "$TMP/$t/error.log" || true) lines"
    fi
    echo
  } >>"$DETAILS"
  stop_all
done
WALL=$((SECONDS - T_START))

mkdir -p "$RESULTS_DIR"
OUTMD="$RESULTS_DIR/slowness-$STAMP.md"
export RES DETAILS OUTMD STAMP VERSIONS HEALTHY_S SLOW_S RECOVER_S DELAY_MS CONNS WALL
python3 - <<'PY'
import os
E = os.environ
L = [f"# slowness: one backend turns slow under GET load ({E['STAMP']})", ""]
L.append(f"- load: `wrk -t1 -c{E['CONNS']} --timeout 5s --latency -s Scripts/lua/scenario.lua URL -- GET`, three consecutive runs per target: "
         f"healthy {E['HEALTHY_S']}s, slow {E['SLOW_S']}s (backend 2 of 3 answers after {E['DELAY_MS']} ms, health checks included), recovered {E['RECOVER_S']}s")
L.append("- targets one after another, each with its own 3 fresh echo backends; the slow phase includes detection, the recovered phase re-admission")
L.append(f"- versions: {E['VERSIONS']}")
L.append(f"- wall time of the measuring part: {E['WALL']}s; all traffic on 127.0.0.1; wrk, balancer and backends share the cores")
L.append("")
L.append("| target | phase | requests | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors (c/r/w/t) | share of slow backend | foreign CPU % |")
L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
def ms(us): v = int(us) / 1000; return f"{v:.2f}" if v < 100 else f"{v:.0f}"
for ln in open(E["RES"]):
    t, ph, w, extra = ln.rstrip("\n").split("\t")
    d = dict(x.split("=", 1) for x in w.split()); x = dict(y.split("=", 1) for y in extra.split())
    by = {} if d["by"] == "-" else {k: int(v) for k, v in (p.split(":") for p in d["by"].split(","))}
    tot = sum(by.values()); share = f"{100 * by.get(x['slow'], 0) / tot:.1f}%" if tot else "-"
    nz = d["non2xx"]
    codes = ",".join(c for c in d["codes"].split(",") if not c.startswith("2"))
    if codes: nz += f" ({codes})"
    sock = f"{d['err_connect']}/{d['err_read']}/{d['err_write']}/{d['err_timeout']}"
    rps = int(d["requests"]) / (int(d["duration_us"]) / 1e6)
    flag = {"0": "", "1": " (another benchmark seen)", "2": " (DIED)"}[x["contended"]]
    L.append(f"| {t}{flag} | {ph} | {int(d['requests']):,} | {rps:,.0f} | {ms(d['p50_us'])} | {ms(d['p99_us'])} | {ms(d['max_us'])} | {nz} | {sock} | {share} | {x['foreign_cpu']} |")
L.append("")
L.append("p50/p99/max: wrk latency of answered requests in that phase. share of slow backend = responses carrying "
         "X-Handled-By of the slow port / all responses (a retried request counts for the backend that answered). "
         "non-2xx counted by the Lua script; socket errors are wrk's. foreign CPU = % of all cores used during the "
         "target's three runs by processes this script did not start.")
L.append("")
L.append("## Details")
L.append("")
L.extend(x.rstrip("\n") for x in open(E["DETAILS"]))
text = "\n".join(L) + "\n"
open(E["OUTMD"], "w").write(text)
print(text, end="")
PY
log "done in ${WALL}s; wrote $OUTMD"
