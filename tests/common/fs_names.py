#!/usr/bin/env python3
"""An independent reader of kmsfs encrypted names (feature names-siv-v1, and long names
and targets, names-long-v1), written from docs/FORMAT.md ("Names") alone, with
pyca/cryptography's AES-SIV.

usage: fs_names.py BACKING_DIR CONFIG_DEK_HEX
  Prints the volume's tree as the mount shows it, one entry per line, sorted:
  "<path>\t<d|f|l|o>" and, for symlinks, "\t<target>" (paths and targets as UTF-8,
  undecodable bytes escaped). Exits non-zero when a name or target does not open.
"""
import base64, hashlib, json, os, re, stat, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

def fail(msg):
    sys.stderr.write("fs_names: " + msg + "\n")
    sys.exit(1)

def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)

def b64url(s):
    return base64.urlsafe_b64decode(s + b"=" * (-len(s) % 4))

def h(x):
    return base64.urlsafe_b64encode(hashlib.sha256(x).digest()).rstrip(b"=")

LONG_NAME = re.compile(rb"kmsfs\.longname\.[A-Za-z0-9_-]{43}")
LONG_LINK = re.compile(rb"kmsfs\.longlink\.[A-Za-z0-9_-]{43}")

def main():
    backing, dek = sys.argv[1].encode(), bytes.fromhex(sys.argv[2])
    body = json.loads(open(os.path.join(backing, b"kmsfs.conf"), "rb").read().split(b"\n")[0])
    if "names-siv-v1" not in body["features"]:
        fail("the volume does not encrypt names")
    long_ok = "names-long-v1" in body["features"]
    uuid = body["uuid"].encode()
    siv = AESSIV(hkdf(dek, uuid, b"kmsfs v1 names siv mac") + hkdf(dek, uuid, b"kmsfs v1 names siv ctr"))
    out = []

    def walk(dir_b, rel):
        iv = open(os.path.join(dir_b, b"kmsfs.diriv"), "rb").read()
        if len(iv) != 16:
            fail("bad IV in %r" % dir_b)
        entries = os.listdir(dir_b)
        for stored in entries:
            if stored == b"kmsfs.diriv" or (rel == b"" and stored == b"kmsfs.conf"):
                continue
            sealed = stored
            if long_ok and rel == b"" and LONG_LINK.fullmatch(stored):
                continue
            if long_ok and stored.startswith(b"kmsfs.longname.") and not LONG_NAME.fullmatch(stored):
                side_of = stored[:58]
                rest = stored[58:]
                if LONG_NAME.fullmatch(side_of) and (
                    rest in (b".name", b".name.tmp") or re.fullmatch(rb"\.name\.tmp\.[0-9a-f]{16}", rest)
                ):
                    if side_of not in entries:
                        fail("orphan side file %r in %r" % (stored, dir_b))
                    continue
            if long_ok and LONG_NAME.fullmatch(stored):
                sealed = open(os.path.join(dir_b, stored + b".name"), "rb").read()
                if len(sealed) <= 255 or b"kmsfs.longname." + h(sealed) != stored:
                    fail("side file of %r in %r is not its own" % (stored, dir_b))
            try:
                name = siv.decrypt(b64url(sealed), [iv])
            except Exception:
                fail("name %r in %r does not open" % (stored, dir_b))
            if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
                fail("invalid name %r" % name)
            path = rel + b"/" + name if rel else name
            full = os.path.join(dir_b, stored)
            st = os.lstat(full)
            show = path.decode("utf-8", "backslashreplace")
            if stat.S_ISDIR(st.st_mode):
                out.append(show + "\td")
                walk(full, path)
            elif stat.S_ISLNK(st.st_mode):
                stored_t = os.readlink(full)
                if long_ok and LONG_LINK.fullmatch(stored_t):
                    stored_t = open(os.path.join(backing, stored_t), "rb").read()
                    if b"kmsfs.longlink." + h(stored_t) != os.readlink(full):
                        fail("side file of the long link %r is not its own" % full)
                raw = b64url(stored_t)
                try:
                    target = siv.decrypt(raw[16:], [b"symlink", raw[:16]])
                except Exception:
                    fail("target of %r does not open" % full)
                if len(stored_t) * 3 // 4 - 32 != len(target):
                    fail("size rule broken for %r" % full)
                out.append(show + "\tl\t" + target.decode("utf-8", "backslashreplace"))
            elif stat.S_ISREG(st.st_mode):
                out.append(show + "\tf")
            else:
                out.append(show + "\to")

    walk(backing, b"")
    for line in sorted(out):
        print(line)

main()
