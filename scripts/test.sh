#!/usr/bin/env bash
# The one command that runs kmsfs's tests: installs what they need, then runs the
# Rust test suite (unit tests, real FUSE mounts, the real KMS clients over HTTP) and
# the POSIX conformance suite (pjdfstest) and a bounded random-operation exerciser (fsx,
# fio --verify=crc32c, concurrent writers) against fresh mounts, default and with
# -o writeback_cache (pjdfstest also on a volume with encrypted names, and with a daemon
# that has no file handles and 1,024 fds, as an ordinary user's), and the fuzz targets
# for a bounded time (scripts/fuzz.sh).
#
# Needs root (FUSE mounts with allow_other, pjdfstest's user switching) and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo test =="
cargo test --workspace --locked -- --test-threads=2

echo "== pjdfstest =="
scripts/fstest.sh
echo "== pjdfstest, -o writeback_cache =="
scripts/fstest.sh -o writeback_cache
echo "== pjdfstest, a volume with encrypted names =="
scripts/fstest.sh --encrypt-names
echo "== pjdfstest, a daemon without file handles and 1024 fds (as an ordinary user's) =="
scripts/fstest.sh --no-file-handles

echo "== fsx, fio --verify, concurrent writers =="
scripts/fsx.sh
echo "== fsx, fio --verify, concurrent writers, -o writeback_cache =="
scripts/fsx.sh -o writeback_cache

echo "== fuzz (cargo-fuzz, 30 s per target) =="
scripts/fuzz.sh
