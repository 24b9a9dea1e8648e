#!/usr/bin/env bash
# The main job: install vlm-pareto and run the default sweep (paper_table4 preset: FastVLM
# Tables 1 and 4 encoders with Vicuna-7B, measured on this machine), ending with the report
# in reports/paper_table4/index.html. Extra arguments go to `vlm-pareto sweep`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# constraints.txt pins torch to the local CPU build: without it pip may pick a newer torch
# and download several GB of CUDA packages.
"$PY" -m pip install --quiet -c constraints.txt -e .
exec "$PY" -m harness sweep "$@"
