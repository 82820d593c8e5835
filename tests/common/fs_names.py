#!/usr/bin/env python3
"""An independent reader of kmsfs encrypted names (feature names-siv-v1), written from
docs/FORMAT.md ("Names") alone, with pyca/cryptography's AES-SIV.

usage: fs_names.py BACKING_DIR CONFIG_DEK_HEX
  Prints the volume's tree as the mount shows it, one entry per line, sorted:
  "<path>\t<d|f|l|o>" and, for symlinks, "\t<target>" (paths and targets as UTF-8,
  undecodable bytes escaped). Exits non-zero when a name or target does not open.
"""
import base64, json, os, stat, sys
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

def main():
    backing, dek = sys.argv[1].encode(), bytes.fromhex(sys.argv[2])
    body = json.loads(open(os.path.join(backing, b"kmsfs.conf"), "rb").read().split(b"\n")[0])
    if "names-siv-v1" not in body["features"]:
        fail("the volume does not encrypt names")
    uuid = body["uuid"].encode()
    siv = AESSIV(hkdf(dek, uuid, b"kmsfs v1 names siv mac") + hkdf(dek, uuid, b"kmsfs v1 names siv ctr"))
    out = []

    def walk(dir_b, rel):
        iv = open(os.path.join(dir_b, b"kmsfs.diriv"), "rb").read()
        if len(iv) != 16:
            fail("bad IV in %r" % dir_b)
        for stored in os.listdir(dir_b):
            if stored == b"kmsfs.diriv" or (rel == b"" and stored == b"kmsfs.conf"):
                continue
            try:
                name = siv.decrypt(b64url(stored), [iv])
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
                raw = b64url(os.readlink(full))
                try:
                    target = siv.decrypt(raw[16:], [b"symlink", raw[:16]])
                except Exception:
                    fail("target of %r does not open" % full)
                if st.st_size * 3 // 4 - 32 != len(target):
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
