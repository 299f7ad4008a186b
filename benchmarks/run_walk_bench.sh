#!/usr/bin/env bash
# pdm-walk items/s at 1, 2, 4 ranks against `find -printf` with the same
# fields, and pdm-purge files/s against `find -delete`, in one run; prints the
# ratios. The tree lives on tmpfs (/dev/shm) unless BENCH_DIR says otherwise,
# so the numbers measure the tools, not the disk.
#
#   benchmarks/run_walk_bench.sh [BUILD_DIR] [DIRS] [FILES_PER_DIR]
set -euo pipefail
build=${1:-build}
dirs=${2:-200}
per=${3:-500}
bin=$(cd "$build/bin" && pwd)
base=$(mktemp -d "${BENCH_DIR:-/dev/shm}/pdm_walk_bench_XXXXXX")
trap 'rm -rf "$base"' EXIT
mpirun="mpirun --allow-run-as-root --oversubscribe"

make_tree() {  # $1 root: $dirs dirs x $per files, in one python process (fast)
  /usr/bin/python3 - "$1" "$dirs" "$per" <<'PY'
import os, sys
root, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root)
for d in range(dirs):
    p = os.path.join(root, "d%d" % d)
    os.mkdir(p)
    for f in range(per):
        fd = os.open(os.path.join(p, "f%d" % f), os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
PY
}

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
rate() { echo "$1 / $2" | bc -l | xargs printf "%.0f"; }

tree=$base/tree
make_tree "$tree"
n=$(find "$tree" | wc -l)
echo "tree: $n entries ($dirs dirs x $per files) in $base"
find "$tree" -printf '' >/dev/null  # warm the dentry cache for everyone alike

# Same fields as a catalog row: path type size blocks uid gid mode a/m/c times.
t_find=$(secs find "$tree" -printf '%p %y %s %b %U %G %m %A@ %T@ %C@\n')
r_find=$(rate "$n" "$t_find")
echo "find -printf            : $r_find items/s"
for np in 1 2 4; do
  t=$(secs $mpirun -np $np "$bin/pdm-walk" --no-hsm -o "$base/scan$np.h5" "$tree")
  r=$(rate "$n" "$t")
  printf "pdm-walk -np %d -o h5    : %s items/s  (ratio to find: %.2f)\n" $np "$r" "$(echo "$r / $r_find" | bc -l)"
done
t=$(secs $mpirun -np 2 "$bin/pdm-walk" -o "$base/scanh.h5" "$tree")
printf "pdm-walk -np 2 with HSM state: %s items/s\n" "$(rate "$n" "$t")"

# Purge: two identical trees, all files removed.
make_tree "$base/p1"
make_tree "$base/p2"
files=$((dirs * per))
t_del=$(secs find "$base/p1" -type f -delete)
r_del=$(rate "$files" "$t_del")
echo "find -type f -delete    : $r_del files/s"
for np in 2 4; do
  [ -d "$base/p2" ] || make_tree "$base/p2"
  t=$(secs $mpirun -np $np "$bin/pdm-purge" --all --no-hsm "$base/p2")
  r=$(rate "$files" "$t")
  printf "pdm-purge -np %d         : %s files/s  (ratio to find -delete: %.2f)\n" $np "$r" "$(echo "$r / $r_del" | bc -l)"
  rm -rf "$base/p2"
done
