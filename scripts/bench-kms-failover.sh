#!/usr/bin/env bash
# Failover time seen by a mount: two `kmsfs kms serve` on one throwaway PostgreSQL cluster, a
# mount with --kms http://A,http://B and per-file DEKs (one GenerateDataKey per new file), A
# killed -9, then the time of each next file creation. A benchmark, not a test. Run as root
# (initdb runs as the postgres user); needs Debian's postgresql (scripts/install-deps.sh).
#
# Usage: scripts/bench-kms-failover.sh [PATH_TO_KMSFS]   (default: target/debug/kmsfs, built)
set -eu
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then BIN=$1; else cargo build --quiet; BIN=$PWD/target/debug/kmsfs; fi
PG=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
T=$(mktemp -d /tmp/i19fo.XXXX); chown postgres:postgres $T; chmod 755 $T
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
runuser -u postgres -- $PG/initdb -D $T/data -U postgres --auth=trust --no-sync >/dev/null
runuser -u postgres -- $PG/pg_ctl start -D $T/data -w -o "-h 127.0.0.1 -p $PORT -k $T/data -c fsync=off" -l $T/data/log >/dev/null
URL=postgres://postgres@127.0.0.1:$PORT/postgres
export TENCENTCLOUD_SECRET_ID=AKIDtest TENCENTCLOUD_SECRET_KEY=secretsecretsecret KMSFS_KMS_ROOT_KEY=$T/root.key
start() { mkdir -p $T/$1; XDG_DATA_HOME=$T/$1 $BIN kms serve --listen 127.0.0.1:0 --store $URL > $T/$1.out 2>$T/$1.log & echo $! > $T/$1.pid; for i in $(seq 100); do grep -q listening $T/$1.out && break; sleep 0.1; done; sed 's/listening on //' $T/$1.out; }
A=$(start a); B=$(start b)
mkdir -p $T/backing $T/mnt
$BIN mount $T/backing $T/mnt --kms "$A,$B" --dek-policy per-file > $T/mount.log 2>&1 &
for i in $(seq 100); do mountpoint -q $T/mnt && break; sleep 0.1; done
for i in 1 2 3; do echo warm > $T/mnt/w$i; done
t() { local s=$(date +%s%N); echo data > $T/mnt/$1; local e=$(date +%s%N); echo "$1: $(( (e-s)/1000 )) us"; }
t before1; t before2
kill -9 $(cat $T/a.pid)
t after1; t after2; t after3
fusermount3 -u $T/mnt || umount -l $T/mnt
kill $(cat $T/b.pid) || true
runuser -u postgres -- $PG/pg_ctl stop -D $T/data -m immediate >/dev/null
rm -rf $T
