#!/usr/bin/env bash
# The whole pdm test suite, as CI runs it (.ci/run calls this).
#
#   1. installs missing packages (scripts/install-deps.sh)
#   2. builds release (build/), ASan+UBSan (build-asan/) and fuzz (build-fuzz/, clang)
#   3. runs: unit tests under ASan+UBSan; the libFuzzer target for
#      PDM_FUZZ_SECONDS (default 30); the MPI cluster tests (real mpirun,
#      real kill -9) and the verbs device tests (they skip, with the reason,
#      where no RDMA device exists) from the release build
#   4. prints one closing line: "total: N passed, N failed, N skipped"
#
# -Werror is on when CI=true (and off by default for local hacking).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/install-deps.sh

werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
jobs=${PDM_JOBS:-2}

echo "== build: release (build/)"
cmake -S . -B build -G Ninja -DPDM_WERROR=$werror >/dev/null
cmake --build build -j"$jobs"

echo "== build: ASan+UBSan unit tests (build-asan/)"
cmake -S . -B build-asan -G Ninja -DPDM_WERROR=$werror -DPDM_SANITIZE=ON -DPDM_BENCHMARKS=OFF \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs" --target pdm_unit_tests

echo "== build: libFuzzer target (build-fuzz/, clang)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DPDM_FUZZ=ON -DPDM_WERROR=$werror >/dev/null
cmake --build build-fuzz -j"$jobs"

passed=0 failed=0 skipped=0
tally() {  # parse ctest's summary from a log
  local log=$1 total fails skips
  total=$(grep -Eo 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  fails=$(grep -Eo '[0-9]+ tests failed out of' "$log" | grep -Eo '^[0-9]+' | tail -1)
  skips=$(grep -Ec '\*\*\*Skipped|Not Run' "$log" || true)
  total=${total:-0} fails=${fails:-0}
  passed=$((passed + total - fails - skips))
  failed=$((failed + fails))
  skipped=$((skipped + skips))
}

status=0
echo "== unit tests (ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L unit --output-on-failure -j"$jobs" --timeout 300 2>&1 | tee build/unit.log || status=1
tally build/unit.log

echo "== fuzz: wire decoders for ${PDM_FUZZ_SECONDS:-30}s"
corpus=build-fuzz/corpus
mkdir -p "$corpus"
build-fuzz/bin/fuzz_make_seeds "$corpus"
if build-fuzz/bin/fuzz_wire -max_total_time="${PDM_FUZZ_SECONDS:-30}" -timeout=10 -rss_limit_mb=2048 \
     "$corpus" > build/fuzz.log 2>&1; then
  echo "fuzz: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' build/fuzz.log | tail -1), no crash"
  passed=$((passed + 1))
else
  tail -40 build/fuzz.log
  echo "fuzz: FAILED (crash input saved in $root)"
  failed=$((failed + 1)); status=1
fi

echo "== MPI cluster tests and verbs device tests (release build)"
ctest --test-dir build -L 'mpi|verbs|slurm' --output-on-failure --timeout 300 2>&1 | tee build/mpi.log || status=1
tally build/mpi.log

echo "total: $passed passed, $failed failed, $skipped skipped"
exit $status
