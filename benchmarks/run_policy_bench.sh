#!/usr/bin/env bash
# Migrate of a policy-selected set against `cp` + `sync` of the same files
# (issue 6, "Benchmarks"), pdm and the baseline in one run:
#
#  (1) selection only: `pdm-migrate --dryrun --policy` (walk + policy engine)
#      vs `find -type f -size +SIZE` over the same mixed tree
#  (2) pdm-migrate --policy (walk, select, archive + release through the
#      coordinator) vs `find -size +SIZE` + `cp` of the selected files into a
#      directory of the archive's file system + `sync`
#  (3) pdm-recall -i of the migrated list (archive key order) vs `cp` of the
#      baseline copies back + sync — the way back, for scale
#
# The tree is mixed: BENCH_BIG files of BENCH_BIG_MIB MiB, BENCH_MID files of
# 1 MiB and BENCH_SMALL files of 4 KiB in 20 directories; the policy takes the
# files larger than 512 KiB (big + mid), so most entries are walked and
# judged but not moved. The cluster is 2 ranks (scripts/localcluster.sh: the
# tree is on a loop-mounted ext4 in BENCH_DIR, as fanotify pre-content needs;
# not tmpfs); the archive (posix:) and the baseline directory are on
# BENCH_DIR's file system. Each timed step starts cold (sync + drop_caches;
# "cached" when that is impossible). Ratios are pdm speed / baseline speed:
# > 1 means pdm is faster. Everything is removed at exit, on failure too.
#
#   benchmarks/run_policy_bench.sh [BUILD_DIR]
#   env: BENCH_DIR (default /tmp), BENCH_BIG (8), BENCH_BIG_MIB (32),
#        BENCH_MID (40), BENCH_SMALL (2000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
bin=$build/bin
for t in pdmd pdm-eventd pdm-migrate pdm-recall; do
  [ -x "$bin/$t" ] || { echo "run_policy_bench: no $bin/$t (build it first)" >&2; exit 2; }
done
export PDM_BUILD=$build
lc=$root/scripts/localcluster.sh
big=${BENCH_BIG:-8} big_mib=${BENCH_BIG_MIB:-32} mid=${BENCH_MID:-40} small=${BENCH_SMALL:-2000}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/pdm-policy-bench-XXXXXX")
gen=$(mktemp -d /dev/shm/pdm-policy-gen-XXXXXX)
cur=""

