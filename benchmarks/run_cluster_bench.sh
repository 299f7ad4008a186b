#!/usr/bin/env bash
# Cluster benchmarks, baseline and pdm in the same run, printed as ratios.
#  (a) session create until visible on every node vs MPI_Bcast of the same
#      bytes over the same fabric (btl tcp,self), N = 2, 4, 8
#  (b) synchronous event raised on node 1, answered by a session on node 2,
#      vs two raw TCP ping-pongs (the event crosses the network twice)
# usage: benchmarks/run_cluster_bench.sh [ITERS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
iters=${1:-2000}
bin=$root/build/bin
mpi=(mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
# An Update frame carrying one session record is about this size.
bytes=160

for n in 2 4 8; do
  dir=$(mktemp -d /tmp/pdm-bench-XXXXXX)
  PDM_BACKING_SIZE=64M scripts/localcluster.sh up "$n" "$dir" >/dev/null
  pdm=$("$bin/bench_pdm_client" create "$dir/state" 0 "$iters")
  scripts/localcluster.sh down "$dir" >/dev/null; rm -rf "$dir"
  base=$("${mpi[@]}" -np "$n" "$bin/bench_mpi_bcast" "$bytes" $((iters * 5)))
  p=$(sed -E 's/.*avg_us=([0-9.]+).*/\1/' <<<"$pdm")
  b=$(sed -E 's/.*bcast_us=([0-9.]+) .*/\1/' <<<"$base")
  a=$(sed -E 's/.*bcast_ack_us=([0-9.]+).*/\1/' <<<"$base")
  python3 -c "print(f'(a) N=$n  pdm create-visible-everywhere {float($p):8.1f} us | MPI_Bcast {float($b):6.1f} us -> ratio {float($p)/float($b):5.2f}x | MPI_Bcast+ack {float($a):6.1f} us -> ratio {float($p)/float($a):5.2f}x')"
done

dir=$(mktemp -d /tmp/pdm-bench-XXXXXX)
PDM_BACKING_SIZE=64M scripts/localcluster.sh up 3 "$dir" >/dev/null
ev=$("$bin/bench_pdm_client" event "$dir/state" 1 2 "$iters")
same=$("$bin/bench_pdm_client" event "$dir/state" 1 1 "$iters")
scripts/localcluster.sh down "$dir" >/dev/null; rm -rf "$dir"
tcp=$("$bin/bench_pingpong" tcp $((iters * 5)))
unix=$("$bin/bench_pingpong" unix $((iters * 5)))
e=$(sed -E 's/.*avg_us=([0-9.]+).*/\1/' <<<"$ev")
s=$(sed -E 's/.*avg_us=([0-9.]+).*/\1/' <<<"$same")
t=$(sed -E 's/.*rtt_us=([0-9.]+).*/\1/' <<<"$tcp")
u=$(sed -E 's/.*rtt_us=([0-9.]+).*/\1/' <<<"$unix")
python3 -c "print(f'(b) sync event node1->session node2 {float($e):8.1f} us | 2 x TCP ping-pong {2*float($t):6.1f} us -> ratio {float($e)/(2*float($t)):5.2f}x')"
python3 -c "print(f'    sync event, session on the raising node {float($s):8.1f} us | 2 x unix ping-pong {2*float($u):6.1f} us -> ratio {float($s)/(2*float($u)):5.2f}x')"
