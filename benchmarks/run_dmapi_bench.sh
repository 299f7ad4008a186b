#!/usr/bin/env bash
# libdmapi benchmarks with their baselines, one cluster, one run.
# usage: benchmarks/run_dmapi_bench.sh [ITERS] [MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-5000}
mib=${2:-256}
dir=$(mktemp -d /tmp/pdm-bench-XXXXXX)
trap 'scripts/localcluster.sh down "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
PDM_BACKING_SIZE=1G scripts/localcluster.sh up 2 "$dir" >/dev/null
export DMAPI_SOCKET=$dir/state/node0.sock
build/bin/bench_dmapi events "$iters"
build/bin/bench_dmapi invis "$dir/node0/bench.dat" "$mib"
