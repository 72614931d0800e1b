#!/usr/bin/env bash
# fuzz.sh: builds the libFuzzer targets in Fuzz/ and runs each one for a time budget.
#
#   bash Scripts/fuzz.sh            # 20 s per target
#   bash Scripts/fuzz.sh 300        # 5 min per target
#   TARGETS="chunked" bash Scripts/fuzz.sh 60
#
# Targets (Fuzz/Targets/*.swift, seeds in Fuzz/corpus/<target>/, see Fuzz/README.md):
#   request_head   HTTPRequestHeadParser as HTTPServerConnection drives it (+ body framing)
#   response_head  HTTPResponseHeadParser as HTTPClient drives it (1xx, keep-alive, bodies)
#   chunked        ChunkedDecoder
#   resp           RESPParser (the Redis client's reply parser)
# Each one checks invariants (split/resume independence, a reference model, serialize-then-parse
# round trips), not only crashes.
#
# Each target is one `swiftc -sanitize=fuzzer,address -parse-as-library` module made of the LBKitHTTP
# parser sources listed below, Fuzz/Support/*.swift and its Fuzz/Targets file (no SwiftPM, no
# LBKitPolicy: the parser files do not import it). Binaries go to $BUILD_DIR (default .build-fuzz/,
# git-ignored) and are rebuilt only when a source is newer. Every run starts from a fresh copy of the
# seed corpus in $BUILD_DIR/run/<target>/corpus (the repository corpus is never written); crash
# inputs land in $BUILD_DIR/run/<target>/artifacts/ and the full log in $BUILD_DIR/run/<target>/fuzz.log.
#
# Prints per target: executions, exec/s, corpus size, coverage and whether it found anything; ends
# with the line `N passed, N failed` and exits non-zero if any target crashed, violated an
# invariant, timed out or did not build. Non-interactive (stdin unused), fit for CI (CI=true, 2 cores:
# one fuzzer process at a time).
#
# Knobs: TARGETS [request_head response_head chunked resp], BUILD_DIR [.build-fuzz], MAX_LEN [8192],
#        UNIT_TIMEOUT [10] (seconds per input), RSS_LIMIT_MB [2048], OPT [-O], FUZZ_ARGS (extra
#        libFuzzer flags, e.g. "-seed=1"), LBKIT_FUZZ_TINY_LIMITS [unset] (see Fuzz/README.md).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECONDS_PER_TARGET="${1:-20}"
[[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] && ((SECONDS_PER_TARGET > 0)) \
  || { echo "usage: $0 [seconds-per-target]   (got '$SECONDS_PER_TARGET')" >&2; exit 2; }
TARGETS="${TARGETS:-request_head response_head chunked resp}"
BUILD_DIR="${BUILD_DIR:-$ROOT/.build-fuzz}"
MAX_LEN="${MAX_LEN:-8192}"
UNIT_TIMEOUT="${UNIT_TIMEOUT:-10}"
RSS_LIMIT_MB="${RSS_LIMIT_MB:-2048}"
OPT="${OPT:--O}"
FUZZ_ARGS="${FUZZ_ARGS:-}"

log() { printf '[fuzz %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if ! command -v swiftc >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swiftc ]; then export PATH="/opt/swift/usr/bin:$PATH"; else echo "swiftc not found" >&2; exit 1; fi
fi
TOOLCHAIN_BIN="$(dirname "$(command -v swiftc)")"

# The LBKitHTTP files the targets compile (the parsers and what they use; nothing with I/O).
HTTP_SOURCES=(
  Sources/LBKitHTTP/HTTP/HTTPRequestHeadParser.swift
  Sources/LBKitHTTP/HTTP/HTTP1Scan.swift
  Sources/LBKitHTTP/HTTP/HTTPResponseHeadParser.swift
  Sources/LBKitHTTP/HTTP/ChunkedDecoder.swift
  Sources/LBKitHTTP/HTTP/HTTPParseError.swift
  Sources/LBKitHTTP/HTTP/HTTPTypes.swift
  Sources/LBKitHTTP/HTTP/HeaderFields.swift
  Sources/LBKitHTTP/HTTP/HeaderFields+Bytes.swift
  Sources/LBKitHTTP/HTTP/HeaderFieldsStorage.swift
  Sources/LBKitHTTP/HTTP/HTTPSerializer.swift
  Sources/LBKitHTTP/HTTP/InboundBuffer+HTTP.swift
  Sources/LBKitHTTP/HTTP/HTTP1Syntax.swift
  Sources/LBKitHTTP/IO/InboundBuffer.swift
  Sources/LBKitPolicy/Throttling/ClientAddress.swift
)
# The resp target: only the buffer and the RESP files (with its own copy of the generic helpers).
RESP_SOURCES=(
  Sources/LBKitHTTP/IO/InboundBuffer.swift
  Sources/LBKitHTTP/Redis/RESPParser.swift
  Sources/LBKitHTTP/Redis/RESPValue.swift
  Sources/LBKitHTTP/Redis/RESPEncoder.swift
)
SUPPORT_SOURCES=(Fuzz/Common/FuzzCommon.swift Fuzz/Support/FuzzSupport.swift Fuzz/Support/Reference.swift)

entry_file() {
  case $1 in
    request_head) echo Fuzz/Targets/RequestHeadFuzz.swift ;;
    response_head) echo Fuzz/Targets/ResponseHeadFuzz.swift ;;
    chunked) echo Fuzz/Targets/ChunkedFuzz.swift ;;
    resp) echo Fuzz/Targets/RESPFuzz.swift ;;
    *) return 1 ;;
  esac
}

