#!/usr/bin/env bash
# Slurm Epilog example: remove a job's private scratch directory when the job
# ends, with pdm-purge (parallel unlink, never follows a symlink out of the
# tree, exit status says whether everything went).
#
# Install (slurm.conf on every compute node):
#   Epilog=/etc/slurm/pdm-epilog.sh        # a copy of this file, root-owned, 0755
#
# The convention: a job writes its temporary files under SCRATCH/$SLURM_JOB_ID
# (a TaskProlog or the job script creates it: mkdir -p "$SCRATCH/$SLURM_JOB_ID").
# This epilog removes that directory, and nothing else, once the job is over.
#
# Settings: /etc/pdm/slurm.env, if it exists, is sourced first (an Epilog
# runs with an almost empty environment): PDM_SCRATCH (the scratch root,
# required), PDM_BIN (where pdm-purge is; default /usr/local/bin),
# PDM_SCRATCH_LOCAL ("yes": scratch is node-local, clean it on every node;
# default: shared, cleaned by the job's first node only).
#
# An Epilog that exits non-zero DRAINS THE NODE: a directory that could not
# be removed is logged (syslog tag pdm-epilog) and left for the periodic
# purge (slurm/purge.sbatch); the script exits 0.
set -euo pipefail

conf=${PDM_SLURM_ENV:-/etc/pdm/slurm.env}
# shellcheck source=/dev/null
[ -r "$conf" ] && . "$conf"
PATH=/usr/sbin:/usr/bin:/sbin:/bin  # an Epilog has no search path of its own
bin=${PDM_BIN:-/usr/local/bin}
log() { logger -t pdm-epilog -- "job ${SLURM_JOB_ID:-?}: $*" 2>/dev/null || echo "pdm-epilog: $*" >&2; }

scratch=${PDM_SCRATCH:-}
[ -n "$scratch" ] || { log "PDM_SCRATCH not set; nothing to clean"; exit 0; }
job=${SLURM_JOB_ID:-}
[[ "$job" =~ ^[0-9]+$ ]] || { log "bad SLURM_JOB_ID '$job'"; exit 0; }

if [ "${PDM_SCRATCH_LOCAL:-}" != yes ]; then
  first=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-}}" 2>/dev/null | head -1 || true)
  [ -z "$first" ] || [ "$first" = "${SLURMD_NODENAME:-$(hostname -s)}" ] || exit 0
fi

dir=$scratch/$job
[ -e "$dir" ] || [ -L "$dir" ] || exit 0
# The user owns this directory and may have swapped it for a symlink to
# anything: never remove through one.
if [ -L "$dir" ] || [ ! -d "$dir" ]; then
  log "$dir is not a plain directory; left alone"
  exit 0
fi

if [ -x "$bin/pdm-purge" ]; then
  # Everything in it (--all: whatever its age, even files written a moment
  # ago), emptied directories too (--rmdir, deepest first); --json summary to
  # the log.
  # A clean environment: with the epilog's SLURM_* variables set, Open MPI's
  # singleton start-up looks for a job step to join and aborts.
  if out=$(env -i PATH="$PATH" HOME=/root "$bin/pdm-purge" "$dir" --all --rmdir --json 2>&1); then
    log "purged $dir: $out"
  else
    log "pdm-purge $dir failed: $(printf '%s' "$out" | tail -3 | tr '\n' ' ')"
  fi
else
  # Without pdm: rm does not follow symlinks either; stay on this file system.
  rm -rf --one-file-system -- "$dir" || log "rm -rf $dir failed"
fi
# pdm-purge empties the tree; the job's directory itself goes here.
rmdir -- "$dir" 2>/dev/null || [ ! -e "$dir" ] || log "$dir could not be removed entirely"
exit 0
