#!/usr/bin/env bash
# memory-and-hang.sh: "before" figures of today's lbserve (default flags) for three failure/resource cases.
#
#   bash Scripts/memory-and-hang.sh            # ~1.5 min after the (incremental) release build
#   BUILD=0 OUT=/tmp/x.md bash Scripts/memory-and-hang.sh
#
# 1. hang: three release echo backends (one process per port), lbserve with default flags
#    (--host 127.0.0.1 --port 0 --backend x3 only), wrk -t1 -cCONNS -d(HANG_S)s --timeout 12s
#    -s Scripts/lua/fault.lua; backend 2 gets SIGSTOP at +STOP_AT s and SIGCONT at +CONT_AT s.
#    Responses completed per second (all / 2xx), once with GET and once with POST {"msg":"x"}.
# 2. idle keep-alive connections: fresh lbserve (default flags); Scripts/mem_probe.py idle opens IDLE_CONNS
#    connections, each sends one `GET /_lb/health HTTP/1.1`, reads the answer and stays open; lbserve's
#    VmRSS before, with them open (after 3 s idle), per connection, and 5 s after closing them.
# 3. upload burst: fresh lbserve --max-body-bytes MAX_BODY; Scripts/mem_probe.py burst sends BURST
#    concurrent POSTs of BURST_MIB MiB (Content-Length, body of 'a's; echo answers 400, not JSON);
#    VmRSS before, peak (sampled every 10 ms, and VmHWM), and 5 s after.
# Results: markdown on stdout and in OUT [Scripts/results/baseline-<date>.md].
#
# Knobs: HANG_S [12], STOP_AT [4], CONT_AT [8], CONNS [64], IDLE_CONNS [2000], BURST [200], BURST_MIB [8],
#        MAX_BODY [9000000], BUILD [1], QUIET_MAX [300], MAX_WALL [240], KEEP_TMP [0], OUT.
# Safety: 127.0.0.1 only, kernel-chosen ports, own processes stopped by PID on exit (SIGCONT first),
# every wrk has -d and `timeout`, the probes have socket timeouts and a deadline, watchdog MAX_WALL.
set -Eeuo pipefail
SCENARIO=baseline
: "${MAX_WALL:=240}" "${QUIET_MAX:=300}"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HANG_S="${HANG_S:-12}"; STOP_AT="${STOP_AT:-4}"; CONT_AT="${CONT_AT:-8}"; CONNS="${CONNS:-64}"
IDLE_CONNS="${IDLE_CONNS:-2000}"; BURST="${BURST:-200}"; BURST_MIB="${BURST_MIB:-8}"; MAX_BODY="${MAX_BODY:-9000000}"
OUT="${OUT:-$RESULTS_DIR/baseline-$(date +%Y-%m-%d).md}"
PYTHON="${PYTHON:-python3}"
((STOP_AT < CONT_AT && CONT_AT < HANG_S)) || die "need STOP_AT < CONT_AT < HANG_S"
for t in wrk curl "$PYTHON" setsid timeout flock awk; do command -v "$t" >/dev/null || die "missing tool: $t"; done

PAUSED_PID=""
own_cleanup() { local rc=$?; set +e; [[ -n $PAUSED_PID ]] && kill -CONT "$PAUSED_PID" 2>/dev/null; (exit "$rc"); cleanup; }
trap own_cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= IDLE_CONNS + 256 )) || die "open-file limit $(ulimit -n) is below IDLE_CONNS+256"

acquire_lock
quiet_wait "$QUIET_MAX" || true
build_release
VERS="lbserve $LBSERVE (built $(date -r "$LBSERVE" '+%Y-%m-%d %H:%M:%S'), git $(cd "$ROOT" && git rev-parse --short HEAD)); $( (swift --version 2>/dev/null || echo swift ?) | head -n 1); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2); $("$PYTHON" --version 2>&1); kernel $(uname -r); $(nproc) cores; ulimit -n $(ulimit -n)"
log "versions: $VERS"
start_watchdog

