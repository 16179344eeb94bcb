#!/usr/bin/env bash
# Builds the libFuzzer targets into build/fuzz/ and runs each one for
# FUZZ_SECONDS (default 60) over its committed seed corpus.
#
#   fuzz/run.sh                  build, then run every target
#   FUZZ_SECONDS=10 fuzz/run.sh  the short smoke run CI does
#   fuzz/run.sh build            build only
#   fuzz/run.sh http frames      run only these targets (http frames rooms
#                                backplane bpwire utf8 tls pmd inflate)
#
# Each target first replays fuzz/regressions/<target>/ (inputs that once
# failed), then fuzzes. New inputs go to build/fuzz/corpus/<target>/ (the
# committed corpus under fuzz/corpus/ is only read), crash files to
# build/fuzz/artifacts/<target>/.
# Exits non-zero when a target crashes, leaks, trips a sanitizer or breaks
# one of its checked properties; the tail of its log is printed.
#
# Needs Debian's clang and the libFuzzer runtime that clang 14 links with
# -fsanitize=fuzzer (libclang-rt-14-dev, only a Recommends of clang there);
# installed with apt-get when missing and we are root.
# Variables: FUZZ_SECONDS, FUZZ_CC (default clang), FUZZ_JOBS (parallel
# workers per target, default 1), FUZZ_FLAGS (more libFuzzer options).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_CC=${FUZZ_CC:-clang}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_FLAGS=${FUZZ_FLAGS:-}
OUT=build/fuzz
TARGETS=(http frames rooms backplane bpwire utf8 tls pmd inflate)
# Lines that mean a target failed, whatever its exit code.
REPORT='ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|property failed'

have_fuzzer_runtime() {
  command -v "$FUZZ_CC" >/dev/null 2>&1 || return 1
  local probe
  probe=$(mktemp -d)
  printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)' \
    '{ (void)d; (void)n; return 0; }' >"$probe/p.c"
  local ok=0
  "$FUZZ_CC" -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" >/dev/null 2>&1 ||
    ok=1
  rm -rf "$probe"
  return $ok
}

ensure_toolchain() {
  have_fuzzer_runtime && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "fuzz: installing clang and libclang-rt-14-dev"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends clang libclang-rt-14-dev >/dev/null
  fi
  if ! have_fuzzer_runtime; then
    echo "fuzz: $FUZZ_CC cannot link -fsanitize=fuzzer; as root, run:" >&2
    echo "    apt-get install clang libclang-rt-14-dev" >&2
    exit 1
  fi
}

