#!/usr/bin/env bash
# Decrypt and GenerateDataKey through `kmsfs kms serve --store postgres://…`: requests/s and
# p50/p99 latency with one server, then with two servers on the same database, in one run (one
# throwaway PostgreSQL cluster on 127.0.0.1, one key set). Each phase runs
# kms-core/examples/http_bench.rs (release) with THREADS RemoteKms clients; with two servers,
# client i talks to server i mod 2. Servers log at RUST_LOG=warn (no per-request line). The
# audit chain is verified at the end. A benchmark, not a test. Run as root (initdb runs as the
# postgres user); needs Debian's postgresql (scripts/install-deps.sh).
#
# Usage: scripts/bench-kms-pg.sh [THREADS] [SECONDS_PER_OP]      (defaults 8 and 5)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-8}
SECS=${2:-5}
cargo build --quiet --release -p kmsfs --bin kmsfs
cargo build --quiet --release -p kms-core --example http_bench
TD=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TD/release/kmsfs
BENCH=$TD/release/examples/http_bench
PG=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
T=$(mktemp -d /tmp/kmsfs-bench-pg.XXXX)
chown postgres:postgres "$T"
chmod 755 "$T"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    runuser -u postgres -- "$PG/pg_ctl" stop -D "$T/data" -m immediate >/dev/null 2>&1 || true
    rm -rf "$T"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
runuser -u postgres -- "$PG/initdb" -D "$T/data" -U postgres --auth=trust >/dev/null
# PostgreSQL's defaults (fsync on, synchronous_commit on); kmsfs commits crypto calls' audit
# lines asynchronously itself.
runuser -u postgres -- "$PG/pg_ctl" start -D "$T/data" -w -l "$T/data/log" \
    -o "-h 127.0.0.1 -p $PORT -k $T/data" >/dev/null
URL=postgres://postgres@127.0.0.1:$PORT/postgres
export TENCENTCLOUD_SECRET_ID=AKIDbenchPg TENCENTCLOUD_SECRET_KEY=bench-pg-secret-key
export KMSFS_KMS_ROOT_KEY=$T/root.key RUST_LOG=warn
start() {
    mkdir -p "$T/$1"
    XDG_DATA_HOME=$T/$1 "$BIN" kms serve --listen 127.0.0.1:0 --store "$URL" >"$T/$1.out" 2>"$T/$1.log" &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q listening "$T/$1.out" && break; sleep 0.1; done
}
start a
start b
A=$(sed 's/listening on //' "$T/a.out")
B=$(sed 's/listening on //' "$T/b.out")
echo "PostgreSQL $("$PG/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
KMS_BENCH_LABEL="one server" KMS_BENCH_URLS=$A "$BENCH" "$THREADS" "$SECS"
KMS_BENCH_LABEL="two servers, one database" KMS_BENCH_URLS=$A,$B "$BENCH" "$THREADS" "$SECS"
XDG_DATA_HOME=$T "$BIN" kms verify-audit --store "$URL"
