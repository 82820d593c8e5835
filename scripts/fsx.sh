#!/usr/bin/env bash
# Data integrity under load, on a fresh kmsfs mount, every byte checked:
#   1. fsx (crates.io): random writes, reads, truncates, mmap reads/writes, fallocate,
#      … against an in-memory model; the optional ops the mount supports are probed
#      first (fsx aborts on EOPNOTSUPP);
#   2. fio --verify=crc32c random read/write;
#   3. several processes at once: writing interleaved stripes of one file (sharing
#      blocks, so partial-block read-modify-writes race) and one file each, checked
#      byte for byte through the mount and again after a remount (from the backing
#      files, not the page cache);
#   4. kmsfs fsck of the volume after the unmount;
#   5. in the long mode (--ops above the default), ZERO_RANGE too, which fsx 0.3.2 does
#      not have: the model test tests/fs_prop.rs (random writes, truncates, PUNCH_HOLE,
#      ZERO_RANGE, fallocate through a mount, each file then cut one block short must
#      fail to read) for about as many operations (KMSFS_PROP_CASES = ops / 12).
# Prints one line per stage and a summary; exits non-zero on the first failure.
#
# Usage: scripts/fsx.sh [--ops N] [--seed S] [--fio-size SIZE] [--procs P] [-o OPTS] [--keep]
#   --ops N       fsx operations (default 15000, about 50 s here; the whole script < 2 min)
#   --seed S      fsx seed (default: random, printed; rerun with it to reproduce)
#   --fio-size    fio file size (default 64m)
#   --procs P     concurrent writer processes (default 4)
#   -o OPTS       mount options (e.g. writeback_cache)
#   --keep        keep the work directory (fsx logs, daemon log)
# Needs root and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/lib/mount.sh
. scripts/lib/mount.sh

