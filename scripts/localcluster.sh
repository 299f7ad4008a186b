#!/usr/bin/env bash
# A pdm cluster on one host, for tests and the demo.
#
#   scripts/localcluster.sh up N DIR [-- extra pdmd options]
#   scripts/localcluster.sh down DIR
#   scripts/localcluster.sh status DIR
#
# up: DIR/backing is the shared storage (an ext4 file system in a loop image,
# DIR/backing.img, so that fanotify pre-content events work and the "shared
# file system" has an identity of its own; a plain directory where loop
# devices are unavailable), DIR/node0..N-1 are bind mounts of it (node k's
# view: a program "on node k" uses DIR/nodek/...), DIR/archive and DIR/state.
# It starts mpirun -np N build/bin/pdmd and waits until DIR/state/cluster.json
# lists every rank. MPI bootstrap traffic stays on the loopback interface.
#
# Environment: PDM_BUILD (default ./build), PDM_BACKING_SIZE (default 4G),
# PDM_MKFS_EXT4_E (mkfs.ext4 -E options; the default defers inode-table
# zeroing to a kernel thread, which benchmarks must not measure),
# PDM_UP_TIMEOUT seconds (default 60), PDM_LAUNCHER (default mpirun; srun
# starts the same ranks as one Slurm job step, srun --mpi=pmix, on the Slurm
# that SLURM_CONF names, e.g. slurm/localslurm.sh's; PDM_SRUN_ARGS adds srun
# options). state/mpirun.pid holds the launcher's pid either way.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${PDM_BUILD:-$here/build}
launcher=${PDM_LAUNCHER:-mpirun}

die() { echo "localcluster: $*" >&2; exit 1; }

cluster_up() {
  local n=$1 dir=$2; shift 2
  [ "${1:-}" = "--" ] && shift
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] || die "N must be a positive number, got '$n'"
  [ -x "$build/bin/pdmd" ] || die "no $build/bin/pdmd: build first (cmake --build build)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -e "$dir/state/mpirun.pid" ] && kill -0 "$(cat "$dir/state/mpirun.pid")" 2>/dev/null &&
    die "a cluster is already running in $dir (localcluster.sh down $dir)"
  mkdir -p "$dir/backing" "$dir/archive" "$dir/state"
  rm -f "$dir/state/cluster.json" "$dir/state"/node*.sock
  if ! mountpoint -q "$dir/backing"; then
    if truncate -s "${PDM_BACKING_SIZE:-4G}" "$dir/backing.img" 2>/dev/null &&
       mkfs.ext4 -q -F -E "${PDM_MKFS_EXT4_E:-lazy_itable_init=1,lazy_journal_init=1}" "$dir/backing.img" >/dev/null 2>&1 &&
       mount -o loop "$dir/backing.img" "$dir/backing" 2>/dev/null; then
      rmdir "$dir/backing/lost+found" 2>/dev/null || true
    else
      rm -f "$dir/backing.img"
      echo "localcluster: no loop device; $dir/backing is a plain directory" >&2
    fi
  fi
  for ((k = 0; k < n; k++)); do
    mkdir -p "$dir/node$k"
    mountpoint -q "$dir/node$k" || mount --bind "$dir/backing" "$dir/node$k"
  done
  echo "$n" > "$dir/state/size"
  local pdmd=("$build/bin/pdmd" --fs-root "$dir/backing" --view "$dir/node%r" --state-dir "$dir/state" "$@")
  case "$launcher" in
    mpirun)
      setsid mpirun --allow-run-as-root --oversubscribe --enable-recovery -np "$n" \
        --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
        "${pdmd[@]}" > "$dir/state/pdmd.log" 2>&1 < /dev/null &
      ;;
    srun)
      command -v srun >/dev/null || die "PDM_LAUNCHER=srun but no srun (slurm/localslurm.sh up, then source its env)"
      # All N ranks on the one Slurm node of a single host; --overcommit: the
      # step takes one CPU, not N. A rank's death (kill -9) must not end the
      # step: --kill-on-bad-exit=0 keeps the other tasks running (what
      # --enable-recovery does for mpirun), --no-kill keeps the job if a node
      # fails. The MCA settings reach the ranks through srun's environment.
      # shellcheck disable=SC2086 # PDM_SRUN_ARGS is a list of options
      OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo \
        setsid srun --mpi=pmix --job-name=pdmd -N 1 -n "$n" --ntasks-per-node="$n" --overcommit \
        --kill-on-bad-exit=0 --no-kill ${PDM_SRUN_ARGS:-} \
        "${pdmd[@]}" > "$dir/state/pdmd.log" 2>&1 < /dev/null &
      ;;
    *) die "PDM_LAUNCHER must be mpirun or srun, got '$launcher'" ;;
  esac
  echo $! > "$dir/state/mpirun.pid"
  local deadline=$((SECONDS + ${PDM_UP_TIMEOUT:-60}))
  while :; do
    if [ -s "$dir/state/cluster.json" ] &&
       [ "$(grep -c '"rank"' "$dir/state/cluster.json")" -eq "$n" ]; then
      break
    fi
    if ! kill -0 "$(cat "$dir/state/mpirun.pid")" 2>/dev/null; then
      tail -20 "$dir/state/pdmd.log" >&2
      die "pdmd exited during start (log: $dir/state/pdmd.log)"
    fi
    [ $SECONDS -lt $deadline ] || { tail -20 "$dir/state/pdmd.log" >&2; die "cluster not up after ${PDM_UP_TIMEOUT:-60}s"; }
    sleep 0.1
  done
  echo "localcluster: $n nodes up in $dir (views $dir/node0..$((n - 1)), log $dir/state/pdmd.log)"
}

cluster_down() {
  local dir=$1
  [ -d "$dir" ] || die "no such directory: $dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/state/mpirun.pid" ]; then
    local pid
    pid=$(cat "$dir/state/mpirun.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/state/mpirun.pid"
  fi
  # Ranks that outlived mpirun (e.g. after a test's kill -9 games).
  pkill -KILL -f "pdmd .*--state-dir $dir/state" 2>/dev/null || true
  # The event supervisors outlive their agents on purpose; SIGTERM detaches
  # them (waiting accesses fail with EIO, never read holes).
  for f in "$dir"/state/node*.eventd.sock.pid; do
    [ -f "$f" ] || continue
    kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  for _ in $(seq 1 30); do
    ls "$dir"/state/node*.eventd.sock.pid >/dev/null 2>&1 || break
    sleep 0.1
  done
  pkill -KILL -f "pdm-eventd .*--socket $dir/state/" 2>/dev/null || true
  rm -f "$dir"/state/node*.eventd.sock.pid
  sleep 0.2
  for v in "$dir"/node*; do
    [ -d "$v" ] || continue
    mountpoint -q "$v" && { umount "$v" 2>/dev/null || umount -l "$v"; }
    rmdir "$v" 2>/dev/null || true
  done
  if mountpoint -q "$dir/backing"; then umount "$dir/backing" 2>/dev/null || umount -l "$dir/backing"; fi
  rm -f "$dir/backing.img"
  echo "localcluster: down ($dir)"
}

case "${1:-}" in
  up) [ $# -ge 3 ] || die "usage: $0 up N DIR [-- pdmd options]"; shift; cluster_up "$@" ;;
  down) [ $# -eq 2 ] || die "usage: $0 down DIR"; cluster_down "$2" ;;
  status) [ $# -eq 2 ] || die "usage: $0 status DIR"; cat "$2/state/cluster.json" ;;
  *) echo "usage: $0 up N DIR [-- pdmd options] | down DIR | status DIR" >&2; exit 2 ;;
esac
