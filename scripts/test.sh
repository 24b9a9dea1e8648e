#!/usr/bin/env bash
# The test command: install vlm-pareto with its test extras (and Debian's chromium for the
# browser test when it is missing and we may install it), then run the default test suite.
# Extra arguments go to pytest (e.g. `-m slow`, `-k report`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser test (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: chromium could not be installed; browser tests will be skipped"
fi
"$PY" -m pip install --quiet -c constraints.txt -e '.[test]'
exec "$PY" -m pytest "$@"
