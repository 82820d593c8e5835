#!/usr/bin/env bash
# Installs the real Tencent Cloud clients the KMS server is tested with, from PyPI:
# tccli, tencentcloud-sdk-python, pycryptodome (the seed 002 envelope sample's AES) and
# gmssl (an independent SM2 implementation, for AsymmetricSm2Decrypt and SM2 data keys).
#
# Pinned to the versions ../shared/KMS-API.md was checked against. Idempotent: when the
# pinned versions are already importable it does nothing and returns at once.
#
# Usage: scripts/install-kms-clients.sh        (uses $PYTHON, default python3)
set -euo pipefail

PYTHON="${PYTHON:-python3}"
TCCLI_VERSION="3.1.189.1"
SDK_VERSION="3.1.195"
PYCRYPTODOME_VERSION="3.23.0"
GMSSL_VERSION="3.2.2"

installed() {
    "$PYTHON" - "$TCCLI_VERSION" "$SDK_VERSION" "$PYCRYPTODOME_VERSION" "$GMSSL_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
want = dict(zip(["tccli", "tencentcloud-sdk-python", "pycryptodome", "gmssl"], sys.argv[1:]))
sys.exit(0 if all(version(p) == v for p, v in want.items()) else 1)
PY
}

if installed && command -v tccli >/dev/null 2>&1; then
    exit 0
fi

"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "tccli==$TCCLI_VERSION" \
    "tencentcloud-sdk-python==$SDK_VERSION" \
    "pycryptodome==$PYCRYPTODOME_VERSION" \
    "gmssl==$GMSSL_VERSION"

# pyenv puts console scripts behind shims that need a rehash.
if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash || true
fi

if ! installed; then
    echo "install-kms-clients: the pinned versions are still not importable by $PYTHON" >&2
    exit 1
fi
command -v tccli >/dev/null 2>&1 || {
    echo "install-kms-clients: tccli is installed but not on PATH" >&2
    exit 1
}