ops=15000
seed=$(( (RANDOM << 15) | RANDOM ))
fio_size=64m
procs=4
keep=0
mount_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ops) ops="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --fio-size) fio_size="$2"; shift 2 ;;
    --procs) procs="$2"; shift 2 ;;
    -o) mount_opts+=(-o "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "fsx.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# --- tools ------------------------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v fsx >/dev/null; then
  echo "fsx.sh: cargo install --locked fsx"
  cargo install --locked --quiet fsx
fi
if ! command -v fio >/dev/null; then
  echo "fsx.sh: apt-get install fio"
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null
fi
cargo build --quiet --bin kmsfs
bin="$root/target/debug/kmsfs"

# --- a fresh mount, always unmounted ----------------------------------------------------
work=$(mktemp -d /tmp/kmsfs-fsx.XXXXXX)
mnt="$work/mnt"
mkdir -p "$work/backing" "$mnt"
export KMSFS_KMS="$work/kms"
daemon_pid=""
unmount() {
  kmsfs_unmount "$mnt" "$daemon_pid" 10
  daemon_pid=""
}
cleanup() {
  unmount
  if [ "$keep" = 1 ]; then echo "fsx.sh: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
do_mount() {
  "$bin" mount "${mount_opts[@]}" --log-file "$work/daemon.log" "$work/backing" "$mnt"
  daemon_pid=$(kmsfs_daemon_pid "$mnt")
}
fail() {
  echo "fsx.sh: FAIL: $*" >&2
  echo "fsx.sh: daemon log (last 20 lines):" >&2
  tail -n 20 "$work/daemon.log" >&2 || true
  keep=1
  exit 1
}
do_mount

# --- 1. fsx ------------------------------------------------------------------------------
# Probe the optional operations: fsx aborts on EOPNOTSUPP.
probe() {
  python3 - "$mnt/probe" "$1" <<'EOF'
import os, sys, fcntl, ctypes
path, op = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"x" * 20000)
try:
    if op == "posix_fallocate":
        os.posix_fallocate(fd, 0, 40000)
    elif op == "punch_hole":
        libc = ctypes.CDLL(None, use_errno=True)
        # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
        if libc.fallocate(fd, 0x01 | 0x02, ctypes.c_long(4096), ctypes.c_long(4096)) != 0:
            raise OSError(ctypes.get_errno(), "fallocate punch hole")
    elif op == "copy_file_range":
        dst = os.open(path + ".dst", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        if os.copy_file_range(fd, dst, 1000, 0, 0) != 1000:
            raise OSError(0, "short copy")
    elif op == "sendfile":
        dst = os.open(path + ".dst", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.sendfile(dst, fd, 0, 1000)
    elif op == "posix_fadvise":
        os.posix_fadvise(fd, 0, 1000, os.POSIX_FADV_DONTNEED)
except OSError as e:
    print(f"{op}: not supported ({e})", file=sys.stderr)
    sys.exit(1)
EOF
}
declare -A weight=(
  [close_open]=2 [read]=10 [write]=10 [mapread]=5 [truncate]=5 [invalidate]=1
  [mapwrite]=5 [fsync]=1 [fdatasync]=1
)
supported=()
for op in posix_fallocate punch_hole copy_file_range sendfile posix_fadvise; do
  if probe "$op" 2>>"$work/probe.log"; then weight[$op]=2; supported+=("$op"); else weight[$op]=0; fi
done
rm -f "$mnt/probe" "$mnt/probe.dst"
echo "fsx.sh: optional ops supported: ${supported[*]:-none}; not: $(grep -o '^[a-z_]*: not supported' "$work/probe.log" | cut -d: -f1 | tr '\n' ' ')"
{
  echo "flen = 1048576"
  echo "[opsize]"
  echo "min = 1"
  echo "max = 65536"
  echo "[weights]"
  for op in "${!weight[@]}"; do echo "$op = ${weight[$op]}"; done
} > "$work/fsx.toml"
mkdir -p "$work/fsxlog"
echo "fsx.sh: fsx -N $ops -S $seed (config $work/fsx.toml)"
t0=$(date +%s)
set +e
fsx -f "$work/fsx.toml" -N "$ops" -S "$seed" -P "$work/fsxlog" "$mnt/fsx.file" > "$work/fsx.out" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ] || ! grep -q "All operations completed A-OK" "$work/fsx.out"; then
  tail -n 40 "$work/fsx.out" >&2
  fail "fsx seed $seed, $ops ops: exit $rc (log: $work/fsx.out, $work/fsxlog)"
fi
echo "fsx.sh: fsx OK: $ops ops, seed $seed, $(( $(date +%s) - t0 )) s"

# --- 2. fio ------------------------------------------------------------------------------
set +e
(cd "$mnt" && fio --name=verify --rw=randrw --bs=4k --size="$fio_size" --verify=crc32c \
  --direct=0 --directory="$mnt" --output="$work/fio.out")
rc=$?
set -e
grep -E "err=|verify" "$work/fio.out" | head -5 || true
if [ $rc -ne 0 ] || ! grep -q "err= 0" "$work/fio.out"; then
  cat "$work/fio.out" >&2
  fail "fio exit $rc"
fi
echo "fsx.sh: fio OK: randrw 4k, $fio_size, crc32c verified"

# --- 3. concurrent writers -----------------------------------------------------------------
# Each writer owns the stripes i ≡ w (mod P) of the shared file (stripe = 1000 bytes, so
# writers share every 4096-byte block) and the whole of its own file; it writes its
# stripes in a random order, then the checker compares every byte with the expectation.
cat > "$work/conc.py" <<'EOF'
import os, random, sys, hashlib
mode, d, procs = sys.argv[1], sys.argv[2], int(sys.argv[3])
STRIPE, NSTRIPES, OWN = 1000, 4000, 3 * 1024 * 1024 + 17
def stripe(s):
    return hashlib.sha256(b"stripe%d" % s).digest() * (STRIPE // 32) + b"x" * (STRIPE % 32)
def own(w):
    h = hashlib.sha256(b"own%d" % w).digest()
    return (h * (OWN // 32 + 1))[:OWN]
if mode == "write":
    w = int(sys.argv[4])
    fd = os.open(os.path.join(d, "shared"), os.O_WRONLY | os.O_CREAT, 0o644)
    mine = [s for s in range(NSTRIPES) if s % procs == w]
    random.Random(w).shuffle(mine)
    for s in mine:
        os.pwrite(fd, stripe(s), s * STRIPE)
    os.fsync(fd)
    os.close(fd)
    data, rng = own(w), random.Random(100 + w)
    fd = os.open(os.path.join(d, "own%d" % w), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pos = 0
    while pos < len(data):          # odd-sized sequential writes
        n = rng.randint(1, 70000)
        os.pwrite(fd, data[pos:pos + n], pos)
        pos += n
    for _ in range(200):            # then random overwrites with the same bytes
        off = rng.randrange(len(data)); n = rng.randint(1, 9000)
        os.pwrite(fd, data[off:off + n], off)
    os.fsync(fd)
    os.close(fd)
else:
    bad = 0
    got = open(os.path.join(d, "shared"), "rb").read()
    want = b"".join(stripe(s) for s in range(NSTRIPES))
    if got != want:
        i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        print(f"shared: {len(got)} bytes, want {len(want)}; first difference at {i} (stripe {i // STRIPE}, block {i // 4096})")
        bad += 1
    for w in range(procs):
        got = open(os.path.join(d, "own%d" % w), "rb").read()
        if got != own(w):
            print(f"own{w}: differs ({len(got)} bytes, want {OWN})")
            bad += 1
    total = len(want) + procs * OWN
    print(f"checked {total} bytes in {procs + 1} files: {'OK' if bad == 0 else str(bad) + ' files differ'}")
    sys.exit(1 if bad else 0)
EOF
pids=()
for w in $(seq 0 $((procs - 1))); do
  python3 "$work/conc.py" write "$mnt" "$procs" "$w" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent writer failed"; done
python3 "$work/conc.py" check "$mnt" "$procs" || fail "concurrent writes: data differs (through the mount)"
unmount
do_mount
python3 "$work/conc.py" check "$mnt" "$procs" || fail "concurrent writes: data differs after a remount"
echo "fsx.sh: concurrent writers OK: $procs processes, one shared file and one each, checked before and after a remount"

# --- 4. fsck -------------------------------------------------------------------------------
unmount
set +e
"$bin" fsck "$work/backing" > "$work/fsck.out" 2>&1
rc=$?
set -e
tail -n 1 "$work/fsck.out"
# fsx leaves holes; a one-block hole between written blocks is a fsck warning (exit 2).
if [ $rc -ne 0 ] && [ $rc -ne 2 ]; then
  cat "$work/fsck.out" >&2
  fail "kmsfs fsck exit $rc"
fi
# --- 5. zero ranges (long mode) ------------------------------------------------------------
zr=""
if [ "$ops" -gt 15000 ]; then
  cases=$(( ops / 12 ))
  KMSFS_PROP_CASES=$cases cargo test --quiet --test fs_prop random_writes > "$work/prop.out" 2>&1 ||
    { cat "$work/prop.out" >&2; fail "fs_prop with zero ranges failed"; }
  echo "fsx.sh: fs_prop OK: $cases cases of up to 25 operations (writes, truncates, punch, zero range, fallocate)"
  zr="; fs_prop $cases cases"
fi
echo "fsx.sh: all OK (fsx $ops ops seed $seed; fio $fio_size; $procs concurrent writers; fsck exit $rc$zr)"
