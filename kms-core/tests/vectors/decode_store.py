#!/usr/bin/env python3
"""An independent decoder of the kms-core key store and CiphertextBlob, written from
docs/FORMAT.md ("KMS formats") alone.

usage: decode_store.py STORE_DIR CIPHERTEXT_BLOB_BASE64 [ENCRYPTION_CONTEXT_JSON]
prints: the key id, the key version and the plaintext (hex), one per line.
Needs pyca/cryptography. Exits non-zero on any check that fails.
"""
import base64
import hashlib
import hmac
import json
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def H(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def main():
    store, blob_b64 = sys.argv[1], sys.argv[2]
    ctx = json.loads(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else {}

    rk = open(f"{store}/root.key", "rb").read()
    assert len(rk) == 42 and rk[:8] == b"kmsfs-rk" and rk[8:10] == b"\x00\x01", "root.key"
    root = rk[10:]

    f = open(f"{store}/keys.kms", "rb").read()
    assert f[:8] == b"kmsfs-ks" and f[8:10] in (b"\x00\x01", b"\x00\x02"), "store magic/version"
    assert f[10] == 1, "root key source: file"
    assert f[32:48] == H(root, b"kmsfs-kms root-check v1")[:16], "root check"
    (body_len,) = struct.unpack(">Q", f[56:64])
    assert len(f) == 64 + body_len + 32, "length"
    mac = H(H(root, b"kmsfs-kms store-mac v1"), f[: 64 + body_len])
    assert hmac.compare_digest(mac, f[64 + body_len :]), "store MAC"
    body = json.loads(f[64 : 64 + body_len])
    wrap = H(root, b"kmsfs-kms material-wrap v1")

    blob = base64.b64decode(blob_b64)
    assert blob[:2] == b"KM" and blob[2] == 1, "blob magic/version"
    n = blob[3]
    key_id = blob[4 : 4 + n].decode("ascii")
    (version,) = struct.unpack(">I", blob[4 + n : 8 + n])
    nonce = blob[8 + n : 20 + n]

    rec = next(k for k in body["keys"] if k["key_id"] == key_id)
    v = rec["versions"][version - 1]
    assert v["version"] == version and v["kind"] in ("AES_256", "AES_128")
    w = base64.b64decode(v["wrapped"])
    ad = (b"kmsfs-kms material v1\x00" + bytes([len(key_id)]) + key_id.encode()
          + struct.pack(">I", version) + v["kind"].encode())
    material = AESGCM(wrap).decrypt(w[:12], w[12:], ad)
    assert len(material) == {"AES_256": 32, "AES_128": 16}[v["kind"]]

    canon = b""
    for k, val in sorted(ctx.items(), key=lambda kv: kv[0].encode()):
        kb, vb = k.encode(), val.encode()
        canon += struct.pack(">I", len(kb)) + kb + struct.pack(">I", len(vb)) + vb
    pt = AESGCM(material).decrypt(nonce, blob[20 + n :], blob[: 20 + n] + canon)
    print(key_id)
    print(version)
    print(pt.hex())


if __name__ == "__main__":
    main()
