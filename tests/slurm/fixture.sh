#!/usr/bin/env bash
# ctest fixture for the slurm label: slurm.setup brings slurm/localslurm.sh
# up once (with the prolog/epilog examples wired in through small wrappers),
# slurm.cleanup takes it down after the last slurm test.
#
#   fixture.sh up|down   (PDM_SOURCE_DIR, PDM_BINARY_DIR, LOCALSLURM_DIR, LOCALSLURM_PORT set by ctest)
set -euo pipefail
: "${PDM_SOURCE_DIR:?}" "${PDM_BINARY_DIR:?}" "${LOCALSLURM_DIR:?}"
ls=$PDM_SOURCE_DIR/slurm/localslurm.sh
hooks=$LOCALSLURM_DIR.hooks

case "${1:-}" in
  up)
    # Not installed is a failure: issue 6 wants these tests on a real Slurm.
    for p in slurmctld slurmd srun munged; do
      command -v "$p" >/dev/null || { echo "FAIL: no $p (scripts/install-deps.sh installs slurm-wlm, munge)" >&2; exit 1; }
    done
    # A Prolog/Epilog runs with an almost empty environment, so each wrapper
    # names the settings file the examples read; pdm-recall is a recorder
    # (a real recall needs the HSM), pdm-purge the real tool when it is built.
    rm -rf "$hooks"
    mkdir -p "$hooks/bin" "$hooks/scratch"
    chmod 1777 "$hooks/scratch"
    cat > "$hooks/slurm.env" <<ENV
PDM_BIN=$hooks/bin
PDM_SCRATCH=$hooks/scratch
PDM_PROLOG_WAIT=yes
PDM_PROLOG_TIMEOUT=30
ENV
    cat > "$hooks/bin/pdm-recall" <<'REC'
#!/usr/bin/env bash
# Test stand-in: records the job's list as pdm-recall -i would get it.
set -euo pipefail
[ "$1" = -i ] || exit 2
cp -- "$2" "$(dirname "$0")/../recall.$SLURM_JOB_ID"
REC
    chmod +x "$hooks/bin/pdm-recall"
    [ -x "$PDM_BINARY_DIR/bin/pdm-purge" ] && ln -sf "$PDM_BINARY_DIR/bin/pdm-purge" "$hooks/bin/pdm-purge"
    for h in prolog epilog; do
      printf '#!/bin/sh\nPDM_SLURM_ENV=%s/slurm.env exec %s/slurm/%s.sh\n' "$hooks" "$PDM_SOURCE_DIR" "$h" > "$hooks/$h"
      chmod +x "$hooks/$h"
    done
    "$ls" down "$LOCALSLURM_DIR" >/dev/null 2>&1 || true
    LOCALSLURM_PROLOG=$hooks/prolog LOCALSLURM_EPILOG=$hooks/epilog LOCALSLURM_TIMEOUT=60 \
      timeout 180 "$ls" up "$LOCALSLURM_DIR"
    ;;
  down)
    timeout 120 "$ls" down "$LOCALSLURM_DIR"
    rm -rf "$hooks"
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
