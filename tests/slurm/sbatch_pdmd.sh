#!/usr/bin/env bash
# slurm/pdmd.sbatch submitted as it is (2 ranks on the one node): the service
# comes up as a batch job, answers pdm-cluster, and scancel ends it cleanly.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
[ -x "$bin/pdmd" ] || fail "no $bin/pdmd"
dir=$(mktemp -d /tmp/pdm-slurm-sbatch.XXXXXX)
job=""
cleanup() {
  [ -n "$job" ] && timeout 10 scancel "$job" 2>/dev/null
  eventually 30 job_gone || true
  rm -rf "$dir"
}
job_gone() { [ -z "$(timeout 5 squeue -h -j "$job" -o %i 2>/dev/null)" ]; }
trap cleanup EXIT
mkdir -p "$dir/fs" "$dir/state"

job=$(cd "$dir" && PDM_FS_ROOT=$dir/fs PDM_STATE_DIR=$dir/state PDM_BIN=$bin PDM_RANKS_PER_NODE=2 \
  PDMD_ARGS="--heartbeat-timeout-ms 1000 --events off" \
  timeout 30 sbatch --parsable --nodes=1 --time=5 --output="$dir/job.log" "$PDM_SOURCE_DIR/slurm/pdmd.sbatch") ||
  fail "sbatch slurm/pdmd.sbatch failed"
two_ranks() { [ -s "$dir/state/cluster.json" ] && [ "$(grep -c '"rank"' "$dir/state/cluster.json")" -eq 2 ]; }
eventually 60 two_ranks || { cat "$dir/job.log" >&2; fail "pdmd.sbatch job $job: no 2-rank cluster.json after 60 s"; }
timeout 10 "$bin/pdm-cluster" --socket "$dir/state/node1.sock" --json status > "$dir/status.json" ||
  fail "pdm-cluster status through the batch job's node1.sock failed"
[ "$(json_get "$dir/status.json" "[x['alive'] for x in j['nodes']]")" = "[True, True]" ] || fail "status: $(cat "$dir/status.json")"
timeout 10 scancel "$job" || fail "scancel $job"
eventually 60 job_gone || fail "job $job still there 60 s after scancel"
job=""
echo "ok: slurm/pdmd.sbatch served 2 ranks as a batch job and ended on scancel"
