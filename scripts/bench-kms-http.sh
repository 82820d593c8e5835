#!/usr/bin/env bash
# GenerateDataKey and Decrypt over HTTP on loopback: requests/s and p50/p99 latency.
# Runs kms-core/examples/http_bench.rs in release mode: the HTTP server in front of the
# embedded KmsService (a temporary store), with THREADS concurrent RemoteKms clients,
# SECONDS per operation, through the Tencent API (TC3) and then the Alibaba Cloud API
# (ACS3) of the same server (KMS_BENCH_APIS=tencent for one). A benchmark, not a test.
#
# Usage: scripts/bench-kms-http.sh [THREADS] [SECONDS_PER_OP]     (defaults 4 and 5)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p kms-core --example http_bench -- "${1:-4}" "${2:-5}"
