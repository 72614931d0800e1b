#!/usr/bin/env bash
# fault-scenario.sh: CI fault scenario for lbserve. One backend of three is paused (SIGSTOP) and resumed
# (SIGCONT), another is SIGKILLed and restarted on its port, under wrk load; checks that the client sees
# no errors the retry rules do not allow, that no POST is delivered twice, and that GET throughput holds.
#
#   bash Scripts/fault-scenario.sh                 # ~40 s: 2 x 17 s of load + start-up (+ incremental release build)
#   BUILD=0 bash Scripts/fault-scenario.sh         # use .build/release/{lbserve,echo} as they are
#
# Two phases, each with a fresh lbserve and three fresh backends on free 127.0.0.1 ports:
#   lbserve --host 127.0.0.1 --port 0 --backend http://127.0.0.1:B1 (B2, B3) --health-interval-ms 500
#   wrk -t1 -cCONNS -d(PHASE_S+1)s --timeout 12s -s Scripts/lua/fault.lua URL -- METHOD T0 TAG
#   timeline (seconds after T0, defaults): +4 SIGSTOP B2, +8 SIGCONT B2, +10 SIGKILL B3, +13 B3 restarted
#   on its port; responses are counted per second since T0. The kill comes after the pause has ended on
#   purpose: with today's code every connection is stuck on the paused backend for the 3 s attempt
#   timeout, so a kill inside that stall would find no request in flight on B3.
#   GET  phase: backends are release `echo` (fast: a backend's capacity must not be what limits the
#               throughput, or losing one of three would cost a third of it whatever the balancer does).
#   POST phase: backends are Scripts/recording_backend.py --delay-ms REC_DELAY_MS (Python): each logs
#               "POST <X-Request-Id>" per delivered request, across its kill and restart, so duplicate
#               deliveries can be counted; it answers REC_DELAY_MS after logging (an application doing
#               some work), so the requests in flight on the killed backend have really been received.
# Checks (each one line PASS/FAIL; the last line of stdout is "N passed, N failed"; exit 1 if any failed):
#   GET  statuses       every response 2xx (a GET is replayable: 5xx or any other non-2xx fails)
#   GET  socket errors  wrk connect/read/write/timeout errors = 0
#   GET  throughput     2xx per second, in every full second from PAUSE_AT+1 to RESUME_AT (the hang), at least
#                       (100-DIP_PCT)% of the median of seconds 1..PAUSE_AT-1 (second 0 is warm-up, second
#                       PAUSE_AT - the one the pause starts in - is allowed); dips fail, rises are only shown
#   GET  recovery       after the run, sequential GETs are 2xx and reach all three backends (within 12 s: a
#                       backend that hang detection ejected at the very end of the load, slow for a moment while
#                       the others answered, comes back by design through the 5 s ejection timer and a trial)
#   POST duplicates     no X-Request-Id logged twice over all three backends' logs
#   POST statuses       only 2xx, 502 and 504; at most CONNS 504 and CONNS 502 (the POSTs in flight on the paused
#                       or killed backend, which must not be replayed); anything else fails
#   POST socket errors  wrk connect/read/write/timeout errors = 0
#   POST recovery       as GET recovery
#
# Knobs: PHASE_S [16], PAUSE_AT [4], RESUME_AT [8], KILL_AT [10], RESTART_AT [13], CONNS [32],
#        DIP_PCT [20], HEALTH_MS [500] (empty = lbserve's default), WRK_TIMEOUT [12], REC_DELAY_MS [2],
#        PHASES ["GET POST"],
#        BUILD [1], QUIET_MAX [120], MAX_WALL [150], KEEP_TMP [0].
# Needs: wrk, curl, python3 (stdlib only), setsid/timeout/flock (util-linux, coreutils), awk.
# Safety: 127.0.0.1 only; ports chosen by the kernel (port 0) and reused only for the restart; every
# process it starts is stopped by its PID / own process group on exit (EXIT trap, SIGCONT first);
# every wrk has -d and runs under `timeout`; a watchdog ends the script after MAX_WALL seconds.
set -Eeuo pipefail
SCENARIO=fault
: "${MAX_WALL:=150}" "${QUIET_MAX:=120}"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PHASE_S="${PHASE_S:-16}"; PAUSE_AT="${PAUSE_AT:-4}"; RESUME_AT="${RESUME_AT:-8}"
KILL_AT="${KILL_AT:-10}"; RESTART_AT="${RESTART_AT:-13}"
CONNS="${CONNS:-32}"; DIP_PCT="${DIP_PCT:-20}"; HEALTH_MS="${HEALTH_MS-500}"; WRK_TIMEOUT="${WRK_TIMEOUT:-12}"
REC_DELAY_MS="${REC_DELAY_MS:-2}"
read -r -a PHASE_LIST <<<"${PHASES:-GET POST}"
PYTHON="${PYTHON:-python3}"

