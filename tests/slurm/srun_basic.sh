#!/usr/bin/env bash
# (a) The local Slurm runs jobs: srun -n 2 hostname on the one node, and a
# 4-task step with --ntasks-per-node=4 (more tasks than this host's cores:
# the node declares LOCALSLURM_CPUS), and an MPI step through PMIx.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

node_state=$(timeout 10 sinfo -h -N -o %T)
[ "$node_state" = idle ] || [ "$node_state" = mixed ] || fail "node state '$node_state', want idle"

out=$(srun_t -n 2 hostname) || fail "srun -n 2 hostname failed"
[ "$(printf '%s\n' "$out" | wc -l)" -eq 2 ] || fail "want 2 lines from srun -n 2 hostname, got: $out"
[ "$(printf '%s\n' "$out" | sort -u)" = "$(hostname)" ] || fail "tasks ran on '$out', want $(hostname)"

ranks=$(srun_t -n 4 --ntasks-per-node=4 printenv SLURM_PROCID | sort -n | tr '\n' ' ')
[ "$ranks" = "0 1 2 3 " ] || fail "4-task step gave SLURM_PROCIDs '$ranks'"

srun_t --mpi=list 2>&1 | grep -qw pmix || fail "srun --mpi=list shows no pmix"
# PMIx is what pdmd and the tools bootstrap with: a task sees its PMIx rank.
ranks=$(srun_t -n 2 --mpi=pmix printenv PMIX_RANK | sort -n | tr '\n' ' ')
[ "$ranks" = "0 1 " ] || fail "srun --mpi=pmix gave PMIX_RANKs '$ranks'"
echo "ok: srun on the local Slurm ($(timeout 10 sinfo -h -N -o '%N %c CPUs %T'))"
