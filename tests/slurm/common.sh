# Sourced by the slurm test scripts: paths, the local Slurm's environment,
# bounded waits. Every wait here has a deadline so a test never hangs.
# shellcheck shell=bash
set -euo pipefail

: "${PDM_SOURCE_DIR:?}" "${PDM_BINARY_DIR:?}" "${LOCALSLURM_DIR:?}"
# shellcheck disable=SC2034 # used by the scripts that source this
bin=$PDM_BINARY_DIR/bin
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }  # ctest SKIP_RETURN_CODE

# The fixture (slurm.setup) must have brought Slurm up; a missing env file is
# a failure, not a skip: these tests exist to run on a real Slurm.
[ -f "$LOCALSLURM_DIR/env" ] || fail "no $LOCALSLURM_DIR/env: slurm.setup did not bring Slurm up"
# shellcheck source=/dev/null
. "$LOCALSLURM_DIR/env"
# MPI bootstrap traffic stays on the loopback interface (srun exports this
# environment to the tasks).
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo

# eventually SECONDS COMMAND...: true once COMMAND succeeds, false after SECONDS.
eventually() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@"; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# srun with a hard limit: Slurm's own (--time, minutes) and ours (timeout), so a
# wedged step fails the test instead of hanging it.
srun_t() { timeout --kill-after=10 120 srun --time=2 "$@"; }

json_get() {  # json_get FILE PYTHON-EXPR (j is the parsed document)
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