start_announced() {  # NAME CMD... -> ANN_PORT, ANN_PID (waits for "running on port N" in its log)
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
  die "$name did not announce its port within 15 s"
}
# setup NAME [lbserve flags...] -> B1..B3 ports, B2PID, LBPORT, LBPID
setup() {
  local name=$1 i
  shift
  for i in 1 2 3; do start_announced "$name-b$i" "$ECHO_BIN" --host 127.0.0.1 --port 0; BP[i]=$ANN_PORT; BPID[i]=$ANN_PID; done
  start_announced "$name-lb" "$LBSERVE" --host 127.0.0.1 --port 0 --backend "http://127.0.0.1:${BP[1]}" \
    --backend "http://127.0.0.1:${BP[2]}" --backend "http://127.0.0.1:${BP[3]}" "$@"
  LBPORT=$ANN_PORT; LBPID=$ANN_PID
  start_stamper "$name-lb"
  sanity "$name" "http://127.0.0.1:$LBPORT/" POST || log "WARNING: $name sanity: $SANITY_OUT"
}

# ---------------------------------------------------------------- 1. hang (SIGSTOP one backend)
for method in GET POST; do
  setup "hang-$method"
  log "hang $method: lbserve :$LBPORT (default flags), echo :${BP[1]} :${BP[2]} (paused) :${BP[3]}"
  proc_snap "$TMP/hang-$method.snap0"
  t0=$(now_ns); t0s="${t0:0:${#t0}-9}.${t0: -9}"
  start_server "wrk-$method" timeout --kill-after=5 $((HANG_S + 20)) \
    wrk -t1 -c"$CONNS" -d"${HANG_S}s" --timeout 12s -s "$SCRIPTS/lua/fault.lua" "http://127.0.0.1:$LBPORT/" -- "$method" "$t0s"
  WRK_PID=$LAST_PID; OUR_WRK_PARENT=$WRK_PID
  sleep_until "$t0" "$STOP_AT"; kill -STOP "${BPID[2]}"; PAUSED_PID=${BPID[2]}
  echo "stop $(rel_s "$t0" "$(now_ns)")" >"$TMP/hang-$method.events"
  sleep_until "$t0" "$CONT_AT"; kill -CONT "${BPID[2]}"; PAUSED_PID=""
  echo "cont $(rel_s "$t0" "$(now_ns)")" >>"$TMP/hang-$method.events"
  wait "$WRK_PID" 2>/dev/null || log "wrk $method exited non-zero"
  forget_pid "$WRK_PID"; OUR_WRK_PARENT=""
  proc_snap "$TMP/hang-$method.snap1"
  echo "foreign $(foreign_pct "$TMP/hang-$method.snap0" "$TMP/hang-$method.snap1" $(( $(now_ns) - t0 )))" >>"$TMP/hang-$method.events"
  health_events "hang-$method-lb" "$t0" >"$TMP/hang-$method.health" || true
  stop_all
done

# ---------------------------------------------------------------- 2. idle keep-alive connections
setup idle
log "idle: lbserve :$LBPORT pid $LBPID, $IDLE_CONNS idle keep-alive connections"
proc_snap "$TMP/idle.snap0"; t0=$(now_ns)
timeout 120 "$PYTHON" "$SCRIPTS/mem_probe.py" idle --pid "$LBPID" --port "$LBPORT" --conns "$IDLE_CONNS" --after 5 \
  >"$TMP/idle.json" 2>"$TMP/idle.err" || { cat "$TMP/idle.err" >&2; die "idle probe failed"; }
proc_snap "$TMP/idle.snap1"; echo "$(foreign_pct "$TMP/idle.snap0" "$TMP/idle.snap1" $(( $(now_ns) - t0 )))" >"$TMP/idle.foreign"
stop_all

# ---------------------------------------------------------------- 3. upload burst
setup burst --max-body-bytes "$MAX_BODY"
log "burst: lbserve :$LBPORT pid $LBPID --max-body-bytes $MAX_BODY, $BURST x $BURST_MIB MiB POSTs"
proc_snap "$TMP/burst.snap0"; t0=$(now_ns)
timeout 150 "$PYTHON" "$SCRIPTS/mem_probe.py" burst --pid "$LBPID" --port "$LBPORT" --count "$BURST" --mib "$BURST_MIB" --after 5 --deadline 90 \
  >"$TMP/burst.json" 2>"$TMP/burst.err" || { cat "$TMP/burst.err" >&2; die "burst probe failed"; }