((PAUSE_AT >= 2)) || die "PAUSE_AT must be >= 2 (seconds 1..PAUSE_AT-1 are the baseline)"
((PAUSE_AT < RESUME_AT && RESUME_AT < PHASE_S)) || die "need PAUSE_AT < RESUME_AT < PHASE_S"
((KILL_AT < RESTART_AT && RESTART_AT < PHASE_S)) || die "need KILL_AT < RESTART_AT < PHASE_S"
(( ${#PHASE_LIST[@]} * (PHASE_S + 15) < MAX_WALL )) || die "${#PHASE_LIST[@]} phases x (${PHASE_S}+15)s do not fit MAX_WALL=${MAX_WALL}s"

missing=()
for t in wrk curl "$PYTHON" setsid timeout flock awk; do command -v "$t" >/dev/null || missing+=("$t"); done
((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (Debian: apt-get install wrk curl python3)"

PAUSED_PID=""
fault_cleanup() {  # resume a paused backend first so that it can be stopped at once, then lib.sh's cleanup
  local rc=$?
  set +e
  [[ -n $PAUSED_PID ]] && kill -CONT "$PAUSED_PID" 2>/dev/null
  (exit "$rc"); cleanup   # lib.sh's cleanup reads the exit status from $?
}
trap fault_cleanup EXIT

acquire_lock
quiet_wait "$QUIET_MAX" || true
build_release
[[ -x $LBSERVE && -x $ECHO_BIN ]] || die "$LBSERVE / $ECHO_BIN missing (swift build -c release)"
log "versions: lbserve $LBSERVE (built $(date -r "$LBSERVE" '+%Y-%m-%d %H:%M:%S')), $( (swift --version 2>/dev/null || echo swift ?) | head -n 1); \
$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2); $("$PYTHON" --version 2>&1); kernel $(uname -r); $(nproc) cores"
start_watchdog
log "phases: ${PHASE_LIST[*]}, ${PHASE_S}s each, wrk -t1 -c$CONNS; temp dir $TMP"

# start_announced NAME CMD...: start CMD (lib.sh start_server), wait up to 15 s for "running on port N" in its
# log; ANN_PORT=N, ANN_PID=its PID
start_announced() {
  local name=$1 i line
  shift
  : >"$TMP/$name.log"
  start_server "$name" "$@"
  ANN_PID=$LAST_PID
  for ((i = 0; i < 300; i++)); do
    line=$(grep -m1 -o 'running on port [0-9]*' "$TMP/$name.log" || true)
    [[ -n $line ]] && { ANN_PORT=${line##* }; return 0; }
    kill -0 "$ANN_PID" 2>/dev/null || { tail -n 20 "$TMP/$name.log" >&2 || true; die "$name exited before listening"; }
    sleep 0.05
  done
  die "$name did not announce its port within 15 s (see $TMP/$name.log)"
}

# backend_cmd KIND PORT NAME -> BCMD array
backend_cmd() {
  case $1 in
    echo) BCMD=("$ECHO_BIN" --host 127.0.0.1 --port "$2") ;;
    rec)  BCMD=("$PYTHON" "$SCRIPTS/recording_backend.py" --host 127.0.0.1 --port "$2" --log "$TMP/$3.ids" --delay-ms "$REC_DELAY_MS") ;;
  esac
}

CHECKS="$TMP/checks.tsv"; : >"$CHECKS"

# run_phase METHOD: one phase (GET -> echo backends, POST -> recording backends)
run_phase() {
  local method=$1 kind name i lb_port url t0 t0s at what out recovery="" tries foreign
  local -a bport=() bpid=() lbflags=()
  [[ $method == GET ]] && kind=echo || kind=rec
  for i in 1 2 3; do
    name="$method-b$i"; backend_cmd "$kind" 0 "$name"
    start_announced "$name" "${BCMD[@]}"; bport[i]=$ANN_PORT; bpid[i]=$ANN_PID
  done
  [[ -n $HEALTH_MS ]] && lbflags=(--health-interval-ms "$HEALTH_MS")
  start_announced "$method-lb" "$LBSERVE" --host 127.0.0.1 --port 0 --backend "http://127.0.0.1:${bport[1]}" \
    --backend "http://127.0.0.1:${bport[2]}" --backend "http://127.0.0.1:${bport[3]}" "${lbflags[@]}"
  lb_port=$ANN_PORT; url="http://127.0.0.1:$lb_port/"
  start_stamper "$method-lb"
  log "$method phase: lbserve :$lb_port ${lbflags[*]}, $kind backends b1 :${bport[1]} b2 :${bport[2]} (paused) b3 :${bport[3]} (killed)"
  for ((i = 0; i < 50; i++)); do
    out=$(curl -s --max-time 1 "http://127.0.0.1:$lb_port/_lb/health" || true)
    [[ $out == *'"eligible":3'* ]] && break
    sleep 0.1
  done
  sanity "$method" "$url" "$method" || log "WARNING: $method sanity before the run: $SANITY_OUT"
  log "$method before the run (handled_by/status): $SANITY_OUT"

  proc_snap "$TMP/$method.snap0"
  t0=$(now_ns); t0s="${t0:0:${#t0}-9}.${t0: -9}"
  start_server "wrk-$method" timeout --kill-after=5 $((PHASE_S + 1 + 20)) \
    wrk -t1 -c"$CONNS" -d"$((PHASE_S + 1))s" --timeout "${WRK_TIMEOUT}s" --latency \
        -s "$SCRIPTS/lua/fault.lua" "$url" -- "$method" "$t0s" "${method:0:1}"
  WRK_PID=$LAST_PID; OUR_WRK_PARENT=$WRK_PID
  : >"$TMP/$method.events"
  while read -r at what; do
    sleep_until "$t0" "$at"
    case $what in
      pause)   kill -STOP "${bpid[2]}"; PAUSED_PID=${bpid[2]}; out="SIGSTOP b2 :${bport[2]}" ;;
      resume)  kill -CONT "${bpid[2]}"; PAUSED_PID=""; out="SIGCONT b2 :${bport[2]}" ;;
      kill)    kill -KILL "${bpid[3]}"; wait "${bpid[3]}" 2>/dev/null || true; forget_pid "${bpid[3]}"
               out="SIGKILL b3 :${bport[3]}" ;;
      restart) backend_cmd "$kind" "${bport[3]}" "$method-b3"; start_server "$method-b3" "${BCMD[@]}"
               bpid[3]=$LAST_PID; wait_port "$method-b3" "${bport[3]}" 10; out="restarted b3 :${bport[3]}" ;;
    esac
    printf '%s\t%s\t%s\n' "$at" "$(rel_s "$t0" "$(now_ns)")" "$out" >>"$TMP/$method.events"
    log "$method +$(rel_s "$t0" "$(now_ns)")s: $out"
  done < <(printf '%s pause\n%s kill\n%s restart\n%s resume\n' "$PAUSE_AT" "$KILL_AT" "$RESTART_AT" "$RESUME_AT" | sort -n -s)

  wait "$WRK_PID" 2>/dev/null || log "wrk ($method) exited non-zero (see $TMP/wrk-$method.log)"
  forget_pid "$WRK_PID"; OUR_WRK_PARENT=""
  proc_snap "$TMP/$method.snap1"; foreign=$(foreign_pct "$TMP/$method.snap0" "$TMP/$method.snap1" $(( $(now_ns) - t0 )))
  foreign_bench && log "WARNING: another benchmark ran during the $method phase; throughput figures are disturbed"

  for ((tries = 1; tries <= 12; tries++)); do
    if sanity "$method" "$url" "$method"; then recovery="ok after ${tries} try(s): $SANITY_OUT"; break; fi
    recovery="FAIL: $SANITY_OUT"; sleep 1
  done
  health_events "$method-lb" "$t0" >"$TMP/$method.health" || true
  [[ $kind == rec ]] && sleep 1   # let the resumed backend finish what it had queued before the logs are read
  stop_all

  PH_METHOD=$method WRK_OUT="$TMP/wrk-$method.log" EVENTS="$TMP/$method.events" HEALTH="$TMP/$method.health" \
  IDS_GLOB="$TMP/$method-b*.ids" RECOVERY="$recovery" FOREIGN="$foreign" CONNS="$CONNS" DIP_PCT="$DIP_PCT" \
  PAUSE_AT="$PAUSE_AT" RESUME_AT="$RESUME_AT" PHASE_S="$PHASE_S" CHECKS="$CHECKS" "$PYTHON" - <<'PY'
import glob, os, statistics, sys
E = os.environ
m = E["PH_METHOD"]; conns = int(E["CONNS"]); dip = float(E["DIP_PCT"]); pause = int(E["PAUSE_AT"]); D = int(E["PHASE_S"])
# The throughput bound is the hang's: every second while the backend is paused, up to and with
# the second it resumes in. Afterwards client errors are what is checked (a killed and restarted
# backend costs connections and a slow start, and wrk shares the 2 cores with everything else).
resume = int(E["RESUME_AT"])
checks = open(E["CHECKS"], "a")
def check(name, ok, detail):
    checks.write(f"{'PASS' if ok else 'FAIL'}\t{m} {name}\t{detail}\n")
    print(f"{'PASS' if ok else 'FAIL'}  {m} {name}: {detail}")

sec, codes, err, tot = {}, {}, {}, {}
for ln in open(E["WRK_OUT"], errors="replace"):
    w = ln.split()
    if not w or w[0] not in ("SECOND", "STATUS", "ERRORS", "TOTAL"): continue
    kv = dict(x.split("=", 1) for x in w[1:] if "=" in x)
    if w[0] == "SECOND": sec[int(kv["t"])] = (int(kv["n"]), int(kv["ok"]))
    elif w[0] == "STATUS": codes[int(kv["code"])] = int(kv["n"])
    elif w[0] == "ERRORS": err = {k: int(v) for k, v in kv.items()}
    else: tot = {k: int(v) for k, v in kv.items()}
if not tot:
    print(f"{m}: no result lines from wrk; its output:\n" + open(E["WRK_OUT"], errors="replace").read()[-2000:])

events = {}
for ln in open(E["EVENTS"]):
    at, real, what = ln.rstrip("\n").split("\t")
    events.setdefault(int(at), []).append(f"{what} (+{real}s)")

base_bins = [s for s in range(1, pause)]
base = [sec.get(s, (0, 0))[1] for s in base_bins]
median = statistics.median(base) if base else 0
floor = median * (1 - dip / 100)
print(f"\n{m} phase: 2xx responses per second since T0 (baseline = median of seconds {base_bins[0]}..{base_bins[-1]} = {median:.0f}/s; "
      f"floor {100 - dip:.0f}% = {floor:.0f}/s)")
print(f"{'second':>6} {'responses':>9} {'2xx':>7} {'% of base':>9}  note")
dips = []
for s in range(0, max(list(sec) + [D - 1]) + 1):
    n, ok = sec.get(s, (0, 0))
    pct = 100 * ok / median if median else 0
    if s == 0: role = "warm-up"
    elif s < pause: role = "baseline"
    elif s == pause: role = "pause second (allowed)"
    elif s <= resume: role = "checked"
    elif s < D: role = "after the resume (errors checked, throughput shown)"
    else: role = "past the phase (not checked)"
    mark = ""
    if role == "checked" and m == "GET" and ok < floor:
        mark = "  << DIP"; dips.append(f"s{s}={ok}")
    note = "; ".join(events.get(s, []))
    print(f"{s:>6} {n:>9} {ok:>7} {pct:>8.0f}%  {role}{(' | ' + note) if note else ''}{mark}")
print(f"statuses: {', '.join(f'{c}:{n}' for c, n in sorted(codes.items())) or '-'}; wrk errors: "
      f"{', '.join(f'{k}={v}' for k, v in err.items()) or '-'}; total {tot.get('responses', 0)} responses, "
      f"p50 {tot.get('p50_us', 0)/1000:.1f} ms, p99 {tot.get('p99_us', 0)/1000:.1f} ms, max {tot.get('max_us', 0)/1000:.0f} ms; "
      f"CPU used by other processes: {E['FOREIGN']}% of the machine")
h = open(E["HEALTH"]).read().strip()
if h: print("lbserve health log (seconds since T0):\n  " + h.replace("\n", "\n  "))
print()

sock = sum(err.get(k, 0) for k in ("connect", "read", "write", "timeout"))
sock_detail = f"connect={err.get('connect', '?')} read={err.get('read', '?')} write={err.get('write', '?')} timeout={err.get('timeout', '?')}"
non2xx = {c: n for c, n in codes.items() if not 200 <= c <= 299}
if m == "GET":
    check("statuses", bool(tot) and not non2xx,
          f"{tot.get('responses', 0)} responses, non-2xx: {non2xx or 'none'}" if tot else "no wrk results")
    check("socket errors", bool(err) and sock == 0, sock_detail)
    have = all(s in sec for s in range(pause + 1, resume + 1))
    check("throughput", bool(base) and median > 0 and have and not dips,
          (f"seconds below {floor:.0f}/s ({100 - dip:.0f}% of baseline median {median:.0f}/s): {', '.join(dips)}" if dips
           else f"every checked second >= {floor:.0f}/s ({100 - dip:.0f}% of baseline median {median:.0f}/s)")
          if have and median > 0 else "wrk did not report every second of the phase")
else:
    ids, per_port = {}, {}
    for f in sorted(glob.glob(E["IDS_GLOB"])):
        port = os.path.basename(f)
        for ln in open(f, errors="replace"):
            w = ln.split()
            if len(w) != 2 or w[0] != "POST": continue
            ids.setdefault(w[1], []).append(port.split(".")[0])
            per_port[port] = per_port.get(port, 0) + 1
    dup = {i: p for i, p in ids.items() if len(p) > 1}
    where = {}
    for p in dup.values(): where[" + ".join(p)] = where.get(" + ".join(p), 0) + 1
    print(f"POST ids delivered: {len(ids)} distinct, {sum(per_port.values())} deliveries "
          f"({', '.join(f'{k}: {v}' for k, v in per_port.items())}); ids handed out by wrk: {tot.get('sent', '?')}, "
          f"2xx answers: {sum(n for c, n in codes.items() if 200 <= c <= 299)}")
    check("duplicates", bool(ids) and not dup,
          (f"{len(dup)} POST ids delivered more than once ({', '.join(f'{k}: {v}' for k, v in where.items())}); "
           f"e.g. {', '.join(sorted(dup)[:5])}") if dup else
          (f"every one of {len(ids)} POST ids delivered once" if ids else "no POST id was recorded at all"))
    # Two events, each may catch at most one POST per connection in flight on its backend:
    # 504 for those stuck on the paused one (timeout), 502 for those on the killed one (reset).
    n504, n502 = non2xx.get(504, 0), non2xx.get(502, 0)
    other = {c: n for c, n in non2xx.items() if c not in (502, 504)}
    check("statuses", bool(tot) and not other and n504 <= conns and n502 <= conns,
          f"504 = {n504} (paused backend), 502 = {n502} (killed backend); each allowed <= {conns} = connections, "
          "the POSTs already in flight on that backend"
          + (f"; other non-2xx: {other}" if other else "") if tot else "no wrk results")
    check("socket errors", bool(err) and sock == 0, sock_detail)
check("recovery", E["RECOVERY"].startswith("ok"), E["RECOVERY"])
PY
}

for ph in "${PHASE_LIST[@]}"; do
  case $ph in GET|POST) run_phase "$ph" ;; *) die "unknown phase $ph (GET, POST)" ;; esac
done

pass=$(grep -c '^PASS' "$CHECKS" || true); fail=$(grep -c '^FAIL' "$CHECKS" || true)
if ((fail > 0)); then
  echo "FAILED checks:"; grep '^FAIL' "$CHECKS" | cut -f2,3 | sed 's/\t/: /; s/^/  /'
fi
echo "$pass passed, $fail failed"
((fail == 0)) || exit 1
