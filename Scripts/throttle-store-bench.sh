#!/usr/bin/env bash
# throttle-store-bench.sh: throughput of release lbserve with the shared Redis throttle store
# against the local table only, same machine, same run. Loopback only; every server is started
# here and stopped by its own PID / process group; every wrk run is bounded by -d and timeout.
#
#   bash Scripts/throttle-store-bench.sh           # BUILD=0 to skip `swift build -c release`
#
# Targets (both: --rate-limit 1000000000 --burst 1000000, so nothing is refused and every request
# pays the full throttle path, one client IP = one hot key, the worst case for the store's locks):
#   local   lbserve with the per-instance table only
#   redis   the same plus --throttle-store redis://127.0.0.1:$REDIS_PORT (synchronising every 20 ms)
# Load: wrk -t1 -c$CONNS -d${DURATION}s POST, ROUNDS interleaved rounds (local redis local redis ...).
# Besides req/s, each round records the CPU time (utime + stime, all threads) the target lbserve
# (and, for the redis target, redis-server) spent per completed request: steadier than req/s
# when other work shares the cores.
# Refuses to measure (prints "not measured", exits 0) when the 1-minute load average is above
# LOAD_MAX (1.5): on shared cores the comparison would mean nothing. FORCE=1 measures anyway.
set -Eeuo pipefail
SCENARIO=throttle-store
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION="${DURATION:-8}"; CONNS="${CONNS:-64}"; ROUNDS="${ROUNDS:-3}"
LOAD_MAX="${LOAD_MAX:-1.5}"; FORCE="${FORCE:-0}"
BASE_PORT="${BASE_PORT:-18300}"
ECHO_PORTS=($((BASE_PORT + 1)) $((BASE_PORT + 2)) $((BASE_PORT + 3)))
LOCAL_PORT=$((BASE_PORT + 10)); REDIS_LB_PORT=$((BASE_PORT + 11)); REDIS_PORT=$((BASE_PORT + 20))

load_now() { cut -d' ' -f1 /proc/loadavg; }
too_busy() { awk -v l="$(load_now)" -v m="$LOAD_MAX" 'BEGIN { exit !(l > m) }'; }
if [[ $FORCE != 1 ]] && too_busy; then
  echo "throttle-store: not measured: 1-minute load average $(load_now) > $LOAD_MAX (FORCE=1 to measure anyway)"
  exit 0
fi
command -v redis-server >/dev/null || die "redis-server not installed (apt-get install redis-server)"
command -v wrk >/dev/null || die "wrk not installed (apt-get install wrk)"
need_ports_free "${ECHO_PORTS[@]}" "$LOCAL_PORT" "$REDIS_LB_PORT" "$REDIS_PORT"
if [[ $BUILD == 1 ]]; then (cd "$ROOT" && timeout 1500 swift build -c release >&2); fi
start_watchdog

start_server redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no
wait_port redis "$REDIS_PORT" 10
REDIS_PID=$LAST_PID
start_server echo "$ECHO_BIN" --host 127.0.0.1 --port "${ECHO_PORTS[0]}" --port "${ECHO_PORTS[1]}" --port "${ECHO_PORTS[2]}"
wait_port echo "${ECHO_PORTS[2]}" 10
common=(--host 127.0.0.1 --health-interval-ms 0 --rate-limit 1000000000 --burst 1000000 --penalty-threshold 0
        --backend "http://127.0.0.1:${ECHO_PORTS[0]}" --backend "http://127.0.0.1:${ECHO_PORTS[1]}" --backend "http://127.0.0.1:${ECHO_PORTS[2]}")
start_server local "$LBSERVE" --port "$LOCAL_PORT" "${common[@]}"
wait_port local "$LOCAL_PORT" 10
LOCAL_PID=$LAST_PID
start_server redis-lb "$LBSERVE" --port "$REDIS_LB_PORT" "${common[@]}" --throttle-store "redis://127.0.0.1:$REDIS_PORT"
wait_port redis-lb "$REDIS_LB_PORT" 10
REDIS_LB_PID=$LAST_PID
HZ=$(getconf CLK_TCK)
# cpu_ticks PID: utime + stime of the process (all its threads).
cpu_ticks() { local l; l=$(cat "/proc/$1/stat"); set -- ${l##*) }; echo $(( ${12} + ${13} )); }

cat >"$TMP/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"msg":"demo"}'
wrk.headers["Content-Type"] = "application/json"
LUA
declare -A RPS CPU
REDIS_CPU=""
for ((r = 1; r <= ROUNDS; r++)); do
  for target in local redis; do
    port=$LOCAL_PORT; pid=$LOCAL_PID
    [[ $target == redis ]] && { port=$REDIS_LB_PORT; pid=$REDIS_LB_PID; }
    c0=$(cpu_ticks "$pid"); k0=$(cpu_ticks "$REDIS_PID")
    out=$(timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s -s "$TMP/post.lua" "http://127.0.0.1:$port/")
    c1=$(cpu_ticks "$pid"); k1=$(cpu_ticks "$REDIS_PID")
    rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
    n=$(awk '/requests in/ { print $1 }' <<<"$out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out"); non2xx=${non2xx:-0}
    us=$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.2f", c / hz * 1e6 / n }')
    RPS[$target]+="$rps "; CPU[$target]+="$us "
    extra=""
    if [[ $target == redis ]]; then
      rus=$(awk -v c=$((k1 - k0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.3f", c / hz * 1e6 / n }')
      REDIS_CPU+="$rus "; extra=", redis-server $rus us CPU/request"
    fi
    log "round $r $target: $rps req/s, lbserve $us us CPU/request$extra (non-2xx: $non2xx, load average $(load_now))"
  done
done
stats=$(curl -s "http://127.0.0.1:$REDIS_LB_PORT/_lb/stats" | sed -n 's/.*"throttle_store":\({[^}]*}\).*/\1/p')
keys=$(redis-cli -p "$REDIS_PORT" DBSIZE 2>/dev/null || echo "?")
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ml=$(median "${RPS[local]}"); mr=$(median "${RPS[redis]}")
echo "local table only: ${RPS[local]}req/s (median $ml)"
echo "redis store:      ${RPS[redis]}req/s (median $mr)"
echo "redis store stats: $stats; keys in redis: $keys"
awk -v a="$mr" -v b="$ml" 'BEGIN { printf "ratio redis/local = %.3f (%.1f%% lower)\n", a / b, (1 - a / b) * 100 }'
cl=$(median "${CPU[local]}"); cr=$(median "${CPU[redis]}"); ck=$(median "$REDIS_CPU")
echo "lbserve CPU per request: local ${CPU[local]}(median $cl us), redis ${CPU[redis]}(median $cr us); redis-server: $REDIS_CPU(median $ck us)"
awk -v a="$cr" -v b="$cl" 'BEGIN { printf "CPU ratio redis/local = %.3f: at equal CPU, the redis store gives %.1f%% fewer req/s\n", a / b, (1 - b / a) * 100 }'
