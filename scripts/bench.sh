#!/usr/bin/env bash
# kmsfs side by side with gocryptfs, securefs and bindfs, in one run (see scripts/bench.py).
# Usage: scripts/bench.sh [--rounds N] [--size-mib M] [--files F] [--only kmsfs,bindfs]
#                         [--base REV] ...
# --base REV builds kmsfs at git revision REV (a worktree under target/bench-base) and adds
# it as the column kmsfs-base: a change measured against its base in the same run.
# Needs root (drop_caches, FUSE). Prints one table of medians, spreads and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in fuse3 gocryptfs securefs bindfs fio openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

args=()
base=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base="$2"; shift 2 ;;
    --base=*) base="${1#--base=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

cargo build --release --locked --bin kmsfs >&2
if [ -n "$base" ]; then
  tree="$PWD/target/bench-base/tree"
  git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
  git worktree prune
  git worktree add --detach "$tree" "$base" >&2
  (cd "$tree" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked --bin kmsfs >&2)
  args+=(--kmsfs-base "$PWD/target/bench-base/target/release/kmsfs")
fi
exec python3 scripts/bench.py --kmsfs "$PWD/target/release/kmsfs" "${args[@]}"
