#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input (fuzz/, cargo-fuzz + libFuzzer) for a bounded
# time: each target runs FUZZ_SECONDS (default 30) from its seed corpus (fuzz/seeds/<target>/,
# made by fuzz/make-seeds.py) and the script prints, per target, the executions libFuzzer
# counted (its final stat::number_of_executed_units). FUZZ_JOBS targets run at once
# (default: the number of CPUs; libFuzzer's process is single-threaded), each for its full
# FUZZ_SECONDS.
#
# Exit status: non-zero when any target crashes, leaks, times out or fails to build;
# the crash artifact's path (fuzz/artifacts/<target>/crash-…) is in the output.
# Reproduce one: RUSTC_BOOTSTRAP=1 cargo fuzz run --dev <target> <artifact> (in fuzz/).
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags
# (AddressSanitizer). FUZZ_SANITIZER=none builds without ASan (faster, fewer finds).
# CI builds the targets unoptimised (FUZZ_PROFILE=dev, the default: a cold build of the
# whole dependency tree takes minutes, not tens of minutes); FUZZ_PROFILE=release is
# several times more executions per second, for long runs.
# Installs cargo-fuzz when missing.
#
# Usage: scripts/fuzz.sh [--build-only] [TARGET…]
#   e.g. FUZZ_SECONDS=3600 scripts/fuzz.sh http_request
#   --build-only  builds the targets (as a run would) and stops; scripts/test.sh builds
#                 them in the background while other tests run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
build_only=0
if [ "${1:-}" = --build-only ]; then build_only=1; shift; fi
seconds=${FUZZ_SECONDS:-30}
jobs=${FUZZ_JOBS:-$(nproc)}
case "$jobs" in ''|*[!0-9]*|0) echo "fuzz: FUZZ_JOBS is a positive number" >&2; exit 2 ;; esac
sanitizer=${FUZZ_SANITIZER:-address}
case "${FUZZ_PROFILE:-dev}" in
  dev) profile=--dev ;;
  release) profile=-O ;;
  *) echo "fuzz: FUZZ_PROFILE is dev or release" >&2; exit 2 ;;
esac
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# The fuzz workspace has its own target directory; a CARGO_TARGET_DIR meant for the
# main workspace would mix sanitizer builds into it.
unset CARGO_TARGET_DIR
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo install cargo-fuzz --locked"
  cargo install cargo-fuzz --locked --quiet
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

t0=$(date +%s)
cargo fuzz build "$profile" -s "$sanitizer"
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - t0 )) s (sanitizer: $sanitizer, ${FUZZ_PROFILE:-dev})"

[ "$build_only" = 1 ] && exit 0

work=$(mktemp -d /tmp/kmsfs-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
# One target's run: its libFuzzer log in $work/<target>.log, its exit status in
# $work/<target>.rc.
run_target() {
  local t=$1 rc
  # New inputs go to a scratch corpus (first directory); the seeds stay as committed.
  # FUZZ_CORPUS=DIR keeps the corpus in DIR/<target> instead, to grow it across runs.
  local corpus="${FUZZ_CORPUS:-$work/corpus}/$t"
  mkdir -p "$corpus"
  set +e
  cargo fuzz run "$profile" -s "$sanitizer" "$t" "$corpus" "seeds/$t" -- \
    -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 > "$work/$t.log" 2>&1
  rc=$?
  set -e
  echo "$rc" > "$work/$t.rc"
}
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait
failed=()
summary=()
for t in "${targets[@]}"; do
  rc=$(cat "$work/$t.rc" 2>/dev/null || echo "?")
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$work/$t.log" | tail -n1)
  [ -n "$execs" ] || execs=$(sed -nE 's/^#([0-9]+)[[:space:]]+DONE.*/\1/p' "$work/$t.log" | tail -n1)
  line=$(printf '%-16s %12s executions in %s s' "$t" "${execs:-?}" "$seconds")
  if [ "$rc" != 0 ]; then
    line="$line  FAILED (exit $rc)"
    failed+=("$t")
    echo "fuzz: $t failed; the end of its log:" >&2
    tail -n 60 "$work/$t.log" >&2
    grep -hE "Test unit written to|artifact_prefix" "$work/$t.log" >&2 || true
  fi
  echo "fuzz: $line"
  summary+=("$line")
done
echo "fuzz: summary ($(( $(date +%s) - t0 )) s in all, $jobs at a time)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (artifacts under fuzz/artifacts/)" >&2
  exit 1
fi
