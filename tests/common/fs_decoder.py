#!/usr/bin/env python3
"""An independent decoder of kmsfs regular files, written from docs/FORMAT.md
("Volume format") alone, with pyca/cryptography.

usage: fs_decoder.py BACKING_FILE CONFIG_FILE [DEK_HEX]
  Without DEK_HEX: prints the header's wrapped DEK (hex) and the volume uuid, one per line.
  With DEK_HEX: writes the file's plaintext to stdout.
Exits non-zero on any format violation or authentication failure.
"""
import hashlib, json, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes

def fail(msg):
    sys.stderr.write("fs_decoder: " + msg + "\n")
    sys.exit(1)

def aes_block(k, b):
    e = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    return e.update(b) + e.finalize()

def xaes_open(k, n, ct_tag, ad):
    L = aes_block(k, bytes(16))
    x = int.from_bytes(L, "big") << 1
    if L[0] & 0x80:
        x ^= 0x87
    k1 = (x & ((1 << 128) - 1)).to_bytes(16, "big")
    m1 = bytes([0, 1, 0x58, 0]) + n[:12]
    m2 = bytes([0, 2, 0x58, 0]) + n[:12]
    kx = aes_block(k, bytes(a ^ b for a, b in zip(m1, k1))) + aes_block(k, bytes(a ^ b for a, b in zip(m2, k1)))
    return AESGCM(kx).decrypt(n[12:], ct_tag, ad)

def main():
    raw = open(sys.argv[1], "rb").read()
    conf = open(sys.argv[2], "rb").read().split(b"\n")[0]
    cfg = json.loads(conf)
    H, B, O = cfg["header_size"], cfg["block_size"], 40
    if len(raw) == 0:
        if len(sys.argv) < 4:
            print(""); print(cfg["uuid"])
        return
    if len(raw) < H:
        fail("shorter than the header")
    h = raw[:H]
    if h[0:8] != b"KMSFSHDR": fail("magic")
    if int.from_bytes(h[8:10], "big") != 1: fail("version")
    if int.from_bytes(h[10:12], "big") != 0: fail("flags")
    if int.from_bytes(h[12:16], "big") != H: fail("header size field")
    fid = h[16:32]
    if fid == bytes(16): fail("zero file id")
    S = (H - 32) // 2
    best = None
    for i in range(2):
        slot = h[32 + i * S: 32 + (i + 1) * S]
        gen = int.from_bytes(slot[0:4], "big")
        ln = int.from_bytes(slot[4:6], "big")
        if ln == 0 or ln > S - 22:
            continue
        blob = slot[6:6 + ln]
        if any(slot[6 + ln:S - 16]):
            continue
        chk = hashlib.sha256(b"kmsfs slot" + h[:32] + bytes([i]) + gen.to_bytes(4, "big") + ln.to_bytes(2, "big") + blob).digest()[:16]
        if chk != slot[S - 16:]:
            continue
        if best is None or gen > best[0]:
            best = (gen, blob)
    if best is None: fail("no valid slot")
    if len(sys.argv) < 4:
        print(best[1].hex()); print(cfg["uuid"])
        return
    dek = bytes.fromhex(sys.argv[3])
    key = HKDF(hashes.SHA256(), 32, fid, b"kmsfs v1 content key xaes-256-gcm block=%d" % B).derive(dek)
    # Feature content-final-v1: one more AD byte, 1 on the last block only; a block before
    # the last may also say 1 (an append that did not re-seal it); the last must not be a hole.
    final_flag = "content-final-v1" in cfg["features"]
    body = raw[H:]
    out = bytearray()
    nblocks = -(-len(body) // (B + O))
    for i in range(0, len(body), B + O):
        blk = body[i:i + B + O]
        no = i // (B + O)
        last = no == nblocks - 1
        if not any(blk):
            if final_flag and last: fail("ends in a hole")
            out += bytes(max(0, len(blk) - O))
            continue
        if len(blk) <= O: fail("torn block %d" % no)
        ad = fid + no.to_bytes(8, "big")
        if not final_flag:
            out += xaes_open(key, blk[:24], blk[24:], ad)
        elif last:
            out += xaes_open(key, blk[:24], blk[24:], ad + b"\x01")
        else:
            try:
                out += xaes_open(key, blk[:24], blk[24:], ad + b"\x00")
            except Exception:
                out += xaes_open(key, blk[:24], blk[24:], ad + b"\x01")
    sys.stdout.buffer.write(bytes(out))

main()