cleanup() {
  local rc=$?
  if [ -n "$cur" ]; then "$lc" down "$cur" >/dev/null 2>&1 || true; fi
  rm -rf --one-file-system "$work" "$gen" 2>/dev/null || true
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

log() { printf '[%6.1fs] %s\n' "$SECONDS" "$*" >&2; }
now() { date +%s.%N; }
cold=cold
drop() {
  sync
  if [ "$cold" = cold ]; then echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || cold=cached; fi
}
secs() {  # wall seconds of CMD (its output to $work/last.out)
  local t0 t1
  t0=$(now)
  "$@" > "$work/last.out" 2>&1 || { cat "$work/last.out" >&2; echo "run_policy_bench: failed: $*" >&2; return 1; }
  t1=$(now)
  python3 -c "print($t1 - $t0)"
}
on_node() { local k=$1; shift; DMAPI_SOCKET="$cur/state/node$k.sock" "$@"; }

# ---------------------------------------------------------------- the data
log "generating the tree in $gen: $big x $big_mib MiB, $mid x 1 MiB, $small x 4 KiB"
python3 - "$gen/tree" "$big" "$big_mib" "$mid" "$small" <<'PY'
import os, sys
root, big, big_mib, mid, small = sys.argv[1], *map(int, sys.argv[2:])
for d in range(20):
    os.makedirs(os.path.join(root, "d%02d" % d))
def put(path, n):
    with open(os.path.join(root, path), "wb") as f:
        while n > 0:
            k = min(n, 1 << 20)
            f.write(os.urandom(k))
            n -= k
for i in range(big):
    put("d%02d/big%03d.bin" % (i % 20, i), big_mib << 20)
for i in range(mid):
    put("d%02d/mid%03d.dat" % (i % 20, i), 1 << 20)
for i in range(small):
    put("d%02d/s%05d.txt" % (i % 20, i), 4096)
PY
sel_files=$((big + mid))
sel_bytes=$(( (big * big_mib + mid) << 20 ))
entries=$((1 + 20 + big + mid + small))
backing=$(( (2 * sel_bytes + (small * 8192)) / 1048576 + 256 ))

cur=$work/cluster
log "starting a 2-rank cluster (posix archive, ${backing} MiB ext4 backing)"
PDM_BACKING_SIZE=${backing}M "$lc" up 2 "$cur" -- --archive "posix:$cur/archive" > /dev/null
mkdir -p "$cur/baseline"
cp -r "$gen/tree" "$cur/node0/tree"
sync
tree1=$cur/node1/tree
cat > "$work/policy.toml" <<'TOML'
[[class]]
name = "large"
larger_than = "512K"

[[rule]]
name = "migrate_large"
action = "migrate"
class = "large"
TOML

# (1) selection only
drop
t_find=$(secs find "$tree1" -type f -size +512k)
n_find=$(wc -l < "$work/last.out")
drop
t_sel=$(secs on_node 1 "$bin/pdm-migrate" --dryrun --policy "$work/policy.toml" "$tree1")
n_sel=$(grep -c '^migrate ' "$work/last.out" || true)
if [ "$n_find" != "$sel_files" ] || [ "$n_sel" != "$sel_files" ]; then
  echo "run_policy_bench: selected $n_sel (find: $n_find), expected $sel_files" >&2
  exit 1
fi
# What the tool costs before it looks at a file (MPI_Init, the policy, an
# empty walk): on a small tree it is most of the selection time.
mkdir -p "$work/empty"
t_start=$(secs on_node 1 "$bin/pdm-migrate" --dryrun --policy "$work/policy.toml" "$work/empty")
log "selection: find ${t_find}s, pdm-migrate --dryrun ${t_sel}s ($sel_files of $entries entries; start-up ${t_start}s)"

# (2) migrate vs find + cp + sync of the same files
drop
# shellcheck disable=SC2016 # the inner shell expands them
t_cp=$(secs sh -c 'cd "$0" && find . -type f -size +512k -print0 | xargs -0 cp --parents -t "$1" && sync' \
  "$tree1" "$cur/baseline")
drop
t_mig=$(secs on_node 1 "$bin/pdm-migrate" --json --policy "$work/policy.toml" "$tree1")
python3 - "$work/last.out" "$sel_files" <<'PY'
import json, sys
j = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
want = int(sys.argv[2])
if j["files"] != want or j["ok"] != want or j["failed"] != 0:
    sys.exit(f"run_policy_bench: pdm-migrate sent {j['files']}, ok {j['ok']}, failed {j['failed']}; expected {want}")
PY
# Exactly the large files are released, the small ones untouched.
on_node 1 "$bin/pdm-state" --json "$tree1" > "$work/state.json"
python3 - "$work/state.json" "$sel_files" "$small" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
rel = [f for f in j["files"] if "released" in f["flags"]]
untouched = [f for f in j["files"] if not f["flags"]]
if len(rel) != int(sys.argv[2]) or any(f["file_size"] <= 512 * 1024 for f in rel) or len(untouched) != int(sys.argv[3]):
    sys.exit(f"run_policy_bench: {len(rel)} released, {len(untouched)} untouched: not the policy's set")
PY
log "migrate: find+cp+sync ${t_cp}s, pdm-migrate --policy ${t_mig}s"

# (3) the way back: recall of the migrated list (archive order) vs cp back
find "$tree1" -type f -size +512k > "$work/list.txt"  # st_size: released files keep it
drop
# shellcheck disable=SC2016
t_back=$(secs sh -c 'cd "$0" && cp -r . "$1" && sync' "$cur/baseline" "$cur/node0/back")
drop
t_rec=$(secs on_node 1 "$bin/pdm-recall" -i "$work/list.txt")
# Every byte back: the recalled tree equals the generated one.
diff -r -q "$gen/tree" "$cur/node0/tree" > /dev/null ||
  { echo "run_policy_bench: recalled data differs" >&2; exit 1; }
log "recall: cp back ${t_back}s, pdm-recall ${t_rec}s; data verified"

"$lc" down "$cur" > /dev/null
cur=""

python3 - "$sel_files" "$sel_bytes" "$entries" "$t_find" "$t_sel" "$t_cp" "$t_mig" "$t_back" "$t_rec" "$cold" "$t_start" <<'PY'
import sys
files, nbytes, entries = map(int, sys.argv[1:4])
tf, ts, tc, tm, tb, tr = map(float, sys.argv[4:10])
t0 = float(sys.argv[11])
mib = nbytes / 1048576
print(f"policy-selected set: {files} files, {mib:.0f} MiB, of {entries} entries (larger_than 512K); caches {sys.argv[10]}")
print(f"{'step':44} {'baseline':>12} {'pdm':>12} {'unit':>9} {'ratio':>7}")
def row(name, b, p, unit):
    print(f"{name:44} {b:12.1f} {p:12.1f} {unit:>9} {p / b:7.2f}")
row("select (find -size / migrate --dryrun)", entries / tf, entries / ts, "entries/s")
row("migrate (find+cp+sync / pdm-migrate)", mib / tc, mib / tm, "MiB/s")
row("recall back (cp+sync / pdm-recall -i)", mib / tb, mib / tr, "MiB/s")
print(f"pdm start-up (MPI_Init, policy, empty walk): {t0:.2f} s of the {ts:.2f} s selection; "
      f"without it {entries / max(ts - t0, 1e-6):.0f} entries/s")
print("ratio = pdm speed / baseline speed (> 1: pdm faster); pdm-migrate also frees the space, cp does not")
PY
