#!/usr/bin/env bash
# POSIX conformance: runs pjdfstest (the crates.io port) against a fresh kmsfs mount
# (allow_other + default_permissions, as root) and prints
#   pjdfstest: N passed, M failed, K skipped
# With --peer gocryptfs it runs the same suite, same config, on a fresh gocryptfs
# mount (-allow_other) instead, for comparison; --peer native runs it in a plain directory of
# the filesystem /tmp is on (ext4 here), no FUSE, for the baseline.
#
# Exit status (kmsfs only): non-zero when more tests fail than the threshold in
# scripts/fstest.threshold (or --max-failures N), so CI catches regressions.
#
# --no-allow-other mounts without allow_other (the default configuration; the kernel then
# refuses the test users, so expect failures; the threshold is not applied).
#
# -o OPTS adds kmsfs mount options (e.g. -o writeback_cache); --encrypt-names makes the
# fresh volume one with encrypted names; --no-file-handles runs the daemon without
# CAP_DAC_READ_SEARCH (as an ordinary user's daemon is: no open_by_handle_at, every inode
# reached by name) and with an fd limit of 1024.
#
# Usage: scripts/fstest.sh [--peer gocryptfs|native] [--no-allow-other] [-o OPTS] [--encrypt-names] [--no-file-handles] [--max-failures N] [--keep] [TEST_FILTER…]
# Needs root and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/lib/mount.sh
. scripts/lib/mount.sh

peer=kmsfs
max_failures=""
keep=0
allow_other=1
extra_opts=()
init_flags=()
launcher=()
filters=()
while [ $# -gt 0 ]; do
  case "$1" in
    --peer) peer="$2"; shift 2 ;;
    --max-failures) max_failures="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --no-allow-other) allow_other=0; shift ;;
    -o) extra_opts+=(-o "$2"); shift 2 ;;
    --encrypt-names) init_flags+=(--encrypt-names); shift ;;
    --no-file-handles)
      launcher=(prlimit --nofile=1024:1024 setpriv --inh-caps=-dac_read_search --bounding-set=-dac_read_search)
      shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) filters+=("$1"); shift ;;
  esac
done
case "$peer" in kmsfs|gocryptfs|native) ;; *) echo "fstest: unknown --peer $peer (kmsfs|gocryptfs|native)" >&2; exit 2 ;; esac
if [ -z "$max_failures" ]; then
  max_failures=$(grep -v '^#' "$root/scripts/fstest.threshold" 2>/dev/null | head -n1 | tr -dc 0-9)
  max_failures=${max_failures:-0}
fi
[ "$(id -u)" -eq 0 ] || { echo "fstest: run as root (pjdfstest switches users; allow_other)" >&2; exit 2; }

# --- what the suite needs -----------------------------------------------------------
apt_pkgs=(fuse3)
[ "$peer" = gocryptfs ] && apt_pkgs+=(gocryptfs)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fstest: apt-get install ${missing[*]}"
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v pjdfstest >/dev/null; then
  echo "fstest: cargo install --locked pjdfstest (about 2 minutes)"
  cargo install --locked --quiet pjdfstest
fi
# The users of the dummy_auth section, each with its primary group. (scripts/test.sh runs
# two of these at once: the other one may be making them, holding /etc/passwd's lock.)
ensure_user() {
  local user=$1 group=$2
  for _ in $(seq 20); do
    getent group "$group" >/dev/null || groupadd "$group" 2>/dev/null || true
    id "$user" >/dev/null 2>&1 ||
      useradd -M -d / -s /usr/sbin/nologin -g "$group" "$user" 2>/dev/null || true
    getent group "$group" >/dev/null && id "$user" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "fstest: could not make the user $user (group $group)" >&2
  exit 1
}
ensure_user nobody nogroup
ensure_user tests tests

# --- a fresh mount ------------------------------------------------------------------
work=$(mktemp -d /tmp/fstest.XXXXXX)
cross=$(mktemp -d /dev/shm/fstest-cross.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/backing" "$work/mnt"
daemon_pid=""
cleanup() {
  kmsfs_unmount "$work/mnt" "$daemon_pid" 5
  rm -rf "$cross"
  if [ "$keep" = 1 ]; then echo "fstest: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [ "$peer" = kmsfs ]; then
  cargo build --quiet --bin kmsfs
  bin="$root/target/debug/kmsfs"
  opts=("${extra_opts[@]}"); [ "$allow_other" = 1 ] && opts+=(-o allow_other)
  KMSFS_KMS="$work/kms" "${launcher[@]}" "$bin" mount "${opts[@]}" "${init_flags[@]}" \
    --log-file "$work/daemon.log" "$work/backing" "$work/mnt"
  daemon_pid=$(kmsfs_daemon_pid "$work/mnt")
elif [ "$peer" = native ]; then
  chmod 755 "$work/mnt"
else
  printf 'fstest-password\n' > "$work/pw"
  gocryptfs -init -q -passfile "$work/pw" "$work/backing" >/dev/null
  gopts=(); [ "$allow_other" = 1 ] && gopts=(-allow_other)
  gocryptfs -q "${gopts[@]}" -passfile "$work/pw" "$work/backing" "$work/mnt"
fi
[ "$peer" = native ] || grep " $work/mnt " /proc/mounts

cat > "$work/pjdfstest.toml" <<'EOF'
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}
[settings]
naptime = 0.01
allow_remount = false
expected_failures = []
[dummy_auth]
entries = [["nobody","nogroup"],["tests","tests"]]
EOF

# --- run ----------------------------------------------------------------------------
set +e
(cd "$work/mnt" && pjdfstest -c "$work/pjdfstest.toml" -p "$work/mnt" -s "$cross" "${filters[@]}") \
  > "$work/pjdfstest.log" 2>&1
set -e
# Show every test that did not pass, with pjdfstest's reason lines.
grep -vE " ok$|^Summary:|^$" "$work/pjdfstest.log" | head -80 || true
summary=$(grep -E "^Summary:" "$work/pjdfstest.log" | tail -n1)
if [ -z "$summary" ]; then
  echo "fstest: pjdfstest printed no summary; last lines:" >&2
  tail -n 30 "$work/pjdfstest.log" >&2
  exit 1
fi
failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$summary")
skipped=$(sed -E 's/.* ([0-9]+) skipped.*/\1/' <<<"$summary")
passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")
echo "$summary"
mode=$([ "$allow_other" = 1 ] && echo ", allow_other" || echo ", default mount")
[ "$peer" = native ] && mode=", no FUSE"
echo "pjdfstest ($peer$mode): $passed passed, $failed failed, $skipped skipped"
echo "pjdfstest: $passed passed, $failed failed, $skipped skipped"
if [ "$peer" = kmsfs ] && [ "$allow_other" = 1 ] && [ "$failed" -gt "$max_failures" ]; then
  echo "fstest: $failed failures, more than the allowed $max_failures (scripts/fstest.threshold)" >&2
  exit 1
fi
