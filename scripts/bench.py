#!/usr/bin/env python3
"""kmsfs side by side with gocryptfs, securefs (format 4) and bindfs, in one run.

kmsfs runs three times: as mounted by default (by root), as "kmsfs-wb", mounted with
`-o writeback_cache` (opt-in: write errors surface at fsync/close; docs/OPERATIONS.md),
and as "kmsfs-user", mounted by an ordinary user (the account kmsfs-bench, made if
missing) through fusermount3 with RLIMIT_NOFILE 1024:1024 and no file handles, every
workload of that column run as that user. Each column also gives the daemon's peak RSS
and its peak open fds (sampled from /proc every 100 ms).
`--only kmsfs,kmsfs-names` adds a volume made with `--encrypt-names` (not in the default
set). `--kmsfs-base BIN` adds a "kmsfs-base" column: another kmsfs build (say, of the
commit before a change) mounted like the default one, so a change is measured against
its base in the same run (the "kmsfs vs kmsfs-base" column). The ratios are those of the
default mount.

Every filesystem gets a fresh backing directory on the same disk and runs the same
workloads; the order of filesystems rotates between rounds against machine drift.
Prints one table: the median of the rounds with its spread (min-max), and kmsfs's
ratio against each peer, where > 1.00 means kmsfs is better on that row.

Run through scripts/bench.sh, which builds kmsfs and installs the peers.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PEERS = ["kmsfs", "kmsfs-wb", "kmsfs-user", "gocryptfs", "securefs", "bindfs"]
# kmsfs's own mount options per variant.
KMSFS_OPTS = {"kmsfs": [], "kmsfs-wb": ["-o", "writeback_cache"], "kmsfs-user": [],
              "kmsfs-names": ["--encrypt-names"], "kmsfs-base": []}
# The ordinary user of the kmsfs-user column.
BENCH_USER = "kmsfs-bench"
PASSWORD = "bench-password-not-secret"


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def out(cmd, **kw):
    return subprocess.run(
        cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True, **kw
    ).stdout


def is_mounted(path):
    """Whether `path` is a mountpoint, from /proc (root cannot stat a user's FUSE mount)."""
    want = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(l.split(" ")[4] == want for l in f)


def bench_user():
    """The ordinary user of the kmsfs-user column (made if missing): (uid, home)."""
    if subprocess.run(["id", BENCH_USER], capture_output=True).returncode != 0:
        sh(["useradd", "-m", "-s", "/bin/sh", BENCH_USER])
    uid = int(out(["id", "-u", BENCH_USER]).strip())
    Path("/dev/fuse").chmod(0o666)
    return uid, Path(out(["sh", "-c", f"getent passwd {BENCH_USER} | cut -d: -f6"]).strip())


def drop_caches():
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


class Fs:
    """One filesystem under test: mounts over a fresh backing directory."""

    def __init__(self, name, root, kmsfs_bin):
        self.name = name
        self.root = root / name
        self.backing = self.root / "backing"
        self.mnt = self.root / "mnt"
        self.kmsfs = kmsfs_bin
        self.kms_store = self.root / "kms"
        # Commands on this mount run as its user (root cannot enter a user's mount).
        self.prefix = []
        if name == "kmsfs-user":
            uid, home = bench_user()
            self.uid = uid
            self.prefix = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--init-groups",
                           "env", f"HOME={home}"]

    def sh(self, cmd, **kw):
        """Runs `cmd` (a list) as the mount's user."""
        return sh(self.prefix + cmd, **kw)

    def out(self, cmd):
        return out(self.prefix + cmd)

    def mount(self):
        if self.root.exists():
            self.umount(quiet=True)
            shutil.rmtree(self.root)
        self.backing.mkdir(parents=True)
        self.mnt.mkdir()
        if self.name == "kmsfs-user":
            shutil.chown(self.root, self.uid, self.uid)
            for d in (self.backing, self.mnt):
                shutil.chown(d, self.uid, self.uid)
            self.sh(["prlimit", "--nofile=1024:1024", self.kmsfs, "--kms", str(self.kms_store),
                     "mount", str(self.backing), str(self.mnt)], stdout=subprocess.DEVNULL)
        elif self.name in KMSFS_OPTS:
            sh([self.kmsfs, "--kms", str(self.kms_store), "mount", *KMSFS_OPTS[self.name],
                str(self.backing), str(self.mnt)],
               stdout=subprocess.DEVNULL)
        elif self.name == "gocryptfs":
            pw = self.root / "pw"
            pw.write_text(PASSWORD + "\n")
            sh(["gocryptfs", "-init", "-q", "-passfile", str(pw), str(self.backing)])
            sh(["gocryptfs", "-q", "-passfile", str(pw), str(self.backing), str(self.mnt)],
               stderr=subprocess.DEVNULL)
        elif self.name == "securefs":
            sh(["securefs", "create", "--format", "4", "--pass", PASSWORD, str(self.backing)],
               stdout=subprocess.DEVNULL)
            sh(["securefs", "mount", "-b", "--pass", PASSWORD, str(self.backing), str(self.mnt)],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif self.name == "bindfs":
            sh(["bindfs", "--multithreaded", str(self.backing), str(self.mnt)])
        for _ in range(100):
            if is_mounted(self.mnt):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not mount on {self.mnt}")

    def daemon_pid(self):
        for line in out(["ps", "-eo", "pid=,args="]).splitlines():
            pid, _, args = line.strip().partition(" ")
            if str(self.backing) in args and self.name.split("-")[0] in args.split()[0]:
                return int(pid)
        return None

    def open_fds(self, pid):
        try:
            return len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return 0

    def peak_rss_mib(self):
        pid = self.daemon_pid()
        if pid is None:
            return None
        status = Path(f"/proc/{pid}/status").read_text()
        m = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(m.group(1)) / 1024 if m else None

    def umount(self, quiet=False):
        if not is_mounted(self.mnt):
            return
        if self.name in KMSFS_OPTS:
            cmd = [self.kmsfs, "umount", str(self.mnt)]
        else:
            cmd = ["fusermount3", "-u", str(self.mnt)]
        subprocess.run(self.prefix + cmd, check=not quiet, capture_output=quiet)
        for _ in range(100):
            if not is_mounted(self.mnt):
                return
            time.sleep(0.05)
        subprocess.run(["umount", "-l", str(self.mnt)], check=False)


def make_tree(dest, nfiles, seed=42):
    """A source tree like a code checkout: nfiles small files in nested directories."""
    import random

    rnd = random.Random(seed)
    blob = os.urandom(64 * 1024)
    for i in range(nfiles):
        d = dest / f"d{i % 97:02d}" / f"s{i % 13:02d}"
        d.mkdir(parents=True, exist_ok=True)
        size = min(int(rnd.expovariate(1 / 6000)), 64 * 1024)
        off = rnd.randrange(0, 64 * 1024 - size + 1)
        (d / f"f{i:05d}.c").write_bytes(blob[off:off + size])


def fio_iops(fs, directory, runtime):
    res = fs.out([
        "fio", "--name=randrw", f"--directory={directory}", "--rw=randrw", "--bs=4k",
        "--size=256m", "--ioengine=psync", "--numjobs=1", f"--runtime={runtime}",
        "--time_based", "--output-format=json", "--end_fsync=1",
    ])
    job = json.loads(res[res.index("{"):])["jobs"][0]
    return job["read"]["iops"], job["write"]["iops"]


def run_round(fs, args, src_big, src_256, src_tar):
    import threading

    r = {}
    fs.mount()
    m = fs.mnt
    pid = fs.daemon_pid()
    peak_fds = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            if pid is not None:
                peak_fds[0] = max(peak_fds[0], fs.open_fds(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size_mb = args.size_mib * 1024 * 1024 / 1e6
    drop_caches()
    r["write MB/s"] = size_mb / timed(lambda: fs.sh(
        ["dd", f"if={src_big}", f"of={m}/big", "bs=1M", "conv=fsync", "status=none"]))
    drop_caches()
    r["read MB/s (cold)"] = size_mb / timed(lambda: fs.sh(
        ["dd", f"if={m}/big", "of=/dev/null", "bs=1M", "status=none"]))
    fs.sh(["rm", "-f", f"{m}/big"])
    rd, wr = fio_iops(fs, m, args.fio_seconds)
    r["fio 4k randrw read IOPS"] = rd
    r["fio 4k randrw write IOPS"] = wr
    fs.sh(["sh", "-c", f"rm -f '{m}'/randrw*"])
    fs.sh(["cp", str(src_256), f"{m}/c256"])
    os.sync()
    drop_caches()
    r["cp 256 MiB s"] = timed(lambda: fs.sh(["cp", f"{m}/c256", f"{m}/c256.copy"]) or os.sync())
    drop_caches()
    r["extract s"] = timed(lambda: fs.sh(["tar", "-xf", str(src_tar), "-C", str(m)]) or os.sync())
    drop_caches()
    r["ls -lR s"] = timed(lambda: fs.sh(["sh", "-c", f"ls -lR '{m}/tree' > /dev/null"]))
    drop_caches()
    r["du -s s"] = timed(lambda: fs.sh(["du", "-s", f"{m}/tree"], stdout=subprocess.DEVNULL))
    drop_caches()
    r["rm -rf s"] = timed(lambda: fs.sh(["rm", "-rf", f"{m}/tree"]))
    r["peak RSS MiB"] = fs.peak_rss_mib() or float("nan")
    done.set()
    sampler.join()
    r["peak daemon fds"] = float(peak_fds[0]) if pid is not None else float("nan")
    fs.umount()
    return r


HIGHER_IS_BETTER = {"write MB/s", "read MB/s (cold)", "fio 4k randrw read IOPS",
                    "fio 4k randrw write IOPS"}


def fmt(v):
    if v != v:  # NaN
        return "n/a"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def openssl_line():
    text = out("openssl speed -evp aes-256-gcm -bytes 4096 -seconds 2 2>/dev/null | tail -1")
    fields = text.split()
    try:
        kbps = float(fields[-1].rstrip("k"))
        return f"openssl AES-256-GCM, one core, 4 KiB: {kbps * 1000 / 1e6:,.0f} MB/s"
    except (ValueError, IndexError):
        return f"openssl: {text.strip()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kmsfs", required=True, help="the kmsfs binary")
    ap.add_argument("--dir", default="/var/tmp/kmsfs-bench", help="work directory on the disk under test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024, help="streaming write/read size")
    ap.add_argument("--files", type=int, default=25000, help="files in the extracted tree")
    ap.add_argument("--fio-seconds", type=int, default=15)
    ap.add_argument("--only", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS) + ",kmsfs-names")
    ap.add_argument("--kmsfs-base", help="another kmsfs binary, benchmarked as the column kmsfs-base")
    args = ap.parse_args()

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm/kmsfs-bench-src")
    shutil.rmtree(shm, ignore_errors=True)
    shm.mkdir()
    names = [n for n in args.only.split(",") if n]
    if args.kmsfs_base:
        if "kmsfs-base" not in names:
            names.append("kmsfs-base")
    elif "kmsfs-base" in names:
        ap.error("the kmsfs-base column needs --kmsfs-base BIN")
    fss = [Fs(n, root, args.kmsfs_base if n == "kmsfs-base" else args.kmsfs) for n in names]

    def cleanup(*_):
        for fs in fss:
            fs.umount(quiet=True)
        shutil.rmtree(shm, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *a: (cleanup(), sys.exit(1)))
    try:
        print(f"preparing sources in {shm} ...", file=sys.stderr)
        src_big = shm / "big"
        sh(["dd", "if=/dev/urandom", f"of={src_big}", "bs=1M", f"count={args.size_mib}", "status=none"])
        src_256 = shm / "c256"
        sh(["dd", "if=/dev/urandom", f"of={src_256}", "bs=1M", "count=256", "status=none"])
        make_tree(shm / "tree", args.files)
        src_tar = shm / "tree.tar"
        with tarfile.open(src_tar, "w") as t:
            t.add(shm / "tree", arcname="tree")
        shutil.rmtree(shm / "tree")
        # The kmsfs-user column reads the sources as its user.
        for f in (shm, src_big, src_256, src_tar):
            f.chmod(0o755 if f.is_dir() else 0o644)

        results = {n: [] for n in names}
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for fs in (f for n in order for f in fss if f.name == n):
                print(f"round {rnd + 1}/{args.rounds}: {fs.name} ...", file=sys.stderr)
                results[fs.name].append(run_round(fs, args, src_big, src_256, src_tar))
    finally:
        cleanup()

    rows = list(next(iter(results.values()))[0].keys())
    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in rows} for n in names}
    spread = {n: {k: (min(r[k] for r in results[n]), max(r[k] for r in results[n])) for k in rows}
              for n in names}
    peers = [n for n in names if n != "kmsfs"]
    head = ["row"] + [f"{n} (min-max)" for n in names] + [f"kmsfs vs {p}" for p in peers if "kmsfs" in names]
    lines = []
    for k in rows:
        cells = [k] + [f"{fmt(med[n][k])} ({fmt(spread[n][k][0])}-{fmt(spread[n][k][1])})" for n in names]
        if "kmsfs" in names:
            for p in peers:
                a, b = med["kmsfs"][k], med[p][k]
                if k.startswith("peak ") or a != a or b != b or a == 0 or b == 0:
                    cells.append(f"{a / b:.2f}x mem" if k == "peak RSS MiB" and a == a and b == b and b else "-")
                else:
                    ratio = a / b if k in HIGHER_IS_BETTER else b / a
                    cells.append(f"{ratio:.2f}")
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    print(f"\nkmsfs bench: {args.rounds} rounds, medians (min-max); ratios > 1.00: kmsfs better")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for cells in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)))
    print(openssl_line())


if __name__ == "__main__":
    main()
