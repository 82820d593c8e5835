#!/usr/bin/env bash
# Installs what kmsfs's tests need on a fresh Debian 12 machine. Idempotent and quick
# when everything is already there. Run as root (or with sudo available).
#
# Usage: scripts/install-deps.sh [--no-tools]
#   --no-tools  only the Debian and Python packages, not the tools compiled from crates.io
#               (scripts/install-tools.sh: cargo-fuzz, pjdfstest, fsx); scripts/test.sh
#               compiles those in the background meanwhile.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=1
[ "${1:-}" = --no-tools ] && tools=0

# The Python packages install from PyPI while apt-get runs (neither needs the other).
python_packages() {
  # pyca/cryptography: the independent Python decoders of docs/FORMAT.md use it.
  python3 -c "import cryptography.hazmat.primitives.ciphers.aead" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check "cryptography>=41"
  # The real cloud clients (tccli, tencentcloud-sdk-python, Alibaba's) for the KMS server tests.
  if [ -x "$here/install-kms-clients.sh" ]; then
    "$here/install-kms-clients.sh"
  fi
}
python_packages &
python_pid=$!

need_apt=()
# mount: mount(8) for the mount.fuse.kmsfs tests; systemd: systemd-analyze verify of
# contrib/systemd; man-db: `man -l` of the generated man pages (tests/ops_*.rs); acl, attr:
# setfacl/getfacl and setfattr/getfattr (tests/fs_acl.rs); postgresql: initdb and pg_ctl for
# the throwaway clusters of the PostgreSQL key-store tests (tests/kms_pg.rs).
# fio: scripts/fsx.sh. g++: libFuzzer (scripts/fuzz.sh) is C++.
for pkg in fuse3 openssl sqlite3 git strace inotify-tools mount systemd man-db acl attr postgresql fio g++; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: apt-get install ${need_apt[*]}"
  $sudo apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python_rc=0
wait "$python_pid" || python_rc=$?
if [ "$python_rc" -ne 0 ]; then
  echo "install-deps: installing the Python packages failed (exit $python_rc)" >&2
  exit 1
fi

# cargo-fuzz, pjdfstest, fsx.
if [ "$tools" = 1 ]; then
  "$here/install-tools.sh"
fi
