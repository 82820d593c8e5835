#!/usr/bin/env bash
# Installs the test tools that are compiled from crates.io (into ~/.cargo/bin), each only
# when missing: cargo-fuzz (scripts/fuzz.sh), pjdfstest (scripts/fstest.sh), fsx
# (scripts/fsx.sh). Those scripts install their own tool when it is missing too; this
# one lets scripts/test.sh compile all three early, in the background (a few minutes on a
# fresh machine). scripts/install-deps.sh runs it last.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "install-tools: cargo install --locked cargo-fuzz"
  cargo install --locked --quiet cargo-fuzz
fi
if ! command -v pjdfstest >/dev/null; then
  echo "install-tools: cargo install --locked pjdfstest"
  cargo install --locked --quiet pjdfstest
fi
if ! command -v fsx >/dev/null; then
  echo "install-tools: cargo install --locked fsx"
  cargo install --locked --quiet fsx
fi
