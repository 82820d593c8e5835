# Shell helpers for the scripts that mount kmsfs (fstest.sh, fsx.sh): sourced, not run.

# The pid of the daemon serving MNT, from its `user.kmsfs.pid` xattr.
kmsfs_daemon_pid() {
  python3 -c "import os,sys; print(os.getxattr(sys.argv[1], 'user.kmsfs.pid').decode())" "$1"
}

# Unmounts MNT if it is mounted (lazily if the mount is busy), then waits up to SECONDS
# for the daemon PID (may be empty) to exit, so the next mount or an rm -rf of the
# backing directory does not race its last writes.
kmsfs_unmount() {
  local mnt=$1 pid=$2 seconds=$3
  if grep -q " $mnt " /proc/mounts; then
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  fi
  if [ -n "$pid" ]; then
    for _ in $(seq $((seconds * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}
