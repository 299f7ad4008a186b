#!/usr/bin/env bash
# Installs every Debian 12 package that pdm's build, tests, benchmarks and demo
# need. Idempotent: packages already present are skipped, and apt-get runs only
# when something is missing.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git python3
  clang libclang-rt-14-dev               # libFuzzer + sanitizers for the fuzz target
  libopenmpi-dev openmpi-bin             # bootstrap (mpirun / srun --mpi=pmix)
  libhdf5-openmpi-dev hdf5-tools python3-h5py  # HSM archive containers, catalogs (h5py: catalog tests)
  libibverbs-dev librdmacm-dev rdma-core ibverbs-utils ibverbs-providers  # verbs transport (always built)
  libflatbuffers-dev flatbuffers-compiler                 # wire format
  libsodium-dev                          # peer authentication (keyed BLAKE2b)
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev nlohmann-json3-dev libtomlplusplus-dev libxxhash-dev
  attr e2fsprogs util-linux procps psmisc
  slurm-wlm slurm-wlm-basic-plugins munge  # single-host Slurm for the slurm tests (slurm/localslurm.sh)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
