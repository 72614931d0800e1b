#!/usr/bin/env bash
# stream-memory.sh: a 1 GiB download and a 1 GiB upload (Content-Length, then chunked) pass
# through release lbserve while its peak RSS (VmHWM) stays under LIMIT_MIB (default 64).
# Bounded: each transfer is wrapped in `timeout`; loopback only; stops only its own processes.
#   bash Scripts/stream-memory.sh            # BUILD=0 skips `swift build -c release`
# Ends with "N passed, N failed"; exit 1 on any failure.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LBSERVE="${LBSERVE:-$ROOT/.build/release/lbserve}"
ECHO_BIN="${ECHO_BIN:-$ROOT/.build/release/echo}"
SIZE="${SIZE:-1073741824}"
LIMIT_MIB="${LIMIT_MIB:-64}"
PYTHON="${PYTHON:-python3}"
[ "${BUILD:-1}" = 1 ] && (cd "$ROOT" && swift build -c release >/dev/null)
TMP="$(mktemp -d /tmp/lbkit-stream.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
passed=0; failed=0
check() { if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; fi; }

wait_line() { # FILE REGEX -> prints the first number after the match
  for _ in $(seq 1 200); do
    local n; n=$(grep -oE "$2 [0-9]+" "$1" 2>/dev/null | head -1 | awk '{print $NF}')
    [ -n "$n" ] && { echo "$n"; return 0; }
    sleep 0.05
  done
  return 1
}

"$ECHO_BIN" --port 0 --max-body-bytes $((SIZE * 2)) >"$TMP/echo.log" 2>&1 & pids+=($!)
echo_port=$(wait_line "$TMP/echo.log" "on port") || { echo "echo did not start"; cat "$TMP/echo.log"; exit 1; }
"$LBSERVE" --host 127.0.0.1 --port 0 --backend "http://127.0.0.1:$echo_port" --max-body-bytes $((SIZE * 2)) \
  --timeout-ms 10000 >"$TMP/lb.log" 2>&1 & lb=$!; pids+=($lb)
lb_port=$(wait_line "$TMP/lb.log" "Router running on port") || { echo "lbserve did not start"; cat "$TMP/lb.log"; exit 1; }
rss() { awk -v k="$1:" '$1 == k { print int($2 / 1024) }' "/proc/$lb/status"; }
echo "lbserve pid $lb on $lb_port, echo on $echo_port; RSS at start $(rss VmRSS) MiB"

# 1. Download.
got=$(timeout 120 curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$lb_port/_echo/bytes?n=$SIZE")
[ "$got" = "200 $SIZE" ]; check "1 GiB download through lbserve ($got)" $?

# 2. Upload with Content-Length, streamed from a generator (never held by the sender either).
up=$(timeout 180 "$PYTHON" - "$lb_port" "$SIZE" <<'PY'
import socket, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(f"POST /_echo/sink HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
block = b"u" * (1 << 20)
left = size
while left:
    n = min(left, len(block)); s.sendall(block[:n]); left -= n
data = b""
while b"}" not in data:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(data.split(b"\r\n")[0].decode(), data[data.find(b"{"):].decode())
PY
)
echo "$up" | grep -q "\"bytes\":$SIZE"; check "1 GiB upload with Content-Length ($up)" $?

# 3. Upload chunked (curl -T - streams stdin with Transfer-Encoding: chunked).
chunked=$(head -c "$SIZE" /dev/zero | timeout 180 curl -s -X POST -T - -H 'Expect:' "http://127.0.0.1:$lb_port/_echo/sink")
echo "$chunked" | grep -q "\"bytes\":$SIZE"; check "1 GiB chunked upload ($chunked)" $?

peak=$(rss VmHWM)
echo "lbserve peak RSS (VmHWM) $peak MiB, now $(rss VmRSS) MiB"
[ "$peak" -lt "$LIMIT_MIB" ]; check "peak RSS ${peak} MiB < ${LIMIT_MIB} MiB" $?
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
