#!/usr/bin/env bash
# One command from a fresh clone: install with the test extras, lint, run the test suite.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k rfm
# --fast (first argument) runs the unit tier only: no pipeline run, cluster or Thrift server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. scripts/env.sh
"$PY" -m ruff check cvm_spark cvm_generate jobs tests scripts
if [[ "${1:-}" == "--fast" ]]; then
  # the unit tier: no pipeline run, no cluster, no Thrift server (docs/architecture.md)
  shift
  exec "$PY" -m pytest -m "not e2e and not cluster and not thrift" "$@"
fi
exec "$PY" -m pytest "$@"
