#!/usr/bin/env bash
# (c) An admin tool launched with srun on the local Slurm, on a small tree,
# and its effect checked. A tool that is not in the build yet is a skip
# (exit 77) with the reason.
#   tool.sh pdm-walk | pdm-purge | pdm-migrate
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
tool=${1:?tool name}
[ -x "$bin/$tool" ] || skip "$tool is not built in $bin (issue 6 is adding it)"

work=$(mktemp -d /tmp/pdm-slurm-tool.XXXXXX)
cluster=""
cleanup() {
  [ -n "$cluster" ] && timeout 60 "$PDM_SOURCE_DIR/scripts/localcluster.sh" down "$cluster" >/dev/null 2>&1
  rm -rf "$work" ${cluster:+"$cluster"}
}
trap cleanup EXIT

# make_tree ROOT: 3 directories x 20 files, one nested level, a symlink that
# points out of the tree (no tool may follow it). Prints the entry count
# (files, directories, symlinks; ROOT excluded).
make_tree() {
  local root=$1 d f
  mkdir -p "$root"
  for d in a b c; do
    mkdir -p "$root/$d/sub"
    for f in $(seq 1 10); do
      printf '%s %s\n' "$d" "$f" > "$root/$d/f$f"
      head -c $((f * 100)) /dev/zero > "$root/$d/sub/g$f"
    done
  done
  ln -s /etc "$root/a/outside"
  find "$root" -mindepth 1 | wc -l
}

case "$tool" in
  pdm-walk)
    entries=$(make_tree "$work/tree")
    srun_t -n 4 --overcommit --mpi=pmix "$bin/pdm-walk" "$work/tree" -o "$work/scan.h5" --json \
      > "$work/walk.json" || fail "srun pdm-walk exited $?"
    [ -s "$work/scan.h5" ] || fail "no catalog $work/scan.h5"
    # One row per entry: some 1-D dataset of the catalog has that many rows
    # (the root itself may or may not be a row).
    h5ls -r "$work/scan.h5" > "$work/h5ls.txt" || fail "h5ls cannot read the catalog"
    grep -Eq "Dataset \{($entries|$((entries + 1)))(/|\})" "$work/h5ls.txt" ||
      fail "no catalog dataset with $entries rows: $(cat "$work/h5ls.txt")"
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$work/walk.json" || fail "--json output is not JSON"
    echo "ok: srun -n 4 pdm-walk cataloged $entries entries"
    ;;
  pdm-purge)
    make_tree "$work/tree" > /dev/null
    # Old: everything under b/ (atime and mtime 40 days ago); the rest is new.
    find "$work/tree/b" -type f -exec touch -a -m -d '40 days ago' {} +
    old=$(find "$work/tree/b" -type f | sort)
    nold=$(printf '%s\n' "$old" | wc -l)
    before=$(find "$work/tree" -mindepth 1 | sort)
    srun_t -n 2 --overcommit --mpi=pmix "$bin/pdm-purge" "$work/tree" --older-than 30d --dryrun --json \
      --report "$work/report.txt" > "$work/dry.json" || fail "srun pdm-purge --dryrun exited $?"
    [ "$(find "$work/tree" -mindepth 1 | sort)" = "$before" ] || fail "--dryrun changed the tree"
    [ "$(json_get "$work/dry.json" "j['matched']")" -eq "$nold" ] || fail "dry run matched != $nold: $(cat "$work/dry.json")"
    srun_t -n 2 --overcommit --mpi=pmix "$bin/pdm-purge" "$work/tree" --older-than 30d --json \
      > "$work/purge.json" || fail "srun pdm-purge exited $?"
    [ "$(json_get "$work/purge.json" "j['removed']")" -eq "$nold" ] || fail "removed != $nold: $(cat "$work/purge.json")"
    [ "$(json_get "$work/purge.json" "j['errors']")" -eq 0 ] || fail "errors: $(cat "$work/purge.json")"
    for f in $old; do [ ! -e "$f" ] || fail "old file $f survived"; done
    [ "$(find "$work/tree/a" "$work/tree/c" -type f | wc -l)" -eq 40 ] || fail "new files were removed"
    [ -L "$work/tree/a/outside" ] || fail "the symlink out of the tree was removed (only old files match)"
    [ -f /etc/hostname ] || fail "pdm-purge followed the symlink out of the tree"
    echo "ok: srun -n 2 pdm-purge removed the $nold old files, kept the new ones; dry run matched the same"
    ;;
  pdm-migrate)
    # Migration goes through the HSM coordinator: a pdmd job step first.
    cluster=$(mktemp -d /tmp/pdm-slurm-mig.XXXXXX)
    extra=()
    "$bin/pdmd" --help 2>/dev/null | grep -q -- '--archive' && extra=(--archive "posix:$cluster/archive")
    PDM_LAUNCHER=srun PDM_BUILD=$PDM_BINARY_DIR PDM_BACKING_SIZE=256M PDM_UP_TIMEOUT=60 \
      timeout 120 "$PDM_SOURCE_DIR/scripts/localcluster.sh" up 2 "$cluster" -- --heartbeat-timeout-ms 1000 "${extra[@]}" ||
      fail "pdmd step for the migration did not start"
    make_tree "$cluster/node0/tree" > /dev/null
    files=$(find "$cluster/node0/tree" -type f | sort)
    (cd "$cluster/node0/tree" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$work/before.sum"
    DMAPI_SOCKET=$cluster/state/node0.sock srun_t -n 2 --overcommit --mpi=pmix \
      "$bin/pdm-migrate" "$cluster/node0/tree" --progress 0 || fail "srun pdm-migrate exited $?"
    # Every regular file now carries pdm's HSM state (trusted.pdm.* xattrs)
    # and still reads back the same bytes.
    for f in $files; do
      getfattr -d -m '^trusted\.pdm\.' --absolute-names "$f" 2>/dev/null | grep -q trusted.pdm ||
        fail "$f has no trusted.pdm.* state after migration"
    done
    (cd "$cluster/node0/tree" && sha256sum --quiet -c "$work/before.sum") || fail "migrated files read back different data"
    echo "ok: srun -n 2 pdm-migrate migrated $(printf '%s\n' "$files" | wc -l) files; data unchanged"
    ;;
  *) fail "unknown tool $tool" ;;
esac
