#!/usr/bin/env bash
# readme-walkthrough.sh: the README is true. Runs the README's demo and walk-through command blocks,
# in the order the README shows them, taking each block's text from README.md itself, and checks the
# output the README shows next to them. A README edit that no longer runs, or shows output that no
# longer matches, fails here (a CI stage).
#
#   bash Scripts/readme-walkthrough.sh            # builds release lbserve and echo first (incremental)
#   BUILD=0 bash Scripts/readme-walkthrough.sh    # use .build/release/{lbserve,echo} as they are
#   BIN=.build/debug BUILD=0 bash Scripts/readme-walkthrough.sh
#
# How a block runs:
#   ```sh blocks     Found by their first line, each after the previous one (so the order is the
#                    README's). Every command runs as written in one shell, `swift run NAME ARGS` being
#                    $BIN/NAME ARGS (what `swift run` execs after building). Background processes and
#                    their output stay in the block's log, like a terminal. Foreground lbserve/echo
#                    commands run in the background (the README reads them as "in its own terminal").
#                    Between commands the script waits (bounded) for what a reader would wait for:
#                    echo's ports, lbserve's "Router running" line, a killed process to exit, and a
#                    line named in a trailing comment (`# lbserve: TEXT`, `# each: TEXT`: TEXT up to
#                    "..." or "(...)" must appear in the log, once per lbserve started for `each`).
#   `$ cmd` blocks   transcripts: each command runs, its output must equal the lines shown under it
#                    (trailing blank lines and CR ignored).
#   plain blocks     log lines the README shows: each must appear in the block's log (bounded wait),
#                    comparing after the leading RFC 3339 time and the figure of `latency N ms`.
#   ```json          the /_lb/stats excerpt: every key shown must be in the real document.
# Each section starts from nothing and stops its processes by PID at its end. `swift test` lines are
# not run here (the `test` CI stage runs them).
#
# Ports: the README's own, fixed: 127.0.0.1 ports 8000 8001 8002 5001 5002 5003 6379 9901 must be
# free (checked first; the script exits 1 naming the busy ones). Redis blocks are skipped (SKIP line)
# when redis-server is not installed. Every curl is bounded by a --max-time from a private .curlrc.
# Output: one PASS/FAIL/SKIP line per check; the last line is "N passed, N failed"; exit 1 if any
# failed. Bounded: every wait has a limit; MAX_WALL (default 240 s) bounds the whole run.
set -uo pipefail
SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPTS/.." && pwd)"
README="${README:-$ROOT/README.md}"
BIN="${BIN:-$ROOT/.build/release}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
BUILD="${BUILD:-1}"
MAX_WALL="${MAX_WALL:-240}"
KEEP_TMP="${KEEP_TMP:-0}"
PORTS=(8000 8001 8002 5001 5002 5003 6379 9901)
START=$(date +%s)

TMP="$(mktemp -d /tmp/lbkit-readme.XXXXXX)"
passed=0; failed=0
PIDS=()
LOG=/dev/null
SECTION=""

say() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); say "PASS $SECTION: $*"; }
fail() { failed=$((failed + 1)); say "FAIL $SECTION: $*"; }
skip() { say "SKIP $SECTION: $*"; }
die() { say "ERROR: $*"; failed=$((failed + 1)); finish; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
deadline_passed() { (( $(date +%s) - START > MAX_WALL )); }

stop_all() {  # newest first, by PID: TERM, up to 5 s, then KILL
  local i pid n
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null
    for ((n = 0; n < 50; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  PIDS=()
  local p
  for p in "${PORTS[@]}"; do
    for ((n = 0; n < 50; n++)); do port_open "$p" || break; sleep 0.1; done
  done
}

finish() {
  stop_all
  if [ "$KEEP_TMP" = 1 ] || [ "$failed" -gt 0 ]; then say "logs kept in $TMP"; else rm -rf "$TMP"; fi
  say "$passed passed, $failed failed"
  [ "$failed" -eq 0 ] && exit 0
  exit 1
}
trap 'say "interrupted"; failed=$((failed + 1)); finish' INT TERM

# ------------------------------------------------------------------ set-up
if [ "$BUILD" = 1 ]; then
  export PATH="/opt/swift/usr/bin:$PATH"
  (cd "$ROOT" && command swift build -c release --product lbserve >/dev/null && command swift build -c release --product echo >/dev/null) \
    || die "swift build -c release failed"
fi
[ -x "$BIN/lbserve" ] && [ -x "$BIN/echo" ] || die "no $BIN/lbserve or $BIN/echo (build first, or set BIN)"
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed"
busy=()
for p in "${PORTS[@]}"; do port_open "$p" && busy+=("$p"); done
[ ${#busy[@]} -eq 0 ] || die "127.0.0.1 ports in use (the README's walk-throughs need them): ${busy[*]}"

export CURL_HOME="$TMP/curlhome"
mkdir -p "$CURL_HOME" "$TMP/work"
printf 'max-time = 30\nconnect-timeout = 5\n' > "$CURL_HOME/.curlrc"
cd "$TMP/work" || die "cannot enter $TMP/work"

# `swift run NAME ARGS...` as the README writes it: exec the built product (as `swift run` does).
swift() {
  if [ "${1:-}" = run ] && [ -n "${2:-}" ]; then
    local name=$2; shift 2
    exec "$BIN/$name" "$@"
  fi
  echo "readme-walkthrough: only 'swift run NAME' is run here, not: swift $*" >&2
  return 1
}

# The README's fenced blocks, numbered in order: $TMP/blocks/N.txt, and an index "N<TAB>lang<TAB>first line".
python3 - "$README" "$TMP/blocks" <<'PY' || die "cannot read $README"
import os, sys
readme, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
lines = open(readme, encoding="utf-8").read().split("\n")
index, n, i = [], 0, 0
while i < len(lines):
    if lines[i].startswith("```"):
        lang = lines[i][3:].strip() or "text"
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i]); i += 1
        with open(os.path.join(out, f"{n}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(body) + "\n")
        index.append(f"{n}\t{lang}\t{body[0] if body else ''}")
        n += 1
    i += 1
open(os.path.join(out, "index"), "w", encoding="utf-8").write("\n".join(index) + "\n")
PY
true & wait   # so that $! is set from here on (set -u)
CURSOR=-1   # the last block used: the next one is looked up after it

# find_block LANG FIRST_LINE_PREFIX -> sets BLOCK (file) and moves the cursor; fails if absent
find_block() {
  local lang=$1 prefix=$2 n l first
  while IFS=$'\t' read -r n l first; do
    (( n > CURSOR )) || continue
    [ "$l" = "$lang" ] || continue
    if [[ "$first" == "$prefix"* ]]; then CURSOR=$n; BLOCK="$TMP/blocks/$n.txt"; return 0; fi
  done < "$TMP/blocks/index"
  fail "README has no \`\`\`$lang block starting with '$prefix' after block $CURSOR (order or text changed)"
  return 1
}

section() {
  stop_all
  deadline_passed && { fail "MAX_WALL ${MAX_WALL}s reached before this section"; finish; }
  SECTION="$1"
  routers=0
  LOG="$TMP/$(printf '%s' "$1" | tr -c 'A-Za-z0-9' '-').log"
  : > "$LOG"
  say "== $1"
}

# normalise: drop CR, the leading RFC 3339 time of log lines, and latency figures
# (anywhere in a line: a curl answer without a final newline runs into the next log line, as in a terminal)
norm() { sed -E 's/\r$//; s/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z /<time> /g; s/latency [0-9.]+ ms/latency N ms/g'; }

wait_for() {  # SECONDS CONDITION...: poll every 0.1 s
  local limit=$1 i; shift
  for ((i = 0; i < limit * 10; i++)); do "$@" && return 0; sleep 0.1; done
  "$@"
}
count_in_log() { norm < "$LOG" | grep -cF -- "$1"; }
log_has_count() { [ "$(count_in_log "$1")" -ge "$2" ]; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# step COMMAND: run one command of a ```sh block in this shell, output to the section log, then wait
# for what it started (see the header).
routers=0
step() {
  local cmd=$1 code=${1%%#*} before_pid=$! p comment text times=1
  [[ "$code" =~ ^[[:space:]]*$ && "$cmd" != *"# each: "* && "$cmd" != *"lbserve: "* ]] && return 0
  if [[ "$code" =~ ^[[:space:]]*swift\ test ]]; then skip "'swift test' runs in the test stage, not here"; return 0; fi
  # A foreground server in the README has a terminal of its own: here it runs in the background.
  if [[ "$code" =~ swift\ run\ (lbserve|echo) ]] && ! [[ "$code" =~ \&[[:space:]]*([A-Z0-9_]+=\$!)?[[:space:]]*$ ]]; then
    cmd="${code%"${code##*[![:space:]]}"} &"
  fi
  local routers_before; routers_before=$(grep -c "Router running on port" "$LOG")
  eval "$cmd" >>"$LOG" 2>&1
  if [ -n "${!:-}" ] && [ "${!}" != "$before_pid" ]; then PIDS+=("$!"); fi
  if [[ "$code" =~ swift\ run\ echo ]]; then
    for p in $(grep -oE -- '--port [0-9]+' <<<"$code" | awk '{print $2}'); do
      wait_for 20 port_open "$p" || fail "echo did not listen on $p: $(tail -3 "$LOG")"
    done
  fi
  if [[ "$code" =~ swift\ run\ lbserve ]]; then
    routers=$((routers + 1))
    wait_for 20 log_has_count "Router running on port" $((routers_before + 1)) \
      || fail "lbserve did not print 'Router running on port' for: ${code%% \\*}: $(tail -3 "$LOG")"
  fi
  if [[ "$code" =~ redis-server\ --port\ ([0-9]+) ]]; then
    wait_for 10 port_open "${BASH_REMATCH[1]}" || fail "redis-server did not listen"
  fi
  if [[ "$code" =~ ^[[:space:]]*kill\ \$([A-Z0-9_]+) ]]; then
    local var=${BASH_REMATCH[1]}
    wait_for 10 pid_gone "${!var}" || fail "kill \$$var: process ${!var} still running"
  fi
  # A trailing comment naming what lbserve logs: wait for it.
  comment=""
  [[ "$cmd" == *"# "* ]] && comment=${cmd#*# }
  if [[ "$comment" == *"lbserve: "* ]]; then text=${comment#*lbserve: }
  elif [[ "$comment" == "each: "* ]]; then text=${comment#each: }; times=$routers
  else return 0; fi
  text=${text%%...*}; text=${text%% (...)*}; text=${text%(}
  text="${text%"${text##*[![:space:]]}"}"
  if wait_for 20 log_has_count "$text" "$times"; then pass "logged '$text'$( ((times > 1)) && echo " x$times")"
  else fail "expected in the log ($times x): '$text'; log tail: $(tail -3 "$LOG" | tr '\n' '|')"; fi
}

# sh_block FIRST_LINE: run the README's next ```sh block starting with FIRST_LINE, command by command
# (a command continues over lines ending in '\' and over a here-document).
sh_block() {
  find_block sh "$1" || return 1
  local line cmd="" heredoc=""
  while IFS= read -r line || [ -n "$line" ]; do
    if [ -n "$heredoc" ]; then
      cmd+=$'\n'"$line"
      [ "$line" = "$heredoc" ] && { step "$cmd"; cmd=""; heredoc=""; }
      continue
    fi
    if [ -n "$cmd" ]; then cmd+=$'\n'"$line"; else cmd=$line; fi
    if [[ "$line" =~ \<\<\'?([A-Z]+)\'?$ ]]; then heredoc=${BASH_REMATCH[1]}; continue; fi
    [[ "$line" == *\\ ]] && continue
    step "$cmd"; cmd=""
  done < "$BLOCK"
  [ -z "$cmd" ] || step "$cmd"
  pass "ran the sh block '$1'"
}

# transcript FIRST_COMMAND: the README's next ```sh block of `$ command` lines and their output.
transcript() {
  find_block sh "\$ $1" || return 1
  local line cmd="" expected="" n=0
  run_one() {
    [ -n "$cmd" ] || return 0
    local actual want
    actual=$(eval "$cmd" 2>>"$LOG" | tr -d '\r' | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}')
    want=$(printf '%s' "$expected" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}')
    if [ "$actual" = "$want" ]; then pass "\$ ${cmd:0:90}"
    else fail "\$ $cmd"$'\n'"  README shows:"$'\n'"$(sed 's/^/    /' <<<"$want")"$'\n'"  got:"$'\n'"$(sed 's/^/    /' <<<"$actual")"; fi
    n=$((n + 1))
  }
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ "$line" == '$ '* ]]; then run_one; cmd=${line#\$ }; expected=""; continue; fi
    if [ -z "$expected" ]; then expected=$line; else expected+=$'\n'"$line"; fi
  done < "$BLOCK"
  run_one
}

# log_block FIRST_LINE_SUBSTRING: the README's next plain block; each of its lines must appear in the log.
log_block() {
  local lang=text n l first
  while IFS=$'\t' read -r n l first; do
    (( n > CURSOR )) && [ "$l" = "$lang" ] || continue
    [[ "$first" == *"$1"* ]] || { fail "README's next plain block after block $CURSOR does not contain '$1'"; return 1; }
    CURSOR=$n; break
  done < "$TMP/blocks/index"
  local want
  while IFS= read -r want || [ -n "$want" ]; do
    [ -n "$want" ] || continue
    want=$(norm <<<"$want")
    if wait_for 20 log_has_count "$want" 1; then pass "log: ${want:0:110}"
    else fail "log line shown in the README never came: '$want'; log tail:"$'\n'"$(tail -5 "$LOG")"; fi
  done < "$TMP/blocks/$CURSOR.txt"
}

# ------------------------------------------------------------------ the README, in order
section "Set-up: the demo"
sh_block "swift run lbserve"
LBPID=${PIDS[-1]:-}
log_block "Backend running on port 5001"
transcript "curl -X POST localhost:8000 -d"
kill -INT "$LBPID" 2>/dev/null
if wait_for 15 pid_gone "$LBPID"; then
  wait "$LBPID"; status=$?
  [ "$status" -eq 0 ] && pass "Ctrl-C (SIGINT) stops lbserve with exit status 0" || fail "lbserve exited $status on SIGINT"
else fail "lbserve still running 15 s after SIGINT"; fi

section "Your own backends"
sh_block "swift run echo --port 5001 --port 5002 --port 5003 &"
got=$(for i in 1 2 3; do curl -s -X POST localhost:8000 -d '{"msg":"demo"}'; echo; done | tr -d '\r')
[ "$got" = $'{"msg":"demo","handled_by":5001}\n{"msg":"demo","handled_by":5002}\n{"msg":"demo","handled_by":5003}' ] \
  && pass "strict rotation over the three echo ports" || fail "rotation: $got"

section "A bad flag"
find_block sh "\$ swift run lbserve --backend ftp://x" && {
  want=$(sed -n 2p "$BLOCK")
  got=$( (swift run lbserve --backend ftp://x) 2>&1); status=$?
  [ "$got" = "$want" ] && pass "one line naming the flag: $got" || fail "README shows '$want', got '$got'"
  [ "$status" -eq 2 ] && pass "exit status 2" || fail "exit status $status, expected 2"
}

section "When a backend fails"
sh_block "swift run echo --port 5001 --port 5002 &"
transcript "for i in \$(seq 6); do curl -s -X POST localhost:8000"
log_block "as UNHEALTHY (3 failed checks: refused)"
sh_block "swift run echo --port 5003 &"
log_block "as HEALTHY (2 successful checks)"

section "When a backend gets slow"
sh_block "swift run echo --port 5001 --port 5002 --port 5003 &"
transcript "for i in \$(seq 6); do curl -s -o /dev/null"
log_block "as SLOW (latency"
sh_block "curl -X POST 'localhost:5002/_echo/delay?ms=0'"
log_block "as PROBING (2 successful checks"
transcript "for i in \$(seq 6); do curl -s -o /dev/null"
log_block "as HEALTHY (2 consecutive trial requests"

section "Throttling"
sh_block "swift run lbserve --rate-limit 30/minute --burst 10 &"
transcript "for i in \$(seq 12); do curl -s -o /dev/null"
headers=$(curl -s -i localhost:8000/ | tr -d '\r')
[[ "$headers" == *$'\nRetry-After: 2\n'* && "$headers" == *$'\nRateLimit-Limit: 10\n'* && "$headers" == "HTTP/1.1 429"* ]] \
  && pass "the 429 carries Retry-After: 2 and RateLimit-Limit: 10" || fail "429 headers: $(head -6 <<<"$headers" | tr '\n' '|')"

section "Several instances, one limit (Redis)"
if command -v redis-server >/dev/null; then
  sh_block "redis-server --port 6379"
  grep -qF '"throttle_store":{"kind":"redis","state":"connected"' "$LOG" \
    && pass "/_lb/stats shows the store connected" || fail "/_lb/stats has no connected redis store: $(grep -o '"throttle_store":{[^}]*}' "$LOG" | head -1)"
else
  find_block sh "redis-server --port 6379" && skip "redis-server is not installed"
fi

section "Streaming and WebSocket"
step "swift run lbserve &"   # "with the demo backends"
transcript "curl -s 'localhost:8000/_echo/stream?chunks=3&interval_ms=200'"

section "Config file and live reload"
sh_block "swift run echo --port 5001 --port 5002 --port 5003 &"
log_block "warning: backend weights have no effect under strategy round-robin"
sh_block "cat > lb.json <<'JSON'"
log_block "reloaded: 2 backends; added http://127.0.0.1:5003"

section "Admin surface"
sh_block "swift run lbserve --admin-allow 127.0.0.1/32 --admin-allow 10.0.0.0/8 --admin-listen"
transcript "curl 127.0.0.1:9901/_lb/health"

section "Backend-reported load"
sh_block "swift run echo --port 5001 --port 5002 &"

section "Drain a backend (demo lbserve)"
step "swift run lbserve &"
transcript "curl -X POST 'localhost:8000/_lb/backends/drain?url=http://127.0.0.1:5002'"

section "Stats (demo lbserve)"
step "swift run lbserve &"
curl -s -X POST localhost:8000 -d '{"msg":"demo"}' >/dev/null
find_block sh "curl -s localhost:8000/_lb/stats | python3 -m json.tool" && {
  eval "$(head -1 "$BLOCK")" > "$TMP/stats.json" 2>>"$LOG"
  find_block json "{" && {
    missing=$(python3 - "$BLOCK" "$TMP/stats.json" <<'PY'
import json, re, sys
excerpt = open(sys.argv[1], encoding="utf-8").read()
real = json.load(open(sys.argv[2], encoding="utf-8"))
keys = set()
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items(): keys.add(k); walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
walk(real)
shown = set(re.findall(r'"([a-z0-9_]+)":', excerpt))
print(" ".join(sorted(shown - keys)))
PY
)
    [ $? -eq 0 ] && [ -z "$missing" ] && pass "every key of the stats excerpt is in /_lb/stats (pretty-printed by json.tool)" \
      || fail "keys shown in the README but not in /_lb/stats: ${missing:-json.tool failed}"
  }
}

section "done"
finish