proc_snap "$TMP/burst.snap1"; echo "$(foreign_pct "$TMP/burst.snap0" "$TMP/burst.snap1" $(( $(now_ns) - t0 )))" >"$TMP/burst.foreign"
kill -0 "$LBPID" 2>/dev/null || log "WARNING: lbserve died during the burst"
stop_all

mkdir -p "$(dirname "$OUT")"
TMP="$TMP" OUT="$OUT" VERS="$VERS" HANG_S="$HANG_S" STOP_AT="$STOP_AT" CONT_AT="$CONT_AT" CONNS="$CONNS" \
IDLE_CONNS="$IDLE_CONNS" BURST="$BURST" BURST_MIB="$BURST_MIB" MAX_BODY="$MAX_BODY" "$PYTHON" - <<'PY'
import json, os
E = os.environ; T = E["TMP"]
L = [f"# Baseline of today's lbserve: a paused backend, idle keep-alive connections, an upload burst ({__import__('time').strftime('%Y-%m-%d %H:%M')})", "",
     f"- versions: {E['VERS']}",
     "- everything on 127.0.0.1 on one 2-core machine: wrk/probe, lbserve and three `echo` backends share the cores; "
     "lbserve with default flags apart from `--host 127.0.0.1 --port 0 --backend ...` (x3) "
     f"(and `--max-body-bytes {E['MAX_BODY']}` for the burst); a fresh lbserve and fresh backends for every part.",
     "- produced by `bash Scripts/memory-and-hang.sh`", ""]

def wrk(path):
    sec, codes, err, tot = {}, {}, {}, {}
    for ln in open(path, errors="replace"):
        w = ln.split()
        if not w: continue
        kv = dict(x.split("=", 1) for x in w[1:] if "=" in x)
        if w[0] == "SECOND": sec[int(kv["t"])] = (int(kv["n"]), int(kv["ok"]))
        elif w[0] == "STATUS": codes[int(kv["code"])] = int(kv["n"])
        elif w[0] == "ERRORS": err = kv
        elif w[0] == "TOTAL": tot = kv
    return sec, codes, err, tot

L += [f"## 1. One backend of three paused (SIGSTOP at +{E['STOP_AT']} s, SIGCONT at +{E['CONT_AT']} s)", "",
      f"`wrk -t1 -c{E['CONNS']} -d{E['HANG_S']}s --timeout 12s -s Scripts/lua/fault.lua URL -- GET|POST T0` "
      "(POST body `{\"msg\":\"x\"}`). Responses completed per second since T0 (all statuses / non-2xx).", ""]
res = {}
for m in ("GET", "POST"):
    res[m] = wrk(f"{T}/wrk-{m}.log")
    ev = dict(l.split() for l in open(f"{T}/hang-{m}.events"))
    res[m] += (ev,)
last = max(max(res[m][0] or {0: 0}) for m in res)
L += ["| second | GET responses | GET non-2xx | POST responses | POST non-2xx | event |", "|---:|---:|---:|---:|---:|---|"]
stop_s, cont_s = int(E["STOP_AT"]), int(E["CONT_AT"])
for s in range(0, last + 1):
    row = [str(s)]
    for m in ("GET", "POST"):
        n, ok = res[m][0].get(s, (0, 0)); row += [f"{n:,}", f"{n - ok:,}" if n - ok else "0"]
    note = "SIGSTOP backend 2" if s == stop_s else "SIGCONT backend 2" if s == cont_s else ""
    if s >= int(E["HANG_S"]): note = (note + " (after wrk's end: partial)").strip()
    row.append(note); L.append("| " + " | ".join(row) + " |")
