#!/usr/bin/env bash
# Installs kmsfs as mount(8)'s helper for the filesystem type fuse.kmsfs, so that
# `mount -t fuse.kmsfs BACKING MNT -o kms=...` and fstab lines of that type work:
# mount(8) runs /sbin/mount.fuse.kmsfs, a symlink to the kmsfs binary (which acts as the
# helper when called by that name).
#
#   scripts/install-mount-helper.sh [--bin PATH] [--dir DIR] [--uninstall]
#
# --bin: the kmsfs binary (default: `command -v kmsfs`); --dir: where mount(8) looks
# (default /sbin); --uninstall removes the symlink if it points at a kmsfs binary.
set -euo pipefail

bin=""
dir=/sbin
uninstall=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-mount-helper: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

link="$dir/mount.fuse.kmsfs"
if [ "$uninstall" = 1 ]; then
    if [ -L "$link" ]; then
        rm -f "$link"
        echo "removed $link"
    fi
    exit 0
fi

if [ -z "$bin" ]; then
    bin="$(command -v kmsfs || true)"
    [ -n "$bin" ] || { echo "install-mount-helper: kmsfs is not on PATH; pass --bin /path/to/kmsfs" >&2; exit 1; }
fi
bin="$(readlink -f "$bin")"
[ -x "$bin" ] || { echo "install-mount-helper: $bin is not an executable" >&2; exit 1; }
if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "install-mount-helper: $link exists and is not a symlink; move it away first" >&2
    exit 1
fi
ln -sfn "$bin" "$link"
echo "installed $link -> $bin"
