#!/usr/bin/env bash
# Installs the real cloud clients the KMS server is tested with, from PyPI: Tencent's
# tccli and tencentcloud-sdk-python; Alibaba's alibabacloud-kms20160120 (ACS3 signatures)
# and aliyun-python-sdk-kms with aliyun-python-sdk-core (RPC HMAC-SHA1 signatures);
# pycryptodome (the seed 002 envelope sample's AES) and gmssl (an independent SM2
# implementation, for AsymmetricSm2Decrypt and SM2 data keys).
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
ALI_KMS_VERSION="3.3.1"
ALI_OPENAPI_VERSION="0.4.6"
ALI_OLD_KMS_VERSION="2.16.5"
ALI_OLD_CORE_VERSION="2.16.1"

installed() {
    "$PYTHON" - "$TCCLI_VERSION" "$SDK_VERSION" "$PYCRYPTODOME_VERSION" "$GMSSL_VERSION" \
        "$ALI_KMS_VERSION" "$ALI_OPENAPI_VERSION" "$ALI_OLD_KMS_VERSION" "$ALI_OLD_CORE_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
want = dict(zip(["tccli", "tencentcloud-sdk-python", "pycryptodome", "gmssl",
                 "alibabacloud-kms20160120", "alibabacloud-tea-openapi",
                 "aliyun-python-sdk-kms", "aliyun-python-sdk-core"], sys.argv[1:]))
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
    "gmssl==$GMSSL_VERSION" \
    "alibabacloud-kms20160120==$ALI_KMS_VERSION" \
    "alibabacloud-tea-openapi==$ALI_OPENAPI_VERSION" \
    "aliyun-python-sdk-kms==$ALI_OLD_KMS_VERSION" \
    "aliyun-python-sdk-core==$ALI_OLD_CORE_VERSION"

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