build() {
  ensure_toolchain
  mkdir -p "$OUT"
  local cflags=(-std=c11 -g -O1 -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined -fno-omit-frame-pointer
    -Wall -Wextra -Werror -Icsrc/include -Icsrc)
  local uv_cflags uv_libs
  uv_cflags=$(pkg-config --cflags libuv openssl hiredis libdeflate zlib)
  uv_libs=$(pkg-config --libs libuv openssl hiredis libdeflate zlib)
  echo "fuzz: building $OUT/fuzz_http"
  # shellcheck disable=SC2086 # pkg-config output is a list of flags
  "$FUZZ_CC" "${cflags[@]}" $(pkg-config --cflags libcrypto) \
    fuzz/fuzz_http.c csrc/proto/rc_http.c -o "$OUT/fuzz_http" \
    $(pkg-config --libs libcrypto)
  echo "fuzz: building $OUT/fuzz_bpwire"
  # shellcheck disable=SC2086 # pkg-config output is a list of flags
  "$FUZZ_CC" "${cflags[@]}" $(pkg-config --cflags hiredis) fuzz/fuzz_bpwire.c \
    csrc/proto/rc_bpwire.c csrc/proto/rc_utf8.c -o "$OUT/fuzz_bpwire" \
    $(pkg-config --libs hiredis)
  echo "fuzz: building $OUT/fuzz_utf8"
  "$FUZZ_CC" "${cflags[@]}" fuzz/fuzz_utf8.c csrc/proto/rc_utf8.c \
    -o "$OUT/fuzz_utf8"
  echo "fuzz: building $OUT/fuzz_pmd"
  "$FUZZ_CC" "${cflags[@]}" fuzz/fuzz_pmd.c csrc/proto/rc_pmd.c \
    -o "$OUT/fuzz_pmd"
  echo "fuzz: building $OUT/fuzz_tls"
  # shellcheck disable=SC2086 # pkg-config output is a list of flags
  "$FUZZ_CC" "${cflags[@]}" $(pkg-config --cflags openssl) fuzz/fuzz_tls.c \
    csrc/proto/rc_tls.c -o "$OUT/fuzz_tls" $(pkg-config --libs openssl)
  echo "fuzz: building $OUT/fuzz_inflate"
  # shellcheck disable=SC2086 # pkg-config output is a list of flags
  "$FUZZ_CC" "${cflags[@]}" $(pkg-config --cflags libdeflate zlib) \
    fuzz/fuzz_inflate.c csrc/proto/rc_deflate.c -o "$OUT/fuzz_inflate" \
    $(pkg-config --libs libdeflate zlib)
  # The targets that run a whole core link every file of it but the binding.
  local core=(csrc/proto/*.c csrc/loop/*.c)
  local t
  for t in frames rooms backplane; do
    echo "fuzz: building $OUT/fuzz_$t"
    # shellcheck disable=SC2086 # pkg-config output is a list of flags
    "$FUZZ_CC" "${cflags[@]}" $uv_cflags "fuzz/fuzz_$t.c" "${core[@]}" \
      -o "$OUT/fuzz_$t" $uv_libs -lwslay
  done
}

run_one() {
  local t=$1 root=$PWD
  local corpus=$root/$OUT/corpus/$t artifacts=$root/$OUT/artifacts/$t
  local log=$root/$OUT/$t.log
  mkdir -p "$corpus" "$artifacts"
  local opts=(-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048
    -max_len=8192 -print_final_stats=1 -error_exitcode=77
    -artifact_prefix="$artifacts/")
  [ -f "fuzz/$t.dict" ] && opts+=(-dict="$root/fuzz/$t.dict")
  # -jobs, even 1, makes libFuzzer fork workers that log to fuzz-<n>.log in
  # the working directory: only asked for, and then inside $OUT.
  [ "$FUZZ_JOBS" -gt 1 ] && opts+=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
  local status=0
  local regressions=()
  if [ -d "fuzz/regressions/$t" ]; then
    for f in "$root/fuzz/regressions/$t"/*; do
      [ -f "$f" ] && regressions+=("$f")
    done
  fi
  if [ ${#regressions[@]} -gt 0 ]; then
    echo "fuzz: replaying ${#regressions[@]} regression input(s) of $t"
    "$OUT/fuzz_$t" "${regressions[@]}" >"$log" 2>&1 || status=$?
    if [ $status -ne 0 ]; then
      tail -n 40 "$log" >&2
      grep -E "$REPORT" "$log" | head -n 3 >&2 || true
      echo "fuzz: $t FAILED on a regression input (exit $status)" >&2
      return 1
    fi
  fi
  echo "fuzz: running $t for ${FUZZ_SECONDS}s (log: $OUT/$t.log)"
  # The first corpus directory receives new inputs; the committed seeds are
  # only read.
  # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of options
  (cd "$OUT" && rm -f fuzz-*.log &&
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
      UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
      "./fuzz_$t" "$corpus" "$root/fuzz/corpus/$t" "${opts[@]}" \
      $FUZZ_FLAGS) >"$log" 2>&1 || status=$?
  for w in "$OUT"/fuzz-*.log; do
    [ -f "$w" ] || continue
    cat "$w" >>"$log"
    rm -f "$w"
  done
  if [ $status -ne 0 ] || grep -qE "$REPORT" "$log"; then
    tail -n 60 "$log" >&2
    grep -E "$REPORT" "$log" | head -n 3 >&2 || true
    echo "fuzz: $t FAILED (exit $status); inputs in $OUT/artifacts/$t/" >&2
    return 1
  fi
  grep -E '^#[0-9]+.*DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
    "$log" | sed "s/^/fuzz: $t: /"
}

if [ "${1:-}" = build ]; then
  build
  exit 0
fi
if [ $# -gt 0 ]; then
  TARGETS=("$@")
fi
build
failed=""
for t in "${TARGETS[@]}"; do
  run_one "$t" || failed="$failed $t"
done
if [ -n "$failed" ]; then
  echo "fuzz: failed:$failed" >&2
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets ran ${FUZZ_SECONDS}s each without a report"
