#!/usr/bin/env bash
# The test command: install vlm-pareto with its test extras (and Debian's chromium for the
# browser test when it is missing and we may install it), start the real services the
# postgres/slurm tests use (scripts/services.sh: PostgreSQL and a one-node SLURM cluster on
# loopback, installed with apt-get when missing and run as root), run the default test suite,
# and stop the services it started. Extra arguments go to pytest (e.g. `-m slow`, `-k report`).
# VLM_PARETO_SERVICES=0 skips the services (their tests are then skipped, and the run says so).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser test (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: chromium could not be installed; browser tests will be skipped"
fi
"$PY" -m pip install --quiet -c constraints.txt -e '.[test]'
if [ "${VLM_PARETO_SERVICES:-1}" != 0 ]; then
  # Stop afterwards only what this invocation started (services already up stay up).
  if ! bash scripts/services.sh status >/dev/null 2>&1; then
    trap 'bash scripts/services.sh stop' EXIT
  fi
  bash scripts/services.sh start || echo "warning: scripts/services.sh start failed; the postgres/slurm tests will be skipped (and listed at the end)"
  export VLM_PARETO_SERVICES_ENV
  VLM_PARETO_SERVICES_ENV=$(bash scripts/services.sh env)
fi
"$PY" -m pytest "$@"
