#!/usr/bin/env bash
# memory-check.sh: the two memory bounds of issue 14 (item 4), checked on release lbserve with
# default flags (plus --max-body-bytes for the burst). Run by CI (stage `memory`).
#
#   bash Scripts/memory-check.sh             # BUILD=0 skips `swift build -c release`
#
# 1. idle: IDLE_CONNS [10000] keep-alive connections each send one `GET /_lb/health`, read the
#    answer and stay open (Scripts/mem_probe.py idle, HOLD [5] s idle); fails when lbserve's
#    (VmRSS open - VmRSS before) / connections exceeds IDLE_MAX_BYTES [4000], when a connection
#    failed or was closed by the server, or when RSS 5 s after closing them is not back within
#    IDLE_AFTER_RATIO [1.2] of before.
# 2. burst: BURST [200] concurrent POSTs of BURST_MIB [8] MiB (Scripts/mem_probe.py burst);
#    fails unless VmRSS AFTER_S [5] s after the last answer is within BURST_MAX_RATIO [1.2] of
#    VmRSS before (the issue's bound: within 20% a few seconds after the burst), or when a
#    request got no HTTP answer.
# Bounded: every probe has a deadline and runs under `timeout`; 127.0.0.1 only, kernel-chosen
# ports; stops only the processes it started, by PID. Ends with "N passed, N failed"; exit 1 on
# any failure. Wants `ulimit -n` >= IDLE_CONNS + 256 (raised to the hard limit when possible;
# below that it measures fewer connections, at least 1000).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LBSERVE="${LBSERVE:-$ROOT/.build/release/lbserve}"
ECHO_BIN="${ECHO_BIN:-$ROOT/.build/release/echo}"
PYTHON="${PYTHON:-python3}"
IDLE_CONNS="${IDLE_CONNS:-10000}"; HOLD="${HOLD:-5}"; IDLE_MAX_BYTES="${IDLE_MAX_BYTES:-4000}"
IDLE_AFTER_RATIO="${IDLE_AFTER_RATIO:-1.2}"
BURST="${BURST:-200}"; BURST_MIB="${BURST_MIB:-8}"; AFTER_S="${AFTER_S:-5}"; BURST_MAX_RATIO="${BURST_MAX_RATIO:-1.2}"
MAX_BODY=$((BURST_MIB * 1048576 + 65536))
[ "${BUILD:-1}" = 1 ] && (cd "$ROOT" && swift build -c release >/dev/null)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CONNS + 256)) ]; then
  # Fewer connections still measure the per-connection cost (fixed costs weigh a little more).
  IDLE_CONNS=$(( $(ulimit -n) - 256 ))
  echo "note: open-file limit $(ulimit -n): measuring $IDLE_CONNS idle connections"
  [ "$IDLE_CONNS" -ge 1000 ] || { echo "FAIL open-file limit $(ulimit -n) is too low for 1000 idle connections"; exit 1; }
fi
TMP="$(mktemp -d /tmp/lbkit-memcheck.XXXXXX)"
pids=()
stop() { for p in "$@"; do kill "$p" 2>/dev/null; done; for p in "$@"; do wait "$p" 2>/dev/null; done; }
cleanup() { stop "${pids[@]}"; rm -rf "$TMP"; }
trap cleanup EXIT
passed=0; failed=0
check() { if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi; }

wait_line() { # FILE REGEX -> prints the first number after the match
  for _ in $(seq 1 300); do
    local n; n=$(grep -oE "$2 [0-9]+" "$1" 2>/dev/null | head -1 | awk '{print $NF}')
    [ -n "$n" ] && { echo "$n"; return 0; }
    sleep 0.05
  done
  return 1
}

