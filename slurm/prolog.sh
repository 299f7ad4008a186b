#!/usr/bin/env bash
# Slurm Prolog example: prestage a job's declared inputs before it starts, so
# its first reads do not wait for the archive one file at a time.
#
# Install (slurm.conf on every compute node):
#   Prolog=/etc/slurm/pdm-prolog.sh        # a copy of this file, root-owned, 0755
#   PrologFlags=Alloc                      # run at allocation, before the batch script
#
# A user declares inputs with a file list (one path a line; a pdm-walk
# catalog works too) named in the job's comment:
#   sbatch --comment=pdm-inputs=/home/me/run42.files job.sh
# The prolog runs as root on every node of the job; on the first node only
# (the list is for the whole job; the recall is cluster-wide) it calls
#   pdm-recall -i LIST
# which orders the recalls by archive locality and runs them through pdm's
# coordinator in parallel.
#
# Settings: /etc/pdm/slurm.env, if it exists, is sourced first (a Prolog runs
# with an almost empty environment): PDM_BIN (where pdm-recall is; default
# /usr/local/bin), DMAPI_SOCKET, PDM_PROLOG_WAIT ("yes": hold the job until
# the recall is done, up to PDM_PROLOG_TIMEOUT seconds, default 600; else
# start the recall in the background and let the job start at once: reads of
# files not yet back simply wait for them).
#
# Safety: the list is read as the job's user, and only files that user can
# read are recalled, so a job cannot make root stage someone else's data.
# A Prolog that exits non-zero DRAINS THE NODE and requeues the job: this
# one logs every problem to syslog (tag pdm-prolog) and exits 0, unless
# PDM_PROLOG_STRICT=yes makes a failed recall fail the job start.
set -euo pipefail

conf=${PDM_SLURM_ENV:-/etc/pdm/slurm.env}
# shellcheck source=/dev/null
[ -r "$conf" ] && . "$conf"
PATH=/usr/sbin:/usr/bin:/sbin:/bin  # a Prolog has no search path of its own
bin=${PDM_BIN:-/usr/local/bin}
log() { logger -t pdm-prolog -- "job ${SLURM_JOB_ID:-?}: $*" 2>/dev/null || echo "pdm-prolog: $*" >&2; }
bail() { log "$*"; [ "${PDM_PROLOG_STRICT:-}" = yes ] && exit 1; exit 0; }

# Only jobs that declared inputs.
comment=${SLURM_JOB_COMMENT:-}
case "$comment" in
  *pdm-inputs=*) ;;
  *) exit 0 ;;
esac
list=${comment#*pdm-inputs=}
list=${list%%[[:space:],;]*}  # the comment may carry other words after it
[[ "$list" = /* ]] || bail "pdm-inputs must be an absolute path, got '$list'"

# First node of the job only.
first=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-}}" 2>/dev/null | head -1 || true)
[ -z "$first" ] || [ "$first" = "${SLURMD_NODENAME:-$(hostname -s)}" ] || exit 0

[ -x "$bin/pdm-recall" ] || bail "no $bin/pdm-recall; inputs not prestaged"
uid=${SLURM_JOB_UID:?}
gid=${SLURM_JOB_GID:-$uid}
work=$(mktemp -d /tmp/pdm-prolog.XXXXXX)
trap 'rm -rf "$work"' EXIT

# As the user: read the list, keep the readable regular files. A catalog
# (.h5) is passed on whole once the user can read it (pdm-recall checks
# each entry itself).
as_user() { setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"; }
case "$list" in
  *.h5)
    as_user test -r "$list" || bail "user cannot read $list"
    cp -- "$list" "$work/inputs.h5"
    staged=$work/inputs.h5
    ;;
  *)
    # shellcheck disable=SC2016 # expanded by the user's bash
    as_user bash -c 'while IFS= read -r p || [ -n "$p" ]; do
                       [ -n "$p" ] && [ -f "$p" ] && [ -r "$p" ] && printf "%s\n" "$p"
                     done < "$1"' _ "$list" > "$work/inputs.txt" ||
      bail "user cannot read the list $list"
    staged=$work/inputs.txt
    [ -s "$staged" ] || bail "no readable file in $list"
    ;;
esac

if [ "${PDM_PROLOG_WAIT:-}" = yes ]; then
  if timeout "${PDM_PROLOG_TIMEOUT:-600}" "$bin/pdm-recall" -i "$staged" > "$work/recall.log" 2>&1; then
    log "prestaged $(wc -l < "$staged" 2>/dev/null || echo ?) inputs from $list"
  else
    bail "pdm-recall -i $list failed: $(tail -3 "$work/recall.log" | tr '\n' ' ')"
  fi
else
  # Detached: the job starts now. The copy of the list outlives this script.
  keep=$(mktemp /tmp/pdm-prolog-inputs.XXXXXX)
  cp -- "$staged" "$keep"
  # shellcheck disable=SC2016 # expanded by the detached bash
  setsid bash -c '"$0" -i "$1" > /dev/null 2>&1; rm -f "$1"' "$bin/pdm-recall" "$keep" < /dev/null > /dev/null 2>&1 &
  log "prestaging inputs from $list in the background"
fi
exit 0
