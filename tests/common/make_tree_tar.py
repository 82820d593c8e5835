#!/usr/bin/env python3
"""Writes a tar of a tree with many entries, and the manifest to check it by.

    make_tree_tar.py OUT.tar MANIFEST TOP SUB FILES SYMLINKS HARDLINKS

The tree: TOP directories, each with SUB subdirectories, each holding FILES regular files
(small, with contents derived from their names, some empty), SYMLINKS symlinks and
HARDLINKS hard links to files of the same subdirectory. MANIFEST gets one line
`sha256  ./path` per regular file and hard link (as `sha256sum` prints them, sorted by
path), and the last line `# entries N`.
"""

import hashlib
import io
import sys
import tarfile


def content(path: str, i: int) -> bytes:
    # 0 to ~1.5 KiB: empty files, part of a block, and a few past one.
    return ((path + "\n").encode() * (i % 41))[: 37 * (i % 43)]


def main() -> None:
    out, manifest, top, sub, files, symlinks, hardlinks = sys.argv[1:8]
    top, sub, files, symlinks, hardlinks = map(int, (top, sub, files, symlinks, hardlinks))
    sums = []
    entries = 0
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:

        def add_dir(name: str) -> None:
            nonlocal entries
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tar.addfile(ti)
            entries += 1

        for t in range(top):
            add_dir(f"t{t:03d}")
            for s in range(sub):
                d = f"t{t:03d}/s{s:03d}"
                add_dir(d)
                for f in range(files):
                    path = f"{d}/file-{f:03d}.dat"
                    data = content(path, t * 7919 + s * 104729 + f)
                    ti = tarfile.TarInfo(path)
                    ti.size = len(data)
                    ti.mode = 0o644 if f % 5 else 0o600
                    tar.addfile(ti, io.BytesIO(data))
                    sums.append((path, hashlib.sha256(data).hexdigest()))
                    entries += 1
                for k in range(symlinks):
                    ti = tarfile.TarInfo(f"{d}/link-{k:02d}")
                    ti.type = tarfile.SYMTYPE
                    ti.linkname = f"file-{k % max(files, 1):03d}.dat" if k % 2 else "../../t000"
                    tar.addfile(ti)
                    entries += 1
                for k in range(hardlinks):
                    target = f"{d}/file-{(k * 3) % max(files, 1):03d}.dat"
                    ti = tarfile.TarInfo(f"{d}/hard-{k:02d}.dat")
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = target
                    tar.addfile(ti)
                    sums.append((ti.name, None))
                    entries += 1
    # Hard links have their target's content.
    by_path = {p: h for p, h in sums if h is not None}
    lines = []
    for p, h in sums:
        if h is None:
            d, name = p.rsplit("/", 1)
            k = int(name[5:7])
            h = by_path[f"{d}/file-{(k * 3) % max(files, 1):03d}.dat"]
        lines.append(f"{h}  ./{p}")
    lines.sort(key=lambda l: l.split("  ", 1)[1])
    with open(manifest, "w") as m:
        m.write("\n".join(lines) + "\n")
        m.write(f"# entries {entries}\n")


if __name__ == "__main__":
    main()
