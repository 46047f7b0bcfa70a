#!/usr/bin/env bash
# One command: install cvm_spark with the bench extra (DuckDB, scikit-learn, lifetimes,
# pandas, pyarrow), then run the benchmark. Arguments go to scripts/bench.py, e.g.
#   bash scripts/bench.sh --accounts 1000000
#   bash scripts/bench.sh --scaling 250000,1000000 --keep-data
# docs/performance.md explains the options and the output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh bench
. scripts/env.sh
exec "$PY" scripts/bench.py "$@"
