#!/usr/bin/env bash
# The pdm demo: the parallel HSM on a 4-node cluster on this host.
#
# It generates a dataset (a few large files and many small ones) on the
# shared storage, migrates it to the archive with pdm-migrate through node 1
# (a progress line a second), shows the space freed (du of the backing store
# before and after), then reads every file back through node 2's view with
# plain sha256sum -c — each read of a released file is a DMAPI READ event
# that the HSM answers by recalling the data — and says whether every
# checksum verified. Installs what is missing, builds, prints a summary,
# stops the cluster and cleans up, even on failure. Exit 0 only when every
# step succeeded. The old failover demo is scripts/demo-failover.sh.
#
# Environment: PDM_DEMO_ARCHIVE=posix|hdf5 (back end, default posix),
# PDM_BUILD (build directory, default ./build), PDM_JOBS (build jobs,
# default 2), PDM_DEMO_SMALL (number of small files, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${PDM_BUILD:-$root/build}
export PDM_BUILD=$build  # localcluster.sh starts pdmd from here
backend=${PDM_DEMO_ARCHIVE:-posix}
small=${PDM_DEMO_SMALL:-600}
case "$backend" in
  posix | hdf5) ;;
  *) echo "demo: PDM_DEMO_ARCHIVE must be posix or hdf5, got '$backend'" >&2; exit 2 ;;
esac
[[ "$small" =~ ^[0-9]+$ ]] || { echo "demo: PDM_DEMO_SMALL must be a number" >&2; exit 2; }

./scripts/install-deps.sh >/dev/null
echo "== building ($build)"
cmake -S . -B "$build" -G Ninja >/dev/null
cmake --build "$build" -j"${PDM_JOBS:-2}" --target pdmd pdm-eventd pdm-migrate pdm-state >/dev/null

demo_t0=$(date +%s.%N)
dir=$(mktemp -d /tmp/pdm-demo-XXXXXX)
cleanup() {
  "$root/scripts/localcluster.sh" down "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
on_node() { local k=$1; shift; DMAPI_SOCKET="$dir/state/node$k.sock" "$@"; }
now() { date +%s.%N; }
calc() { python3 -c "print($*)"; }
human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }
blocks_used() { du -s --block-size=1 "$1" | cut -f1; }

echo
echo "== starting a 4-node cluster with the HSM ($backend archive) in $dir"
PDM_BACKING_SIZE=1G "$root/scripts/localcluster.sh" up 4 "$dir" -- --archive "$backend:$dir/archive"

echo
echo "== generating the dataset on node 0: 3 large files of 64 MiB and $small small ones (1-64 KiB)"
data0=$dir/node0/dataset
python3 - "$data0" "$small" <<'EOF'
import os, random, sys
root, small = sys.argv[1], int(sys.argv[2])
rng = random.Random(5)
os.makedirs(f"{root}/large")
for i in range(3):
    with open(f"{root}/large/big{i}.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
for i in range(small):
    d = f"{root}/small/d{i % 12:02d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/file{i:04d}.dat", "wb") as f:
        f.write(os.urandom(rng.randint(1, 64) << 10))
EOF
sync
(cd "$data0" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$dir/SHA256SUMS"
nfiles=$(wc -l < "$dir/SHA256SUMS")
nbytes=$(find "$data0" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
used_before=$(blocks_used "$dir/backing")
echo "$nfiles files, $(human "$nbytes"); checksums recorded in $dir/SHA256SUMS"
echo "du -sh of the backing store: $(du -sh "$dir/backing" | cut -f1)"

echo
echo "== pdm-migrate --progress 1 through node 1's view"
t0=$(now)
migrate_rc=0
on_node 1 "$build/bin/pdm-migrate" --progress 1 "$dir/node1/dataset" || migrate_rc=$?
t1=$(now)
sync
used_after=$(blocks_used "$dir/backing")
echo "du -sh of the backing store: $(du -sh "$dir/backing" | cut -f1) (was $(human "$used_before"));" \
  "the archive holds $(du -sh "$dir/archive" | cut -f1)"
ls -ls "$dir/node1/dataset/large" | sed 's/^/  /'

echo
echo "== pdm-state through node 3"
state_json=$(on_node 3 "$build/bin/pdm-state" --json --summary "$dir/node3/dataset") || true
on_node 3 "$build/bin/pdm-state" --summary "$dir/node3/dataset" || true
on_node 3 "$build/bin/pdm-state" "$dir/node3/dataset/large" || true
released=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["counts"]["released"])' "$state_json" 2>/dev/null ||
  echo 0)

echo
echo "== sha256sum -c through node 2's view (every read of a released file is recalled on the fly)"
t2=$(now)
sums_rc=0
(cd "$dir/node2/dataset" && sha256sum -c --quiet "$dir/SHA256SUMS") || sums_rc=$?
t3=$(now)
if [ "$sums_rc" -eq 0 ]; then
  verdict="all $nfiles checksums verified"
else
  verdict="CHECKSUM FAILURES (sha256sum exit $sums_rc)"
fi
echo "$verdict"
echo "du -sh of the backing store after the reads: $(du -sh "$dir/backing" | cut -f1)"
on_node 2 "$build/bin/pdm-state" --summary "$dir/node2/dataset" || true

mig_s=$(calc "$t1 - $t0")
rec_s=$(calc "$t3 - $t2")
freed=$((used_before > used_after ? used_before - used_after : 0))
echo
echo "== summary"
printf '  dataset:   %d files, %s (%s backend)\n' "$nfiles" "$(human "$nbytes")" "$backend"
printf '  migrate:   %.2f s, %s/s, %.0f files/s (pdm-migrate exit %d)\n' "$mig_s" \
  "$(human "$(calc "int($nbytes / max($mig_s, 1e-9))")")" "$(calc "$nfiles / max($mig_s, 1e-9)")" "$migrate_rc"
printf '  released:  %d of %d files; backing store %s -> %s (%s freed)\n' "$released" "$nfiles" \
  "$(human "$used_before")" "$(human "$used_after")" "$(human "$freed")"
printf '  recall:    %.2f s, %s/s through another node (sha256sum -c)\n' "$rec_s" \
  "$(human "$(calc "int($nbytes / max($rec_s, 1e-9))")")"
printf '  verified:  %s\n' "$verdict"
printf '  demo:      %.1f s from cluster start to here\n' "$(calc "$(now) - $demo_t0")"

status=0
[ "$migrate_rc" -eq 0 ] || { echo "demo: pdm-migrate failed (exit $migrate_rc)" >&2; status=1; }
[ "$released" -eq "$nfiles" ] || { echo "demo: only $released of $nfiles files were released" >&2; status=1; }
[ "$sums_rc" -eq 0 ] || { echo "demo: checksums did not verify" >&2; status=1; }
echo
if [ "$status" -eq 0 ]; then
  echo "== demo done: migrated, space freed, every byte read back right through another node"
else
  echo "== demo FAILED (pdmd log: kept in the output above; the cluster is being stopped)"
  tail -30 "$dir/state/pdmd.log" >&2 || true
fi
exit "$status"
