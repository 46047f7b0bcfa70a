#!/usr/bin/env bash
# One command from a fresh clone: install with the test extras, lint, run the test suite.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k rfm
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
PY=${PYTHON:-python3}
"$PY" -m ruff check cvm_spark jobs tests scripts
exec "$PY" -m pytest "$@"
