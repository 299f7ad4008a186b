#!/usr/bin/env bash
# The cluster failover demo (the main demo, scripts/demo.sh, shows the HSM):
# a 4-node cluster on this host, sessions created on several nodes and seen
# from every node, then the session manager killed with kill -9, a new one
# elected, and every session still there.
#
# Installs what is missing, builds, runs, prints what happened, cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/install-deps.sh >/dev/null
echo "== building (build/)"
cmake -S . -B build -G Ninja >/dev/null
cmake --build build -j2 >/dev/null

dir=$(mktemp -d /tmp/pdm-demo-XXXXXX)
cleanup() { "$root/scripts/localcluster.sh" down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
cli() { DMAPI_SOCKET="$dir/state/node$1.sock" "$root/build/bin/pdm-cluster" "${@:2}"; }
smpid() { python3 -c "import json,sys; d=json.load(open('$dir/state/cluster.json')); print(d['nodes'][d['session_manager']]['pid'])"; }

echo
echo "== starting a 4-node cluster (mpirun -np 4 pdmd) in $dir"
PDM_BACKING_SIZE=512M "$root/scripts/localcluster.sh" up 4 "$dir" -- --heartbeat-timeout-ms 1000
cli 0 status

echo
echo "== DM applications create sessions on nodes 1, 2 and 3"
for k in 1 2 3; do
  sid=$(cli "$k" create-session --info "migration app on node $k")
  echo "node $k: dm_create_session -> sid $sid"
done

echo
echo "== every node sees every session (the session manager distributed them)"
for k in 0 1 2 3; do
  echo "-- asked node $k:"
  cli "$k" sessions
done

sm=$(python3 -c "import json; print(json.load(open('$dir/state/cluster.json'))['session_manager'])")
pid=$(smpid)
echo
echo "== kill -9 of the session manager (node $sm, pid $pid)"
t0=$(date +%s.%N)
kill -9 "$pid"
while [ "$(python3 -c "import json; print(json.load(open('$dir/state/cluster.json'))['session_manager'])")" = "$sm" ]; do
  sleep 0.01
done
t1=$(date +%s.%N)
printf 'new session manager elected in %.3f s\n' "$(echo "$t1 - $t0" | bc -l 2>/dev/null || python3 -c "print($t1-$t0)")"
cli 3 status

echo
echo "== the sessions survived; a new one gets a fresh id"
cli 2 sessions
sid=$(cli 3 create-session --info "created after the failover")
echo "node 3: dm_create_session -> sid $sid"
cli 1 sessions

echo
echo "== demo done: sessions on 3 nodes, visible on all 4, SM killed and re-elected, nothing lost"