L.append("")
for m in ("GET", "POST"):
    sec, codes, err, tot, ev = res[m]
    base = [sec.get(s, (0, 0))[1] for s in range(1, stop_s)]
    base.sort(); med = base[len(base) // 2] if base else 0
    worst = min((sec.get(s, (0, 0))[1], s) for s in range(stop_s, int(E["HANG_S"])))
    L.append(f"- {m}: statuses {', '.join(f'{c}: {n:,}' for c, n in sorted(codes.items()))}; wrk socket errors "
             f"connect {err.get('connect')}, read {err.get('read')}, write {err.get('write')}, timeout {err.get('timeout')}; "
             f"p50 {int(tot.get('p50_us', 0))/1000:.1f} ms, p99 {int(tot.get('p99_us', 0))/1000:.0f} ms, max {int(tot.get('max_us', 0))/1000:.0f} ms; "
             f"2xx/s before the pause (median of s1..s{stop_s - 1}) {med:,}, lowest second after it s{worst[1]} = {worst[0]:,}; "
             f"SIGSTOP at +{ev['stop']} s, SIGCONT at +{ev['cont']} s; CPU of other processes {ev['foreign']}%")
    h = open(f"{T}/hang-{m}.health").read().strip()
    if h: L.append(f"  - lbserve log ({m}): " + "; ".join(h.splitlines()))
L.append("")

d = json.loads(open(f"{T}/idle.json").read().strip().splitlines()[-1])
mib = lambda k: f"{k/1024:,.1f} MiB"
L += [f"## 2. {E['IDLE_CONNS']} idle keep-alive connections", "",
      "`python3 Scripts/mem_probe.py idle`: each connection sends one `GET /_lb/health HTTP/1.1`, reads the 200 and stays open; "
      "VmRSS of lbserve from /proc/PID/status.", "",
      "| | VmRSS | lbserve fds |", "|---|---:|---:|",
      f"| before (after 20 warm-up connections) | {mib(d['rss_before_kib'])} | {d['fds_before']} |",
      f"| {d['conns_open']:,} connections open, idle 3 s | {mib(d['rss_open_kib'])} | {d['fds_open']} |",
      f"| {d['after_s']:.0f} s after closing them | {mib(d['rss_after_close_kib'])} | {d['fds_after_close']} |", "",
      f"- per connection: **{d['per_conn_bytes']/1024:,.1f} KiB** ((open - before) / {d['conns_open']:,}); "
      f"opened in {d['open_s']} s; answers {d['statuses']}; failed {d['failed']}, closed by the server while idle {d['closed_by_server']}; "
      f"VmHWM {mib(d['hwm_kib'])}; CPU of other processes {open(T + '/idle.foreign').read().strip()}%", ""]

b = json.loads(open(f"{T}/burst.json").read().strip().splitlines()[-1])
L += [f"## 3. Upload burst: {E['BURST']} concurrent POSTs of {E['BURST_MIB']} MiB", "",
      f"`python3 Scripts/mem_probe.py burst`: one thread per request, all released together; `Content-Length: {int(E['BURST_MIB']) * 1048576}`, "
      f"body of 'a's (so echo answers 400: not JSON); lbserve `--max-body-bytes {E['MAX_BODY']}`.", "",
      "| | VmRSS |", "|---|---:|",
      f"| before | {mib(b['rss_before_kib'])} |",
      f"| peak (sampled every 10 ms, at +{b['peak_at_s']} s) | {mib(b['rss_peak_sampled_kib'])} |",
      f"| peak (VmHWM) | {mib(b['hwm_kib'])} |",
      f"| right after the last answer | {mib(b['rss_end_kib'])} |",
      f"| {b['after_s']:.0f} s later | {mib(b['rss_after_kib'])} |", "",
      f"- {E['BURST']} x {E['BURST_MIB']} MiB = {int(E['BURST']) * int(E['BURST_MIB']):,} MiB of bodies; burst took {b['burst_s']} s; "
      f"results {b['results']}; unfinished {b['unfinished']}; CPU of other processes {open(T + '/burst.foreign').read().strip()}%", ""]
text = "\n".join(L) + "\n"
open(E["OUT"], "w").write(text)
print(text, end="")
PY
log "wrote $OUT"
