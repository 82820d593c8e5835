#!/usr/bin/env bash
# kmsfs side by side with gocryptfs, securefs and bindfs, in one run (see scripts/bench.py).
# Usage: scripts/bench.sh [--rounds N] [--size-mib M] [--files F] [--only kmsfs,bindfs] ...
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

cargo build --release --locked --bin kmsfs >&2
exec python3 scripts/bench.py --kmsfs "$PWD/target/release/kmsfs" "$@"