for t in $TARGETS; do
  entry_file "$t" >/dev/null || { echo "unknown target '$t' (known: request_head response_head chunked resp)" >&2; exit 2; }
done

mkdir -p "$BUILD_DIR"
log "swiftc: $(swiftc --version 2>&1 | head -n 1)"

# ------------------------------------------------------------------ build
build() {
  local t=$1 out="$BUILD_DIR/$1" entry
  entry="$(entry_file "$t")"
  # One module: the LBKitPolicy file the parser uses (ClientAddress, for Host validation) is
  # compiled in, so its `import LBKitPolicy` lines are dropped from copies of the sources.
  local staged="$BUILD_DIR/src-$t" f
  rm -rf "$staged"; mkdir -p "$staged"
  local http=()
  for f in "${HTTP_SOURCES[@]}"; do
    sed -E '/^(@_exported |internal |public )?import LBKitPolicy$/d' "$f" >"$staged/$(basename "$f")"
    http+=("$staged/$(basename "$f")")
  done
  local sources=("${http[@]}" "${SUPPORT_SOURCES[@]}" "$entry")
  [ "$t" = resp ] && sources=("${RESP_SOURCES[@]}" Fuzz/Common/FuzzCommon.swift "$entry")
  local newer=0 f
  if [ -x "$out" ] && [ "$out.flags" -nt "$0" ] && [ "$(cat "$out.flags")" = "$OPT" ]; then
    for f in "${HTTP_SOURCES[@]}" "${SUPPORT_SOURCES[@]}" "$entry"; do [ "$f" -nt "$out" ] && newer=1; done
    ((newer == 0)) && { log "$t: up to date"; return 0; }
  fi
  log "$t: building ($OPT)"
  # -use-ld=lld: gold prints hundreds of harmless "cannot export local symbol __asan_*" warnings.
  local ld=()
  [ -x "$TOOLCHAIN_BIN/ld.lld" ] && ld=(-use-ld=lld)
  swiftc -sanitize=fuzzer,address -parse-as-library -swift-version 6 -module-name LBKitHTTPFuzz -package-name LBKit \
    $OPT -g "${ld[@]}" "${sources[@]}" -o "$out.tmp" >"$BUILD_DIR/$t.build.log" 2>&1 \
    || { cat "$BUILD_DIR/$t.build.log" >&2; rm -f "$out.tmp"; return 1; }
  mv "$out.tmp" "$out"
  echo "$OPT" >"$out.flags"
}

