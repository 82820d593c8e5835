#!/usr/bin/env bash
# The one command that runs kmsfs's tests: installs what they need, then runs the
# Rust test suite (unit tests, real FUSE mounts, the real KMS clients over HTTP) and
# the POSIX conformance suite (pjdfstest) and a bounded random-operation exerciser (fsx,
# fio --verify=crc32c, concurrent writers) against fresh mounts, default and with
# -o writeback_cache (pjdfstest also on a volume with encrypted names, and with a daemon
# that has no file handles and 1,024 fds, as an ordinary user's), and the fuzz targets
# for a bounded time (scripts/fuzz.sh; FUZZ_SECONDS per target, default 30).
#
# On a fresh machine most of the install time is compiling, so it overlaps: the test
# build starts at once, beside apt-get and pip; the tools compiled from crates.io
# (cargo-fuzz, pjdfstest, fsx) and then the fuzz targets build in the background at
# nice 19 (so they take only CPU the tests leave idle) while the test suite runs. Each
# background job is waited for before its result is needed, and its failure fails the
# script with the end of its log. The pjdfstest configurations run two at a time (each
# on its own fresh mount), as do the two fsx runs; each one's output is printed whole,
# under its heading, and each one's result is checked.
#
# Needs root (FUSE mounts with allow_other, pjdfstest's user switching) and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
logs=$(mktemp -d /tmp/kmsfs-test.XXXXXX)
# Every heading shows the seconds since the start and the disk space left where the
# build and the tests write (a CI machine's disk can be small: a run once ended in ENOSPC).
avail() { df -h --output=avail "$1" 2>/dev/null | tail -n 1 | tr -d ' '; }
heading() {
  echo "== $* [$(( $(date +%s) - t0 )) s; free: $(avail .) here, $(avail "${TMPDIR:-/tmp}") in tmp] =="
}
# A CI build is never rebuilt in place: incremental state would only take disk and time.
export CARGO_INCREMENTAL=0

# Background jobs: start NAME CMD… runs CMD with its output in $logs/NAME.log;
# finish NAME waits for it, prints its log, and exits when it failed.
declare -A job_pid=()
start() {
  local name=$1; shift
  "$@" > "$logs/$name.log" 2>&1 &
  job_pid[$name]=$!
}
finish() {
  local name=$1 rc=0
  wait "${job_pid[$name]}" || rc=$?
  unset "job_pid[$name]"
  cat "$logs/$name.log"
  if [ "$rc" -ne 0 ]; then
    echo "test.sh: $name FAILED (exit $rc)" >&2
    exit 1
  fi
}
cleanup() {
  local pid
  for pid in "${job_pid[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap cleanup EXIT

heading "install (apt-get, pip) beside the test build and the tools"
start tools nice -n 19 scripts/install-tools.sh
start build cargo test --workspace --locked --no-run
scripts/install-deps.sh --no-tools
# The fuzz targets need g++ (just installed) and cargo-fuzz (the tools job).
tools_pid=${job_pid[tools]}
start fuzz-build nice -n 19 bash -c \
  'while kill -0 "$1" 2>/dev/null; do sleep 1; done; scripts/fuzz.sh --build-only' _ "$tools_pid"

heading "cargo test build"
finish build
heading "cargo test"
cargo test --workspace --locked -- --test-threads=2

heading "tools (cargo-fuzz, pjdfstest, fsx)"
finish tools

# Runs the commands "NAME|CMD…" two at a time and prints each one's output under its
# heading; fails (after all ran) when any failed.
pairs() {
  local spec name failed=()
  local -A pid=()
  for spec in "$@"; do
    name=${spec%%|*}
    # shellcheck disable=SC2086
    ${spec#*|} > "$logs/$name.out" 2>&1 &
    pid[$name]=$!
  done
  for spec in "$@"; do
    name=${spec%%|*}
    rc=0
    wait "${pid[$name]}" || rc=$?
    heading "$name"
    cat "$logs/$name.out"
    [ "$rc" -eq 0 ] || { echo "test.sh: $name FAILED (exit $rc)" >&2; failed+=("$name"); }
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
  fi
}
heading "pjdfstest: default and -o writeback_cache, at once"
pairs "pjdfstest|scripts/fstest.sh" \
  "pjdfstest, -o writeback_cache|scripts/fstest.sh -o writeback_cache"
heading "pjdfstest: encrypted names and no file handles, at once"
pairs "pjdfstest, a volume with encrypted names|scripts/fstest.sh --encrypt-names" \
  "pjdfstest, a daemon without file handles and 1024 fds (as an ordinary user's)|scripts/fstest.sh --no-file-handles"

heading "fsx: default and -o writeback_cache, at once"
pairs "fsx, fio --verify, concurrent writers|scripts/fsx.sh" \
  "fsx, fio --verify, concurrent writers, -o writeback_cache|scripts/fsx.sh -o writeback_cache"

heading "fuzz build (in the background since the tests began)"
finish fuzz-build
heading "fuzz (cargo-fuzz, ${FUZZ_SECONDS:-30} s per target)"
scripts/fuzz.sh
heading "all passed"
