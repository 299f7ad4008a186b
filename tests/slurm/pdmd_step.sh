#!/usr/bin/env bash
# (b) pdmd as a Slurm job step: scripts/localcluster.sh with PDM_LAUNCHER=srun
# starts 4 ranks as one srun --mpi=pmix step (loop ext4 backing, bind-mount
# views as in the mpirun tests).
#   pdmd_step.sh status   every rank is a task of the step and serves; a session manager
#   pdmd_step.sh kill9    kill -9 of the session manager, then of another rank:
#                         the step stays, the survivors serve and elect a new SM
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
mode=${1:?status|kill9}
n=4

[ -x "$bin/pdmd" ] || fail "no $bin/pdmd (build the pdmd target)"
[ -x "$bin/pdm-cluster" ] || fail "no $bin/pdm-cluster (build the pdm-cluster target)"
dir=$(mktemp -d /tmp/pdm-slurm-cluster.XXXXXX)
cleanup() {
  timeout 60 "$PDM_SOURCE_DIR/scripts/localcluster.sh" down "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

PDM_LAUNCHER=srun PDM_BUILD=$PDM_BINARY_DIR PDM_BACKING_SIZE=256M PDM_UP_TIMEOUT=60 \
  timeout 120 "$PDM_SOURCE_DIR/scripts/localcluster.sh" up "$n" "$dir" -- --heartbeat-timeout-ms 1000 ||
  fail "localcluster.sh up with PDM_LAUNCHER=srun failed"

job=$(timeout 10 squeue -h -n pdmd -o %i | head -1)
[ -n "$job" ] || fail "no pdmd job in squeue"
timeout 10 scontrol show step "$job.0" | grep -q "Tasks=$n " || {
  timeout 10 scontrol show step "$job.0" >&2; fail "step $job.0 does not have $n tasks"; }

status() {  # status K: pdm-cluster status --json through node K's socket, into $dir/status.json
  timeout 10 "$bin/pdm-cluster" --socket "$dir/state/node$1.sock" --json status > "$dir/status.json" 2>/dev/null
}
rank_pid() { json_get "$dir/state/cluster.json" "j['nodes'][$1]['pid']"; }

status 1 || fail "pdm-cluster status through node1.sock failed"
[ "$(json_get "$dir/status.json" "len(j['nodes'])")" -eq "$n" ] || fail "status lists not $n nodes: $(cat "$dir/status.json")"
[ "$(json_get "$dir/status.json" "all(x['alive'] for x in j['nodes'])")" = True ] || fail "not all alive: $(cat "$dir/status.json")"
[ "$(json_get "$dir/status.json" "j['session_manager']")" -eq 0 ] || fail "session manager is not rank 0: $(cat "$dir/status.json")"
# The ranks are Slurm's tasks, not processes that merely share the host.
pids=$(timeout 10 scontrol listpids "$job" | awk 'NR > 1 {print $1}')
for ((k = 0; k < n; k++)); do
  printf '%s\n' "$pids" | grep -qx "$(rank_pid "$k")" || fail "rank $k (pid $(rank_pid "$k")) is not a task of job $job"
done

if [ "$mode" = status ]; then
  echo "ok: $n pdmd ranks serve as step $job.0; session manager rank 0"
  exit 0
fi

# kill -9 the session manager (rank 0), then rank 3.
for victim in 0 3; do
  kill -KILL "$(rank_pid "$victim")" || fail "kill -9 rank $victim"
  dead_and_served() {
    status 1 && [ "$(json_get "$dir/status.json" "j['nodes'][$victim]['alive']")" = False ]
  }
  eventually 20 dead_and_served || {
    tail -20 "$dir/state/pdmd.log" >&2
    fail "after kill -9 of rank $victim, node1 does not serve a status with rank $victim dead"
  }
  timeout 10 squeue -h -s -o %i | grep -qx "$job.0" || { tail -20 "$dir/state/pdmd.log" >&2;
    fail "step $job.0 ended after kill -9 of rank $victim: Slurm's mpi/pmix killed the other tasks (a task that dies while still a PMIx client ends the step; pdmd must MPI_Finalize once bootstrap is done, see docs/slurm.md)"; }
done
# Survivors: ranks 1 and 2; the new session manager is the lowest live rank.
for k in 1 2; do
  status "$k" || fail "rank $k does not answer after the kills"
  [ "$(json_get "$dir/status.json" "j['session_manager']")" -eq 1 ] ||
    fail "rank $k: session manager is not rank 1: $(cat "$dir/status.json")"
  [ "$(json_get "$dir/status.json" "[x['alive'] for x in j['nodes']]")" = "[False, True, True, False]" ] ||
    fail "rank $k: liveness $(cat "$dir/status.json")"
done
echo "ok: step $job.0 survived kill -9 of ranks 0 and 3; ranks 1, 2 serve, rank 1 is session manager"
