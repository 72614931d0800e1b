#!/usr/bin/env bash
# Builds HummingbirdGateway, runs it in the background, checks the answers README.md shows, and
# stops it by PID (SIGINT: graceful). Every wait is bounded. Needs curl.
#   bash Examples/HummingbirdGateway/smoke-test.sh [scratch-path]
# A scratch path shared with Integrations/LBKitHummingbird reuses its already built packages.
set -euo pipefail
cd "$(dirname "$0")"
scratch="${1:-.build}"
port="${PORT:-18080}"
log="$(mktemp /tmp/hb-gateway.XXXXXX.log)"

swift build --scratch-path "$scratch" 2>&1 | tail -1
bin="$(swift build --scratch-path "$scratch" --show-bin-path)/HummingbirdGateway"
PORT="$port" "$bin" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  grep -q "listening on 127.0.0.1:$port" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "HummingbirdGateway exited early"; exit 1; }
  sleep 0.5
done
grep -q "listening on 127.0.0.1:$port" "$log" || { cat "$log"; echo "HummingbirdGateway did not start within 60 s"; exit 1; }

passed=0 failed=0
check() {   # name, command...
  local name="$1"; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}
c() { curl -s --max-time 5 "$@"; }
post() { c -XPOST "http://127.0.0.1:$port/api/x" -d '{"msg":"hi"}'; }

round_robin() {
  local seen
  seen="$(for _ in 1 2 3; do post; echo; done | sed -E 's/.*"handled_by":([0-9]+).*/\1/' | sort -u | tr '\n' ' ')"
  [ "$seen" = "5101 5102 5103 " ]
}
echoed() { post | grep -qE '^\{"msg":"hi","handled_by":510[123]\}$'; }
local_route() { [ "$(c "http://127.0.0.1:$port/hello")" = "hello from hummingbird" ]; }
health() { c "http://127.0.0.1:$port/healthz" | grep -q '"status":"ok"'; }
throttled() {
  sleep 1.5   # a full bucket again
  local codes="" code i headers
  headers="$(mktemp /tmp/hb-gateway-headers.XXXXXX)"
  for i in $(seq 30); do
    code="$(c -D "$headers" -o /dev/null -w '%{http_code}' -XPOST "http://127.0.0.1:$port/api/x" -d '{"msg":"hi"}')"
    codes+="$code "
    [ "$code" = 429 ] && break
  done
  echo "     burst: $codes"
  # The 429 itself carries Retry-After (read from that response: the next one may be allowed).
  [[ "$codes" == *429* ]] && grep -qiE '^Retry-After: [0-9]+' "$headers"
}
graceful_stop() {
  kill -INT "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$pid" 2>/dev/null && grep -q "balancer stopped" "$log"
}

check "round robin over 5101-5103" round_robin
check "POST echoed by a backend" echoed
check "Hummingbird route untouched" local_route
check "/healthz" health
check "429 with Retry-After after the burst" throttled
check "SIGINT: graceful stop within 10 s" graceful_stop
trap - EXIT
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
