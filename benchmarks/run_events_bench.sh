#!/usr/bin/env bash
# Kernel data events, pdm and baselines in one run:
#  (1) a cached 1 GiB read of an unmanaged file through a view with the
#      cluster running vs the same read with pdmd stopped (views mounted)
#  (2) a synchronous data event raised by a read and answered by a DMAPI
#      client on the same node vs a raw fanotify responder + a raw Unix
#      ping-pong; (3) the same with the session on another node (+ TCP)
# usage: benchmarks/run_events_bench.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
bin=build/bin
dir=$(mktemp -d /tmp/pdm-bench-XXXXXX)
trap 'scripts/localcluster.sh down "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
PDM_BACKING_SIZE=2G scripts/localcluster.sh up 2 "$dir" >/dev/null
v0=$dir/node0

readgib() {  # best of 3 cached reads of 1 GiB, in seconds
  local best=999
  for _ in 1 2 3; do
    local t0 t1
    t0=$(date +%s.%N)
    dd if="$v0/big.dat" of=/dev/null bs=1M status=none
    t1=$(date +%s.%N)
    best=$(python3 -c "print(min($best, $t1 - $t0))")
  done
  echo "$best"
}
dd if=/dev/zero of="$v0/big.dat" bs=1M count=1024 status=none
cat "$v0/big.dat" > /dev/null
on=$(readgib)

echo x > "$v0/ev.dat"
same=$(
  DMAPI_SOCKET=$dir/state/node0.sock $bin/bench_dmapi responder "$v0" "$v0/ev.dat" "$n" > "$dir/resp0.out" &
  until grep -q ready "$dir/resp0.out" 2>/dev/null; do sleep 0.05; done
  $bin/bench_dmapi reader "$v0/ev.dat" "$n"; wait)
other=$(
  DMAPI_SOCKET=$dir/state/node1.sock $bin/bench_dmapi responder "$dir/node1" "$dir/node1/ev.dat" "$n" > "$dir/resp1.out" &
  until grep -q ready "$dir/resp1.out" 2>/dev/null; do sleep 0.05; done
  $bin/bench_dmapi reader "$v0/ev.dat" "$n"; wait)

# pdmd stopped, views still mounted: the baseline for (1).
kill -TERM "$(cat "$dir/state/mpirun.pid")"; sleep 2
off=$(readgib)

fan=$($bin/bench_fanotify --reads "$n" --dir "$dir" | sed -nE 's/^group +reads=[0-9]+ +avg= *([0-9.]+) us.*/\1/p')
unix=$($bin/bench_pingpong unix "$n" | sed -E 's/.*rtt_us=([0-9.]+).*/\1/')
tcp=$($bin/bench_pingpong tcp "$n" | sed -E 's/.*rtt_us=([0-9.]+).*/\1/')
s=$(sed -E 's/.*=([0-9.]+)/\1/' <<<"$same")
o=$(sed -E 's/.*=([0-9.]+)/\1/' <<<"$other")
python3 - <<PY
on, off = $on, $off
print(f"(1) 1 GiB cached read, unmanaged file: cluster running {1024/on:7.0f} MiB/s | pdmd stopped {1024/off:7.0f} MiB/s -> {on/off:5.3f}x time")
fan = float("${fan:-0}"); unix = $unix; tcp = $tcp
base = fan + unix
print(f"(2) data event, session on the reading node {$s:7.1f} us | raw fanotify {fan:6.1f} + unix ping-pong {unix:6.1f} = {base:6.1f} us -> {($s)/base if base else 0:5.2f}x")
print(f"(3) data event, session on another node    {$o:7.1f} us | + 2 x TCP ping-pong {2*tcp:6.1f}: {base+2*tcp:6.1f} us -> {($o)/(base+2*tcp) if base else 0:5.2f}x")
PY
