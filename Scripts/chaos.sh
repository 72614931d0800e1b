#!/usr/bin/env bash
# chaos.sh: a backend crashes and comes back under POST load; lbserve, nginx and HAProxy side by side.
#
#   bash Scripts/chaos.sh                  # all targets, ~2.5 min after the build
#   TARGETS="lbserve haproxy" bash Scripts/chaos.sh
#
# For each target in turn: start a fresh set of three echo backends (one process per port, distinct
# ports per target), start the balancer, check round robin with 6 POSTs, then run
#   wrk -t1 -c32 -d20s --timeout 5s --latency -s Scripts/lua/scenario.lua URL -- POST
# SIGKILL the second backend at +5 s, restart it on the same port at +12 s. After the run, 12 POSTs
# check that all three backends are in rotation again. Table -> stdout and Scripts/results/chaos-<stamp>.md.
#
# Targets (ports BASE_PORT + 10*i, backends +1..+3):
#   lbserve        lbserve --health-interval-ms 500 (defaults otherwise)
#   lbserve-retry  same + --retry-non-idempotent
#   nginx          conf/nginx-chaos.conf: max_fails=1 fail_timeout=5s, keepalive, proxy_next_upstream error timeout
#   nginx-nonidem  same + non_idempotent
#   haproxy        conf/haproxy-chaos.cfg: roundrobin, httpchk GET /health, check inter 500 fall 3 rise 2,
#                  retries 2, option redispatch, retry-on conn-failure empty-response response-timeout
#
# Knobs: TARGETS, DURATION [20], KILL_AT [5], RESTART_AT [12], CONNS [32], BASE_PORT [17100],
#        BUILD [1], QUIET_MAX [600], MAX_WALL [300], KEEP_TMP [0], RESULTS_DIR [Scripts/results].
set -Eeuo pipefail
SCENARIO=chaos
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-20}"; KILL_AT="${KILL_AT:-5}"; RESTART_AT="${RESTART_AT:-12}"
CONNS="${CONNS:-32}"; THREADS=1; BASE_PORT="${BASE_PORT:-17100}"
ALL_TARGETS="lbserve lbserve-retry nginx nginx-nonidem haproxy"
read -r -a TLIST <<<"${TARGETS:-$ALL_TARGETS}"
((KILL_AT < RESTART_AT && RESTART_AT < DURATION)) || die "need KILL_AT < RESTART_AT < DURATION"
(( ${#TLIST[@]} * (DURATION + 10) < MAX_WALL )) || die "${#TLIST[@]} targets x (${DURATION}+10)s do not fit MAX_WALL=${MAX_WALL}s"

check_tools
ALLPORTS=()
for ((i = 0; i < ${#TLIST[@]}; i++)); do
  case ${TLIST[i]} in lbserve|lbserve-retry|nginx|nginx-nonidem|haproxy) ;; *) die "unknown target ${TLIST[i]} (known: $ALL_TARGETS)" ;; esac
  for d in 0 1 2 3; do ALLPORTS+=($((BASE_PORT + 10 * i + d))); done
done

acquire_lock
quiet_wait "$QUIET_MAX" || true
build_release
versions
need_ports_free "${ALLPORTS[@]}"
start_watchdog
T_START=$SECONDS
log "measuring ${#TLIST[@]} targets x ${DURATION}s (bound ${MAX_WALL}s); temp dir $TMP"

RES="$TMP/results.tsv"; : >"$RES"; DETAILS="$TMP/details.md"; : >"$DETAILS"
for ((i = 0; i < ${#TLIST[@]}; i++)); do
  t=${TLIST[i]}; port=$((BASE_PORT + 10 * i)); b1=$((port + 1)); b2=$((port + 2)); b3=$((port + 3))
  left=$(( (${#TLIST[@]} - i) * (DURATION + 10) ))
  budget=$(( MAX_WALL - (SECONDS - T_START) - left ))
  contended=0
  ((budget > 0)) && { quiet_wait "$budget" || contended=1; }
  foreign_bench && contended=1

  log "--- $t on :$port, backends :$b1 :$b2 :$b3"
  start_echo "$t-b1" "$b1"; start_echo "$t-b2" "$b2"; E2=$LAST_PID; start_echo "$t-b3" "$b3"
  case $t in
    lbserve)       start_target lbserve "$t" "$port" "$b1" "$b2" "$b3" --health-interval-ms 500 ;;
    lbserve-retry) start_target lbserve "$t" "$port" "$b1" "$b2" "$b3" --health-interval-ms 500 --retry-non-idempotent ;;
    nginx)         start_target nginx:nginx-chaos.conf "$t" "$port" "$b1" "$b2" "$b3" "NEXT_UPSTREAM=error timeout" ;;
    nginx-nonidem) start_target nginx:nginx-chaos.conf "$t" "$port" "$b1" "$b2" "$b3" "NEXT_UPSTREAM=error timeout non_idempotent" ;;
    haproxy)       start_target haproxy:haproxy-chaos.cfg "$t" "$port" "$b1" "$b2" "$b3" ;;
  esac
  URL="http://127.0.0.1:$port/"
  sleep 1   # let active health checks see all backends once
  sanity "$t" "$URL" POST || log "WARNING: $t sanity check: $SANITY_OUT"
  pre=$SANITY_OUT

  proc_snap "$TMP/snap0"
  T0=$(now_ns)
  wrk_start "$t" "$DURATION" POST "$URL"
  sleep_until "$T0" "$KILL_AT"
  kill -KILL "$E2"; TK=$(now_ns); wait "$E2" 2>/dev/null || true; forget_pid "$E2"
  log "$t: SIGKILLed backend :$b2 at +$(rel_s "$T0" "$TK")s"
  foreign_bench && contended=1
  sleep_until "$T0" "$RESTART_AT"
  TR=$(now_ns); start_echo "$t-b2" "$b2"; TU=$(now_ns)
  log "$t: restarted backend :$b2 at +$(rel_s "$T0" "$TR")s (listening at +$(rel_s "$T0" "$TU")s)"
  wrk_wait "$t"; T1=$(now_ns)
  proc_snap "$TMP/snap1"; fcpu=$(foreign_pct "$TMP/snap0" "$TMP/snap1" $((T1 - T0)))
  kill -0 "$TARGET_PID" 2>/dev/null || { log "WARNING: $t died during the run"; contended=2; }

  sanity "$t" "$URL" POST || true; post1=$SANITY_OUT
  sanity "$t" "$URL" POST || true; post2=$SANITY_OUT
  back=$(tr ' ' '\n' <<<"$post1 $post2" | cut -d/ -f1 | grep -E '^[0-9]+$' | sort -u | wc -l)
  ok200=$(tr ' ' '\n' <<<"$post1 $post2" | grep -c '/2[0-9][0-9]$' || true)

  printf '%s\t%s\tkill=%s restart=%s up=%s foreign_cpu=%s contended=%s back=%s ok_after=%s\n' "$t" "$WRK_LINE" \
    "$(rel_s "$T0" "$TK")" "$(rel_s "$T0" "$TR")" "$(rel_s "$T0" "$TU")" "$fcpu" "$contended" "$back" "$ok200" >>"$RES"
  log "$t: $(cut -d' ' -f1-6 <<<"$WRK_LINE") codes=$(kv codes "$WRK_LINE") foreign_cpu=${fcpu}%"
  {
    echo "### $t"
    echo
    echo "- command: \`$TARGET_CMD\`"
    echo "- before (handled_by/status): \`$pre\`; after the run: \`$post1$post2\`"
    echo "- statuses: \`$(kv codes "$WRK_LINE")\`; responses by backend: \`$(kv by "$WRK_LINE")\`; non-2xx by second: \`$(kv bad_by_s "$WRK_LINE")\`"
    ev=$(health_events "$t" "$T0")
    if [[ -n $ev ]]; then echo "- balancer log (seconds since wrk start):"; echo; echo '```'; echo "$ev"; echo '```'; fi
    if [[ -f $TMP/$t/error.log ]]; then
      echo "- nginx error.log: $(grep -c . "$TMP/$t/error.log" || true) lines; first: \`$(grep -m1 -o 'upstream.*while[^,]*' "$TMP/$t/error.log" || true)\`"
    fi
    echo
  } >>"$DETAILS"
  stop_all
done
WALL=$((SECONDS - T_START))

mkdir -p "$RESULTS_DIR"
OUTMD="$RESULTS_DIR/chaos-$STAMP.md"
export RES DETAILS OUTMD STAMP VERSIONS DURATION KILL_AT RESTART_AT CONNS WALL
python3 - <<'PY'
import os
E = os.environ
L = [f"# chaos: backend SIGKILL + restart under POST load ({E['STAMP']})", ""]
L.append(f"- load: `wrk -t1 -c{E['CONNS']} -d{E['DURATION']}s --timeout 5s --latency -s Scripts/lua/scenario.lua URL -- POST` "
         "(POST `{\"msg\":\"demo\"}`), one run per target, targets one after another, each with its own 3 fresh echo backends")
L.append(f"- event: backend 2 of 3 SIGKILLed at ~+{E['KILL_AT']}s, restarted on the same port at ~+{E['RESTART_AT']}s")
L.append(f"- versions: {E['VERSIONS']}")
L.append(f"- wall time of the measuring part: {E['WALL']}s; all traffic on 127.0.0.1; wrk, balancer and backends share the cores")
L.append("")
L.append("| target | requests | req/s | non-2xx | statuses | socket errors (conn/read/write/timeout) | p50 ms | p99 ms | max ms | kill / restart at | back in rotation after | foreign CPU % |")
L.append("|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|")
def ms(us): v = int(us) / 1000; return f"{v:.2f}" if v < 100 else f"{v:.0f}"
for ln in open(E["RES"]):
    t, w, extra = ln.rstrip("\n").split("\t")
    d = dict(x.split("=", 1) for x in w.split()); x = dict(y.split("=", 1) for y in extra.split())
    codes = ",".join(c for c in d["codes"].split(",") if not c.startswith("2")) or "-"
    sock = f"{d['err_connect']}/{d['err_read']}/{d['err_write']}/{d['err_timeout']}"
    rps = int(d["requests"]) / (int(d["duration_us"]) / 1e6)
    flag = {"0": "", "1": " (another benchmark seen)", "2": " (DIED)"}[x["contended"]]
    L.append(f"| {t}{flag} | {int(d['requests']):,} | {rps:,.0f} | {d['non2xx']} | {codes} | {sock} | {ms(d['p50_us'])} | {ms(d['p99_us'])} | {ms(d['max_us'])} | "
             f"+{x['kill']}s / +{x['restart']}s | {x['back']}/3 backends, {x['ok_after']}/12 2xx | {x['foreign_cpu']} |")
L.append("")
L.append("non-2xx = responses with a status outside 200-299 (counted by the Lua script); statuses lists them by code. "
         "Socket errors are wrk's (a request that got no HTTP response). p50/p99 over all answered requests. "
         "'back in rotation after' = distinct backends answering 12 sequential POSTs right after the run. "
         "'foreign CPU' = % of all cores used during the run by processes this script did not start.")
L.append("")
L.append("## Details")
L.append("")
L.extend(x.rstrip("\n") for x in open(E["DETAILS"]))
L.append(f"results file: {E['OUTMD']}")
text = "\n".join(L) + "\n"
open(E["OUTMD"], "w").write(text)
print(text, end="")
PY
log "done in ${WALL}s; wrote $OUTMD"