# ------------------------------------------------------------------ run
export SWIFT_BACKTRACE=enable=no   # the Swift crash handler trips ASan; libFuzzer prints the stack
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:symbolize=1}"
[ -x "$TOOLCHAIN_BIN/llvm-symbolizer" ] && export ASAN_SYMBOLIZER_PATH="$TOOLCHAIN_BIN/llvm-symbolizer"

passed=0; failed=0
SUMMARY=()
for t in $TARGETS; do
  if ! build "$t"; then
    log "$t: BUILD FAILED"
    SUMMARY+=("$(printf '%-14s BUILD FAILED' "$t")")
    failed=$((failed + 1))
    continue
  fi
  work="$BUILD_DIR/run/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  seeds=$(find "Fuzz/corpus/$t" -type f | wc -l)
  cp -R "Fuzz/corpus/$t/." "$work/corpus/"
  log "$t: fuzzing ${SECONDS_PER_TARGET}s from $seeds seeds (max_len $MAX_LEN)"
  set +e
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  (cd "$work" && timeout -k 10 $((SECONDS_PER_TARGET + 120)) "$BUILD_DIR/$t" \
      -max_total_time="$SECONDS_PER_TARGET" -max_len="$MAX_LEN" -timeout="$UNIT_TIMEOUT" \
      -rss_limit_mb="$RSS_LIMIT_MB" -print_final_stats=1 -dict="$ROOT/Fuzz/http.dict" \
      -artifact_prefix="$work/artifacts/" $FUZZ_ARGS "$work/corpus" </dev/null >"$work/fuzz.log" 2>&1)
  rc=$?
  set -e

  execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$work/fuzz.log" | tail -n 1)
  rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$work/fuzz.log" | tail -n 1)
  newu=$(awk '/stat::new_units_added:/ {print $2}' "$work/fuzz.log" | tail -n 1)
  cov=$(grep -aoE 'cov: [0-9]+ ft: [0-9]+' "$work/fuzz.log" | tail -n 1 || true)
  files=$(find "$work/corpus" -type f | wc -l)
  artifacts=$(find "$work/artifacts" -type f | sort)
  line=$(printf '%-14s %10s execs %7s exec/s  corpus %5s files (%s units added)  %s' \
    "$t" "${execs:-?}" "${rate:-?}" "$files" "${newu:-?}" "${cov:-}")

  if [ "$rc" -eq 0 ] && [ -z "$artifacts" ]; then
    log "$t: nothing found"
    SUMMARY+=("$line  ok")
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then why="fuzzer did not stop in time (rc $rc)"; else why="rc $rc"; fi
    SUMMARY+=("$line  FOUND ($why)")
    log "$t: FOUND SOMETHING ($why); log: $work/fuzz.log"
    # The invariant message (or sanitizer report) and the top of the stack.
    grep -a -m1 -A6 -E 'FUZZ INVARIANT VIOLATED|ERROR: AddressSanitizer|ERROR: libFuzzer|ERROR: LeakSanitizer|Fatal error' "$work/fuzz.log" | sed 's/^/    /' || true
    grep -a -E '^    #[0-9]+ .* in ' "$work/fuzz.log" | grep -v -E 'libFuzzer|fuzzer::|compiler-rt|libc\.so|_start' | head -n 12 | sed 's/^/  /' || true
    env_hint="SWIFT_BACKTRACE=enable=no"
    [ -n "${LBKIT_FUZZ_TINY_LIMITS:-}" ] && env_hint+=" LBKIT_FUZZ_TINY_LIMITS=$LBKIT_FUZZ_TINY_LIMITS"
    for a in $artifacts; do
      log "$t: reproducer $a ($(wc -c <"$a") bytes); rerun: $env_hint $BUILD_DIR/$t $a"
    done
  fi
done

echo
echo "== fuzz summary (${SECONDS_PER_TARGET}s per target)"
for s in "${SUMMARY[@]}"; do echo "$s"; done
echo "$passed passed, $failed failed"
((failed == 0))
