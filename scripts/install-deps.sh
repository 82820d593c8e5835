#!/usr/bin/env bash
# Installs what kmsfs's tests need on a fresh Debian 12 machine. Idempotent and quick
# when everything is already there. Run as root (or with sudo available).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

need_apt=()
# mount: mount(8) for the mount.fuse.kmsfs tests; systemd: systemd-analyze verify of
# contrib/systemd; man-db: `man -l` of the generated man pages (tests/ops_*.rs); acl, attr:
# setfacl/getfacl and setfattr/getfattr (tests/fs_acl.rs); postgresql: initdb and pg_ctl for
# the throwaway clusters of the PostgreSQL key-store tests (tests/kms_pg.rs).
for pkg in fuse3 openssl sqlite3 git strace inotify-tools mount systemd man-db acl attr postgresql; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: apt-get install ${need_apt[*]}"
  $sudo apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# pyca/cryptography: the independent Python decoders of docs/FORMAT.md use it.
python3 -c "import cryptography.hazmat.primitives.ciphers.aead" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check "cryptography>=41"

# The real Tencent Cloud clients (tccli, tencentcloud-sdk-python) for the KMS server tests.
if [ -x "$here/install-kms-clients.sh" ]; then
  "$here/install-kms-clients.sh"
fi

# cargo-fuzz for scripts/fuzz.sh (libFuzzer is C++: it needs g++).
if ! command -v g++ >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++ >/dev/null
fi
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