# start NAME [lbserve flags...] -> LB (pid), LB_PORT; a fresh echo backend and a fresh lbserve
start() {
  local name=$1; shift
  "$ECHO_BIN" --host 127.0.0.1 --port 0 >"$TMP/$name-echo.log" 2>&1 & ECHO=$!; pids+=("$ECHO")
  local echo_port; echo_port=$(wait_line "$TMP/$name-echo.log" "on port") || { cat "$TMP/$name-echo.log"; return 1; }
  "$LBSERVE" --host 127.0.0.1 --port 0 --backend "http://127.0.0.1:$echo_port" "$@" >"$TMP/$name-lb.log" 2>&1 & LB=$!; pids+=("$LB")
  LB_PORT=$(wait_line "$TMP/$name-lb.log" "Router running on port") || { cat "$TMP/$name-lb.log"; return 1; }
}
field() { "$PYTHON" -c "import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]])" "$1" "$2"; }

# 1. Idle keep-alive connections.
if start idle; then
  if timeout 150 "$PYTHON" "$ROOT/Scripts/mem_probe.py" idle --pid "$LB" --port "$LB_PORT" --conns "$IDLE_CONNS" \
       --hold "$HOLD" --after 5 --deadline 100 >"$TMP/idle.json" 2>"$TMP/idle.err"; then
    per=$(field "$TMP/idle.json" per_conn_bytes); open=$(field "$TMP/idle.json" conns_open)
    bad=$(( $(field "$TMP/idle.json" failed) + $(field "$TMP/idle.json" closed_by_server) ))
    before=$(field "$TMP/idle.json" rss_before_kib); during=$(field "$TMP/idle.json" rss_open_kib)
    after=$(field "$TMP/idle.json" rss_after_close_kib)
    echo "idle: $open connections open; VmRSS before $before KiB, open $during KiB, 5 s after closing $after KiB; $per bytes per connection"
    check "idle: every connection answered and stayed open ($bad failed or closed by the server)" "$([ "$bad" = 0 ] && [ "$open" = "$IDLE_CONNS" ] && echo 0 || echo 1)"
    check "idle: $per bytes RSS per idle keep-alive connection <= $IDLE_MAX_BYTES" "$([ "$per" -le "$IDLE_MAX_BYTES" ] && echo 0 || echo 1)"
    check "idle: RSS 5 s after closing ($after KiB) within ${IDLE_AFTER_RATIO}x before ($before KiB)" \
      "$(awk -v a="$after" -v b="$before" -v r="$IDLE_AFTER_RATIO" 'BEGIN { print (a <= b * r) ? 0 : 1 }')"
  else
    cat "$TMP/idle.err"; check "idle: probe ran" 1
  fi
  stop "$LB" "$ECHO"
else
  check "idle: lbserve started" 1
fi

# 2. Upload burst.
if start burst --max-body-bytes "$MAX_BODY"; then
  if timeout 150 "$PYTHON" "$ROOT/Scripts/mem_probe.py" burst --pid "$LB" --port "$LB_PORT" --count "$BURST" \
       --mib "$BURST_MIB" --after "$AFTER_S" --deadline 100 >"$TMP/burst.json" 2>"$TMP/burst.err"; then
    before=$(field "$TMP/burst.json" rss_before_kib); peak=$(field "$TMP/burst.json" rss_peak_sampled_kib)
    after=$(field "$TMP/burst.json" rss_after_kib); results=$(field "$TMP/burst.json" results)
    echo "burst: $BURST x $BURST_MIB MiB; VmRSS before $before KiB, peak $peak KiB, $AFTER_S s after $after KiB; answers $results"
    answered=$("$PYTHON" -c "import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])['results']; print(sum(v for k, v in r.items() if k.isdigit()))" "$TMP/burst.json")
    check "burst: every upload got an HTTP answer ($answered of $BURST)" "$([ "$answered" = "$BURST" ] && echo 0 || echo 1)"
    check "burst: RSS $AFTER_S s after ($after KiB) within ${BURST_MAX_RATIO}x before ($before KiB)" \
      "$(awk -v a="$after" -v b="$before" -v r="$BURST_MAX_RATIO" 'BEGIN { print (a <= b * r) ? 0 : 1 }')"
  else
    cat "$TMP/burst.err"; check "burst: probe ran" 1
  fi
  stop "$LB" "$ECHO"
else
  check "burst: lbserve started" 1
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
