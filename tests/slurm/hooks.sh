#!/usr/bin/env bash
# The prolog/epilog examples in a real Slurm (the fixture configures them):
# the prolog hands pdm-recall -i the job's declared inputs, only the regular
# files the job's user can read; the epilog removes SCRATCH/$SLURM_JOB_ID and
# never goes through a symlink put in its place.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
hooks=$LOCALSLURM_DIR.hooks
scratch=$hooks/scratch
[ -f "$hooks/slurm.env" ] || fail "no $hooks: the fixture did not set up the hooks"

work=$(mktemp -d /tmp/pdm-slurm-hooks.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
# A job stays listed (COMPLETING) until its epilog is done. Each job here
# starts on an idle node: srun --uid that has to wait in the queue for its
# allocation loses the controller's answer (Slurm 22.05).
job_gone() { [ -z "$(timeout 5 squeue -h -j "$1" -o %i 2>/dev/null)" ]; }
settle() { eventually 30 job_gone "$1" || fail "job $1 still listed 30 s after its end (epilog hung?)"; }
echo a > "$work/in1"; echo b > "$work/in2"; echo c > "$work/secret"
chmod 644 "$work/in1" "$work/in2"; chmod 600 "$work/secret"
mkdir "$work/adir"
printf '%s\n' "$work/in1" "$work/missing" "$work/adir" "$work/secret" "$work/in2" > "$work/list"
chmod 644 "$work/list"

# Prolog, as root: every regular file is kept, in order.
job=$(srun_t -n 1 --comment="pdm-inputs=$work/list" printenv SLURM_JOB_ID) || fail "srun with --comment failed"
[ -f "$hooks/recall.$job" ] || fail "prolog did not call pdm-recall for job $job"
[ "$(cat "$hooks/recall.$job")" = "$(printf '%s\n' "$work/in1" "$work/secret" "$work/in2")" ] ||
  fail "root job: pdm-recall got $(cat "$hooks/recall.$job")"
settle "$job"
# As nobody: the root-only file is not staged on that user's behalf.
job=$(cd /tmp && srun_t -n 1 --uid=nobody --gid=nogroup --comment="pdm-inputs=$work/list" printenv SLURM_JOB_ID) ||
  fail "srun --uid=nobody failed"
[ "$(cat "$hooks/recall.$job" 2>/dev/null)" = "$(printf '%s\n' "$work/in1" "$work/in2")" ] ||
  fail "nobody's job: pdm-recall got '$(cat "$hooks/recall.$job" 2>/dev/null)'"
settle "$job"
# No declaration, no recall.
job=$(srun_t -n 1 printenv SLURM_JOB_ID)
[ ! -e "$hooks/recall.$job" ] || fail "prolog recalled for a job without pdm-inputs"
settle "$job"

# Epilog: the job's scratch directory goes when the job ends.
# shellcheck disable=SC2016 # expanded in the job
job=$(srun_t -n 1 bash -c 'd=$0/$SLURM_JOB_ID; mkdir -p "$d/x/y"; echo 1 > "$d/x/y/f"; ln -s /etc "$d/etc"; echo "$SLURM_JOB_ID"' "$scratch") ||
  fail "scratch job failed"
[ -n "$job" ] || fail "no job id"
settle "$job"
[ ! -e "$scratch/$job" ] || fail "epilog left $scratch/$job: $(find "$scratch/$job")"
[ -f /etc/hostname ] || fail "the epilog followed a symlink"
# A job that swaps its scratch dir for a symlink gets nothing removed through it.
mkdir "$work/victim"; echo keep > "$work/victim/file"
# shellcheck disable=SC2016 # expanded in the job
job=$(srun_t -n 1 bash -c 'ln -s "$1" "$0/$SLURM_JOB_ID"; echo "$SLURM_JOB_ID"' "$scratch" "$work/victim")
settle "$job"
[ -f "$work/victim/file" ] || fail "the epilog removed files through a symlinked scratch dir"
rm -f "$scratch/$job"
echo "ok: prolog staged the readable declared inputs; epilog removed the job's scratch, not through a symlink"
