#!/usr/bin/env bash
# The main job: install vlm-pareto and run the default sweep (paper_table4 preset: FastVLM
# Tables 1 and 4 encoders with Vicuna-7B, measured on this machine), ending with the report
# in reports/paper_table4/index.html. Extra arguments go to `vlm-pareto sweep`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The report's PNG/SVG figures need a Chrome/Chromium for kaleido: install Debian's chromium
# when none is there and we may (root + apt-get), as scripts/test.sh does. Without one the
# report says in one line what to install and still writes index.html.
if [ -z "${BROWSER_PATH:-}" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the report's PNG/SVG figures (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: chromium could not be installed; the report will have no PNG/SVG figures"
fi
# constraints.txt pins torch to the local CPU build: without it pip may pick a newer torch
# and download several GB of CUDA packages.
"$PY" -m pip install --quiet -c constraints.txt -e .
exec "$PY" -m harness sweep "$@"
