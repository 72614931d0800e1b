#!/usr/bin/env bash
# Builds VaporGateway, runs it in the background, checks the answers README.md shows, and stops it
# by PID (SIGTERM: graceful). Every wait is bounded. Needs curl.
#   bash Examples/VaporGateway/smoke-test.sh [scratch-path]
# A scratch path shared with Integrations/LBKitVapor (../../Integrations/LBKitVapor/.build)
# reuses that package's already built Vapor.
set -euo pipefail
cd "$(dirname "$0")"
scratch="${1:-.build}"
log="$(mktemp /tmp/vapor-gateway.XXXXXX.log)"

swift build --scratch-path "$scratch" 2>&1 | tail -1
bin="$(swift build --scratch-path "$scratch" --show-bin-path)/VaporGateway"
"$bin" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  grep -q "Server started on http://127.0.0.1:8081" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "VaporGateway exited early"; exit 1; }
  sleep 0.5
done
grep -q "Server started on http://127.0.0.1:8081" "$log" || { cat "$log"; echo "VaporGateway did not start within 60 s"; exit 1; }

passed=0 failed=0
check() {   # name, command...
  local name="$1"; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}
c() { curl -s --max-time 5 "$@"; }

round_robin() {
  local seen
  seen="$(for _ in 1 2 3; do c http://127.0.0.1:8081/api/items; echo; done | sed -E 's/.*"handled_by":([0-9]+).*/\1/' | sort -u | tr '\n' ' ')"
  [ "$seen" = "5201 5202 5203 " ]
}
backend_header() { c -i http://127.0.0.1:8081/api/hello | grep -qiE '^X-Backend: http://127\.0\.0\.1:520[123]'; }
post_echo() {
  c -X POST -H 'Content-Type: application/json' -d '{"msg":"demo"}' http://127.0.0.1:8081/api/echo \
    | grep -qE '^\{"msg":"demo","handled_by":520[123]\}$'
}
vapor_route() { [ "$(c http://127.0.0.1:8081/hello)" = "hello from vapor" ]; }
health() { [ "$(c http://127.0.0.1:8081/_lb/health)" = '{"status":"ok","backends":3,"eligible":3,"states":{"healthy":3,"warming":0,"probing":0,"slow":0,"ejected":0,"down":0,"draining":0,"overloaded":0},"not_healthy":[]}' ]; }
throttled() {
  sleep 2.5   # a full bucket again
  local codes="" code i headers
  headers="$(mktemp /tmp/vapor-gateway-headers.XXXXXX)"
  for i in $(seq 60); do   # until the first 429 (a token comes back every 200 ms)
    code="$(c -D "$headers" -o /dev/null -w '%{http_code}' http://127.0.0.1:8081/api/burst)"
    codes+="$code "
    [ "$code" = 429 ] && break
  done
  echo "     burst: $codes"
  # The 429 itself carries Retry-After (read from that response: the next one may be allowed).
  [[ "$codes" == "200 200 200 200 200 200 200 200 200 200 "* ]] && [[ "$codes" == *429* ]] \
    && grep -qiE '^Retry-After: [0-9]+' "$headers"
}
graceful_stop() {
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$pid" 2>/dev/null && grep -q "balancer stopped" "$log"
}

check "round robin over 5201-5203" round_robin
check "X-Backend exposed" backend_header
check "POST echoed by a backend" post_echo
check "Vapor route untouched" vapor_route
check "/_lb/health" health
check "429 with Retry-After after the burst" throttled
check "SIGTERM: graceful stop within 10 s" graceful_stop
trap - EXIT
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
