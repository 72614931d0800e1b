#!/usr/bin/env bash
# check-layers.sh: the layering rules the compiler cannot state on its own.
#   1. LBKitPolicy imports only the standard library and Synchronization, plus the C library
#      for math (exp) in files that call nothing else from it; it reads no clock.
#   2. No library target imports Foundation (only lbserve's LBServeSupport may).
#   3. LBKit (the balancer layer) reads time only through its injected MonotonicClock.
# Prints one line per violation and ends with "N passed, N failed"; exits 1 on any violation.
set -u
cd "$(dirname "$0")/.."
passed=0; failed=0
check() { # name, violations (empty = pass)
  if [ -z "$2" ]; then passed=$((passed + 1)); echo "ok   $1"; else failed=$((failed + 1)); echo "FAIL $1"; echo "$2" | sed 's/^/     /'; fi
}

bad_imports=$(grep -rnE '^\s*(@_exported\s+|@testable\s+|internal\s+|public\s+|package\s+)?import\s+' Sources/LBKitPolicy \
  | grep -vE 'import\s+(Synchronization|Glibc|Musl)\s*$')
check "LBKitPolicy imports only Synchronization (and the C library for math)" "$bad_imports"

libc_files=$(grep -rlE '^\s*import\s+(Glibc|Musl)\s*$' Sources/LBKitPolicy)
libc_misuse=""
for f in $libc_files; do
  # Every identifier followed by '(' that the C library provides, other than math, is a violation.
  hits=$(grep -noE '\b(read|write|open|close|socket|connect|accept|recv|send|poll|epoll_[a-z_]+|clock_gettime|gettimeofday|time|usleep|nanosleep|sleep|getenv|pthread_[a-z_]+|malloc|free|fopen|fputs|printf|signal|sigaction|kill|fork|exit)\(' "$f" | grep -v '^\s*//')
  [ -n "$hits" ] && libc_misuse+="$f: $hits"$'\n'
done
check "LBKitPolicy uses the C library only for math" "${libc_misuse%$'\n'}"

clock_reads=$(grep -rnE 'lbk_monotonic_ns|lbk_wall_ns|SystemClock\(\)|ContinuousClock|SuspendingClock|DispatchTime|clock_gettime|Date\(\)' Sources/LBKitPolicy | grep -vE '^\S+:\s*[0-9]+:\s*///')
check "LBKitPolicy reads no clock" "$clock_reads"

foundation=$(grep -rnE '^\s*(@_exported\s+|internal\s+|public\s+)?import\s+Foundation' Sources/LBKitPolicy Sources/LBKitHTTP Sources/LBKit Sources/LBKitTesting)
check "no library target imports Foundation" "$foundation"

lb_clock=$(grep -rnE 'lbk_monotonic_ns|ContinuousClock\.now|SuspendingClock\.now|SystemClock\(\)\.now' Sources/LBKit | grep -vE '^\S+:\s*[0-9]+:\s*///')
check "LBKit reads time only through its injected clock" "$lb_clock"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
